"""NViT latency-aware global structural pruning against a latency table or the latency service.

Public API: `Pruner` (gates, Hessian importance, latency-aware steps), `compact`, `save_compact` / `load_compact`,
`export_model_onnx` / `onnx_logits`, `from_timm`, and the training objectives in `pruner.objectives`.
"""

from pruner.checkpoint import load_compact, save_compact
from pruner.compaction import compact
from pruner.gates import Gates, gate_gradients
from pruner.latency_pruner import Pruner, PruneStep
from pruner.onnx_model import export_model_onnx, onnx_logits
from pruner.timm_import import from_timm

__all__ = [
    "Gates",
    "PruneStep",
    "Pruner",
    "compact",
    "export_model_onnx",
    "from_timm",
    "gate_gradients",
    "load_compact",
    "onnx_logits",
    "save_compact",
]
