"""Runs 3 SAMI train steps through the group iterator and writes the losses and the groups this process read.

Used by test_distributed.py in two topologies: 1 device, and 2 processes x 4
devices on localhost (each process writes OUT_JSON.<process index>).
Usage: python -m tests.sami.dist_worker DEVICES_PER_PROCESS OUT_JSON
"""

import functools
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
from pragjax.data.groups import GroupIterator  # noqa: E402
from pragjax.methods.sami import batches  # noqa: E402
from pragjax.methods.sami.training import make_sami_loss_fn  # noqa: E402
from pragjax.models import Decoder, ModelConfig  # noqa: E402
from pragjax.optim import make_optimizer  # noqa: E402
from pragjax.train import init_train_state, make_train_step, state_shardings  # noqa: E402
from pragjax.train.distributed import initialize_from_env  # noqa: E402

NUM_EXAMPLES, C, BATCH, STEPS = 10, 2, 4, 3


def examples():
  """10 queries x C=2 constitutions of random prompts (3-6 tokens) and responses (2-7 tokens)."""
  rng = np.random.RandomState(0)
  out = []
  for _ in range(NUM_EXAMPLES):
    prompts = [rng.randint(3, 64, rng.randint(3, 7)).tolist() for _ in range(C)]
    responses = [rng.randint(3, 64, rng.randint(2, 8)).tolist() for _ in range(C)]
    out.append(batches.make_example(prompts, responses, max_length=16))
  return out


def main():
  initialize_from_env()
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  tx = make_optimizer({"name": "adamw", "lr": 1e-2, "clip_norm": 1.0})
  graphdef, state = init_train_state(model, tx, seed=1)
  data = GroupIterator(examples(), functools.partial(batches.group_sequences, num_slots=C), global_batch_size=BATCH,
                       group_size=C * C, seed=3, shuffle=True)  # process index and count from JAX
  loss_fn = make_sami_loss_fn(graphdef)
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
    to_dev = lambda b: {k: jax.make_array_from_process_local_data(bsh, v) for k, v in b.items()}  # noqa: E731
  losses, read = [], []
  for _ in range(STEPS):
    batch = next(data)
    read.append({"input_ids": batch["input_ids"].tolist(), "slot_mask": batch["slot_mask"].tolist()})
    state, metrics = step(state, to_dev(batch))
    losses.append(float(metrics["loss"]))
  with open(f"{sys.argv[2]}.{jax.process_index()}", "w") as f:
    json.dump({"losses": losses, "read": read, "devices": jax.device_count(), "processes": jax.process_count()}, f)


if __name__ == "__main__":
  main()
