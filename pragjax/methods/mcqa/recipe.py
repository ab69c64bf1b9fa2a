"""Multiple-choice and pairwise evaluation by option likelihood (sum, mean, PMI, letter).

The run behind `python -m experiments.mcqa` (usage, variants and outputs: its docstring and
`experiments/configs/mcqa.py`).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data.jsonl import write_json
from pragjax.eval import mcqa
from pragjax.train import runner


def _split(value: str) -> list[str]:
  return [x.strip() for x in str(value).split(",") if x.strip()]


def bigbench_dir(config) -> str:
  if config.bigbench_dir:
    return config.bigbench_dir
  return os.path.join(paths.shared_data_dir(), "bigbench")


def task_paths(config) -> list[str]:
  """`config.tasks` as paths: each entry as given if it exists, else under `bigbench_dir`; "" = every task there."""
  root = bigbench_dir(config)
  names = _split(config.tasks)
  if not names:
    if not os.path.isdir(root):
      raise FileNotFoundError(f"config.tasks is empty and the BIG-bench directory {root} does not exist; pass "
                              f"--config.tasks=... or --config.bigbench_dir=...")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  paths = []
  for name in names:
    path = name if os.path.exists(name) else os.path.join(root, name)
    if not os.path.exists(path):
      available = sorted(os.listdir(root)) if os.path.isdir(root) else []
      raise FileNotFoundError(f"task {name!r}: neither a path nor a task under {root} (available: {available})")
    paths.append(path)
  return paths


def load_records(config) -> list[mcqa.Record]:
  records = []
  for path in task_paths(config):
    records.extend(mcqa.load_task(path))
  records = mcqa.subsample(records, int(config.max_examples), seed=config.seed)
  if config.shuffle_options:
    records = mcqa.permute_options(records, config.seed)
  return records


def run(config, workdir: str, log=print) -> dict:
  workdir = runner.prepare_workdir(workdir)
  modes = _split(config.modes)
  records = load_records(config)
  tasks = list(dict.fromkeys(r.task for r in records))
  log(f"{len(records)} records in {len(tasks)} tasks: {', '.join(tasks)}")
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  with jax.set_mesh(mesh):
    loaded = runner.load_model(dict(config.model), mesh)
    t0 = time.time()
    scores = mcqa.score_records(
        loaded.model, loaded.tokenizer, records, modes=modes, neutral_prompt=config.neutral_prompt,
        letter_cue=config.letter_cue, letter_format=config.letter_format, chat_template=config.chat_template,
        separator=config.separator, max_length=int(config.max_length), batch_size=int(config.batch_size),
        mesh=mesh, padding_side=config.padding_side, progress=config.progress)
  log(f"model {loaded.path}: scored in {time.time() - t0:.0f}s")
  summary = mcqa.summarize(records, scores)
  out = {"config": config.to_dict(), "model": loaded.path, "modes": modes, **summary,
         "table": mcqa.format_table(summary, modes)}
  if config.save_examples:
    out["examples"] = mcqa.examples_table(records, scores)
  write_json(os.path.join(workdir, "results.json"), out, indent=1, default=_json_default)
  if config.get("plot", True) and jax.process_index() == 0:
    out["plot"] = mcqa.plot_summary(summary, modes, os.path.join(workdir, "mcqa.png"),
                                    title=f"{os.path.basename(loaded.path)}: accuracy per task")
  return out


def _json_default(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  return str(x)


def print_report(out: dict) -> None:
  print(f"\n## {out['model']}: accuracy [95% Wilson CI] per scoring mode\n")
  print(out["table"])
