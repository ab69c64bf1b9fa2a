"""Runs the priming protocol (`experiments.priming.run`) on a 4 (fsdp) x 2 (tensor) mesh and writes its scores.

Used by test_real.py with 2 processes x 4 simulated devices on localhost
(PRAGJAX_COORDINATOR / PRAGJAX_NUM_PROCESSES / PRAGJAX_PROCESS_ID).
Usage: python -m tests.priming.mp_worker DEVICES_PER_PROCESS CONFIG_JSON WORKDIR OUT_JSON
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from pragjax import sharding  # noqa: E402
from pragjax.methods.priming import recipe as priming  # noqa: E402
from pragjax.train.distributed import initialize_from_env  # noqa: E402


def main():
  initialize_from_env()
  config = ConfigDict(json.load(open(sys.argv[2])))
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  report = priming.run(config, sys.argv[3], log=lambda *_: None, mesh=mesh)
  if jax.process_index() == 0:
    keep = {"devices": jax.device_count(), "processes": jax.process_count(), "log10_prior": report["log10_prior"],
            "variants": {name: {k: v[k] for k in ("log10_priming", "log10_memorization")}
                         for name, v in report["variants"].items()}}
    with open(sys.argv[4], "w") as f:
      json.dump(keep, f)


if __name__ == "__main__":
  main()
