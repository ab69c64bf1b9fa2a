"""Topology-free resume worker: train on one mesh, restore onto another.

  python -m tests.numerics.topo_worker DEVICES MODE MESH CKPT OUT
MODE: save (2 steps, checkpoint at step 2) | resume (restore, 2 more steps) |
straight (4 steps). MESH: "fsdp=8", "fsdp=2,tensor=2", "1" (one device).
Writes {"losses": [...]} for the steps it ran (process 0).
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
from pragjax.train import Checkpointer, init_train_state, make_train_step, state_shardings  # noqa: E402
from pragjax.train.distributed import initialize_from_env  # noqa: E402


def batches():
  rng = np.random.RandomState(0)
  for _ in range(4):
    ids = rng.randint(3, 64, (8, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    yield {"input_ids": ids, "attention_mask": mask, "loss_mask": mask}


def main():
  _, _, mode, mesh_spec, ckpt, out = sys.argv
  initialize_from_env()
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  tx = make_optimizer({"name": "adamw", "lr": 1e-2})
  graphdef, state = init_train_state(Decoder(cfg, rngs=nnx.Rngs(0)), tx, seed=1)
  loss_fn = make_sft_loss_fn(graphdef)
  if mesh_spec == "1":
    step, to_dev = make_train_step(loss_fn, tx), (lambda b: b)
  else:
    mesh = sharding.make_mesh(**{k: int(v) for k, v in (kv.split("=") for kv in mesh_spec.split(","))})
    jax.set_mesh(mesh)
    sh, bsh = state_shardings(state, mesh), sharding.batch_sharding(mesh)
    state = jax.device_put(state, sh)
    step = make_train_step(loss_fn, tx, state_shardings=sh, batch_shardings=bsh)
    n, i = jax.process_count(), jax.process_index()

    def to_dev(b):
      rows = 8 // n
      return {k: jax.make_array_from_process_local_data(bsh, v[i * rows:(i + 1) * rows]) for k, v in b.items()}
  all_batches = list(batches())
  ckptr = Checkpointer(ckpt, interval=1, async_save=False)
  if mode == "save":
    todo = all_batches[:2]
  elif mode == "resume":
    state, _ = ckptr.restore(state)
    assert int(state.step) == 2
    todo = all_batches[2:]
  else:
    todo = all_batches
  losses = []
  for b in todo:
    state, m = step(state, to_dev(b))
    losses.append(float(m["loss"]))
  if mode == "save":
    ckptr.save(2, state, {}, force=True)
  ckptr.close()
  if jax.process_index() == 0:
    with open(out, "w") as f:
      json.dump({"losses": losses}, f)


if __name__ == "__main__":
  main()
