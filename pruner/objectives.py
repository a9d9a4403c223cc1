"""Training objectives for pruning and finetuning (NViT §3.3, Eq. 8–9).

`L = α·L_full + L_CNN`: L_CNN supervises the class-token logits with the true labels and the distillation-token
logits with a CNN teacher's hard labels (DeiT's hard distillation); L_full distils both tokens' logits from the
unpruned model with a temperature τ. Without a distillation token, only the class token takes part.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

Logits = tuple[Tensor, Tensor | None]
"""(class-token logits, distillation-token logits or None), as VisionTransformer.forward_both returns them."""


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


def cnn_hard_distillation(student: Logits, labels: Tensor, teacher_labels: Tensor) -> Tensor:
    """Eq. 8: CE(class token, Y) + CE(distillation token, Y_CNN); Y_CNN = argmax of the CNN teacher's logits."""
    cls_logits, dist_logits = student
    if dist_logits is None:
        raise ValueError("CNN hard distillation needs a model with a distillation token (VitConfig(distilled=True))")
    return F.cross_entropy(cls_logits, labels) + F.cross_entropy(dist_logits, teacher_labels)


def kl_distillation(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """KL(Ψ(z_t/τ) ‖ Ψ(z_s/τ)) averaged over the batch; the teacher's logits get no gradient."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return F.kl_div(
        F.log_softmax(student / tau, dim=-1),
        F.log_softmax(teacher.detach() / tau, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def full_model_distillation(student: Logits, teacher: Logits, tau: float = 1.0) -> Tensor:
    """Eq. 9: KL on the class-token logits plus KL on the distillation-token logits (where both models have one)."""
    loss = kl_distillation(student[0], teacher[0], tau)
    if student[1] is not None and teacher[1] is not None:
        loss = loss + kl_distillation(student[1], teacher[1], tau)
    return loss


def nvit_objective(
    student: Logits,
    labels: Tensor,
    teacher: Logits | None = None,
    cnn_labels: Tensor | None = None,
    alpha: float = 1.0,
    tau: float = 1.0,
) -> Tensor:
    """α·L_full + L_CNN; L_CNN falls back to plain cross-entropy without CNN labels, L_full to 0 without a teacher."""
    loss = (
        cnn_hard_distillation(student, labels, cnn_labels)
        if cnn_labels is not None
        else cross_entropy(student[0], labels)
    )
    if teacher is not None and alpha:
        loss = loss + alpha * full_model_distillation(student, teacher, tau)
    return loss
