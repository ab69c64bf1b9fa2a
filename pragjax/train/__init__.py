"""Train state, the one train step, the loop, checkpoints, metrics."""

from pragjax.train.checkpoint import Checkpointer
from pragjax.train.loop import LoopResult, NonFiniteLossError, run
from pragjax.train.metrics import MetricWriter, read_metrics
from pragjax.train.state import TrainState, init_train_state, state_shardings
from pragjax.train.step import make_train_step

__all__ = [
    "Checkpointer", "LoopResult", "MetricWriter", "NonFiniteLossError", "TrainState",
    "init_train_state", "make_train_step", "read_metrics", "run", "state_shardings",
]
