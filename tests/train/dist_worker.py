"""Runs 3 SFT train steps on a fixed global batch and prints the losses.

Used by test_distributed.py in three topologies: 1 device, 8 simulated
devices in one process, 2 processes x 4 devices on localhost.
Usage: python -m tests.train.dist_worker DEVICES_PER_PROCESS OUT_JSON
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from pragjax import sharding  # noqa: E402
from pragjax.methods.sft.loss import make_sft_loss_fn  # noqa: E402
from pragjax.models import Decoder, ModelConfig  # noqa: E402
from pragjax.optim import make_optimizer  # noqa: E402
from pragjax.train import init_train_state, make_train_step, state_shardings  # noqa: E402
from pragjax.train.distributed import initialize_from_env  # noqa: E402


def main():
  initialize_from_env()
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  tx = make_optimizer({"name": "adamw", "lr": 1e-2, "clip_norm": 1.0})
  graphdef, state = init_train_state(model, tx, seed=1)
  rng = np.random.RandomState(0)
  ids = rng.randint(3, 64, (8, 16)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::3, 12:] = 0
  batch = {"input_ids": ids * mask, "attention_mask": mask, "loss_mask": mask}
  loss_fn = make_sft_loss_fn(graphdef)
  if jax.device_count() == 1:
    step = make_train_step(loss_fn, tx)
    to_dev = lambda b: b  # noqa: E731
  else:
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    jax.set_mesh(mesh)
    sh = state_shardings(state, mesh)
    bsh = sharding.batch_sharding(mesh)
    state = jax.device_put(state, sh)
    step = make_train_step(loss_fn, tx, state_shardings=sh, batch_shardings=bsh)
    n, i = jax.process_count(), jax.process_index()
    rows = len(ids) // n

    def to_dev(b):
      local = {k: v[i * rows:(i + 1) * rows] for k, v in b.items()}
      return {k: jax.make_array_from_process_local_data(bsh, v) for k, v in local.items()}
  losses = []
  for _ in range(3):
    state, metrics = step(state, to_dev(batch))
    losses.append(float(metrics["loss"]))
  if jax.process_index() == 0:
    with open(sys.argv[2], "w") as f:
      json.dump({"losses": losses, "devices": jax.device_count(), "processes": jax.process_count()}, f)


if __name__ == "__main__":
  main()
