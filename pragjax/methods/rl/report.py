"""Learning curves of RL runs: held-out accuracy and rollout reward against optimizer steps, from `metrics.jsonl`."""

from __future__ import annotations

import json
from typing import Mapping

from pragjax import paths
from pragjax.train.metrics import read_metrics

__all__ = ["curves", "plot_runs"]


def curves(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """`{"eval/accuracy": [(step, value)], "rollout/reward": [...], "response_length": [...]}` of one run; the held-out
  accuracy before training (WORKDIR/report.json `before`) is step 0."""
  out: dict[str, list[tuple[int, float]]] = {"eval/accuracy": [], "rollout/reward": [], "response_length": []}
  report = paths.join(workdir, "report.json")
  if paths.resolve(report).exists():
    before = json.loads(paths.read_text(report)).get("before")
    if before:
      out["eval/accuracy"].append((0, float(before["accuracy"])))
  for row in read_metrics(workdir):
    for key in out:
      if key in row:
        out[key].append((int(row["step"]), float(row[key])))
  return out


def plot_runs(runs: Mapping[str, str], path: str, *, title: str = "") -> str:
  """One PNG with three panels (held-out greedy accuracy, rollout reward, response length per step) for the runs
  `{label: workdir}`; returns `path`."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = (("eval/accuracy", "held-out greedy accuracy"), ("rollout/reward", "rollout mean reward"),
            ("response_length", "response length (tokens)"))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for label, workdir in runs.items():
    c = curves(workdir)
    for ax, (key, _) in zip(axes, panels):
      if c[key]:
        steps, values = zip(*c[key])
        ax.plot(steps, values, marker="o" if key == "eval/accuracy" else None, ms=3, label=label)
  for ax, (_, name) in zip(axes, panels):
    ax.set_xlabel("optimizer step")
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)  # local or object store, written atomically
  plt.close(fig)
  return path
