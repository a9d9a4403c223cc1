"""`python -m pruner finetune`: continue training a compacted snapshot on ImageFolder data.

The objective is NViT's Eq. 8–9 as in `prune`: cross-entropy plus, with `teacher` (the unpruned model: a
`save_compact` directory or a timm name with its trained weights), KL distillation of its logits. The result is
saved with `save_compact`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from lut_server.atomic_file import write_json_atomic
from pruner.checkpoint import load_compact, save_compact
from pruner.image_folder import ImageFolderSplit, epoch_batches, iterations_per_epoch
from pruner.model_source import build_model
from pruner.objectives import nvit_objective


@torch.no_grad()
def _accuracy(model, split: ImageFolderSplit, device: torch.device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(split), 64):
        x, y = split.batch(list(range(start, min(start + 64, len(split)))))
        correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
    return 100.0 * correct / len(split)


def run_finetune(
    snapshot: Path,
    data: Path,
    out: Path,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-4,
    teacher: str | Path | None = None,
    amp: str = "none",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_compact(snapshot).to(device).train()
    size = model.config.image_size
    channels = model.config.in_chans
    train = ImageFolderSplit(data / "train", size, channels)
    val = ImageFolderSplit(data / "val", size, channels, classes=train.classes)
    teacher_model = None
    if teacher:
        cfg = model.config
        teacher_model = build_model(str(teacher), len(train.classes), cfg.image_size, cfg.patch_size, cfg.in_chans)
        teacher_model = teacher_model.to(device).eval()
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    before = _accuracy(model, val, device)
    model.train()
    per_epoch = iterations_per_epoch(len(train), batch_size)
    with tqdm(total=epochs * per_epoch, disable=not progress, unit="it") as bar:
        for epoch in range(epochs):
            for _, indices in epoch_batches(len(train), batch_size, seed, epoch):
                x, y = (t.to(device) for t in train.batch(indices))
                ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                with ctx:
                    with torch.no_grad():
                        teacher_logits = teacher_model.forward_both(x) if teacher_model is not None else None
                    loss = nvit_objective(model.forward_both(x), y, teacher_logits)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                bar.update(1)
    after = _accuracy(model, val, device)
    save_compact(model.eval(), out)
    report = {"snapshot": str(snapshot), "epochs": epochs, "accuracy_before": before, "accuracy_after": after}
    write_json_atomic(out / "finetune.json", report)
    return report
