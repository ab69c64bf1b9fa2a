"""Train state, the one train step, the loop, checkpoints, metrics, the workdir and the config checks."""

from pragjax.train.checkpoint import Checkpointer, CheckpointRestoreError
from pragjax.train.checks import ConfigError, check_config
from pragjax.train.loop import LoopResult, NonFiniteLossError, ResumeError, TrainingInterrupted, run
from pragjax.train.metrics import MetricWriter, read_metrics
from pragjax.train.state import TrainState, init_train_state, state_shardings
from pragjax.train.step import make_train_step
from pragjax.train.workdir import WorkdirLockedError

__all__ = [
    "CheckpointRestoreError", "Checkpointer", "ConfigError", "LoopResult", "MetricWriter", "NonFiniteLossError",
    "ResumeError", "TrainState", "TrainingInterrupted", "WorkdirLockedError", "check_config", "init_train_state",
    "make_train_step", "read_metrics", "run", "state_shardings",
]
