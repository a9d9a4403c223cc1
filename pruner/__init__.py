"""NViT latency-aware global structural pruning against a latency table or the latency service.

Public API: `Pruner` (gates, Hessian importance, latency-aware steps), `compact`, `save_compact` / `load_compact`,
`export_onnx`, `from_timm`, and the training objectives in `pruner.objectives`.
"""

from pruner.compaction import compact
from pruner.gates import Gates, gate_gradients
from pruner.latency_pruner import Pruner, PruneStep

__all__ = ["Gates", "PruneStep", "Pruner", "compact", "gate_gradients"]
