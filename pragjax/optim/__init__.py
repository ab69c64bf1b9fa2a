"""Optimizer factory and update transforms."""

from pragjax.optim.factory import make_optimizer, make_schedule, param_labels, path_parts, path_str
from pragjax.optim.ignore_topk import ignore_topk, num_pruned, prune_delta, prune_topk, topk_masks

__all__ = [
    "ignore_topk", "make_optimizer", "make_schedule", "num_pruned", "param_labels", "path_parts", "path_str",
    "prune_delta", "prune_topk", "topk_masks",
]
