"""Optimizer factory and update transforms."""

from pragjax.optim.factory import make_optimizer, make_schedule, param_labels, path_parts, path_str

__all__ = ["make_optimizer", "make_schedule", "param_labels", "path_parts", "path_str"]
