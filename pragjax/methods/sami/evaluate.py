"""Per-iteration SAMI evaluation: win rate over the base model, lengths, the toy world's adherence; table and plot.

`make_evaluate(judge, ...)` returns the `evaluate(iteration, groups,
base_groups)` callback of `pragjax.methods.sami.iterate.run_iterations`: on held-out
queries it compares the response of iteration K's model under the
all-positive constitution (slot 0 of each group) with the base model's
response to the same prompt, by `judge`, A/B order randomised, ties 0.5
(`pragjax.eval.win_rate`). `world_metrics(groups)` adds world-specific numbers
(the toy world's adherence by sign and principle, word counts).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pragjax import paths
from pragjax.eval import win_rate as win_rate_lib
from pragjax.eval.judges import Judge
from pragjax.eval.tables import markdown_table


def make_evaluate(judge: Judge, *, seed: int, line_format: str = "{i}. {text}",
                  meta_fn: Callable | None = None, world_metrics: Callable | None = None) -> Callable:
  """The evaluate callback (module docstring). `meta_fn(group)` -> judge `meta` (e.g. toy items and rules)."""

  def evaluate(iteration: int, groups: Sequence, base_groups: Sequence) -> dict:
    out = {}
    if world_metrics is not None:
      out.update(world_metrics(groups))
    if iteration == 0:
      out.update(win_rate=0.5, win_rate_ci95=float("nan"), wins=0, ties=len(groups), losses=0)
      return out
    for g, b in zip(groups, base_groups):
      if g.query != b.query or g.constitutions[0] != b.constitutions[0]:
        raise ValueError("held-out groups of this iteration and of the base model differ; delete the workdir's "
                         "iter_*/heldout.json files of an older configuration")
    wr = win_rate_lib.win_rate(
        judge, [g.query for g in groups], [g.constitutions[0].text(line_format) for g in groups],
        [g.responses[0].text for g in groups], [b.responses[0].text for b in base_groups],
        seed=seed * 7919 + iteration, meta=None if meta_fn is None else [meta_fn(g) for g in groups])
    out.update(win_rate=wr.win_rate, win_rate_ci95=wr.ci95, wins=wr.wins, ties=wr.ties, losses=wr.losses,
               candidate_first=wr.candidate_first)
    return out

  return evaluate


TABLE_COLUMNS = (
    ("iteration", "iteration", "{:d}"),
    ("win_rate", "win rate vs base", "{:.3f}"),
    ("win_rate_ci95", "+- 95%", "{:.3f}"),
    ("mi_bound", "held-out MI bound (nats)", "{:.4f}"),
    ("mean_tokens_positive", "mean tokens (positive)", "{:.1f}"),
    ("adherence_positive", "adherence (positive)", "{:.3f}"),
    ("adherence_negated", "adherence (antitheses)", "{:.3f}"),
    ("mean_words_positive", "mean words (positive)", "{:.2f}"),
    ("val_win_rate", "val win rate", "{:.3f}"),
    ("val_mi_bound", "val MI bound", "{:.4f}"),
    ("train_groups_kept", "train groups kept", "{:d}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("seconds", "seconds", "{:.0f}"),
)


def format_table(rows: Sequence[dict]) -> str:
  """One line per iteration, the columns of `TABLE_COLUMNS` that some row has; absent, None or NaN cells are "-"."""
  cols = [c for c in TABLE_COLUMNS if any(c[0] in r for r in rows)]

  def cell(fmt):
    return lambda v: "-" if isinstance(v, float) and v != v else fmt.format(v)

  return markdown_table(rows, {key: head for key, head, _ in cols}, formats={key: cell(fmt) for key, _, fmt in cols})


def plot(rows: Sequence[dict], path: str, title: str = "SAMI") -> str:
  """Win rate, held-out MI bound and mean response length per iteration, as a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  it = [r["iteration"] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  wr = np.asarray([r.get("win_rate", np.nan) for r in rows], float)
  ci = np.asarray([r.get("win_rate_ci95", np.nan) for r in rows], float)
  axes[0].errorbar(it, wr, yerr=np.nan_to_num(ci), marker="o", capsize=3)
  axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
  axes[0].set(title="win rate vs base (held-out)", xlabel="iteration", ylim=(0, 1))
  mi = np.asarray([r["mi_bound"] for r in rows], float)
  axes[1].errorbar(it, mi, yerr=np.nan_to_num([r.get("mi_bound_ci95", 0.0) for r in rows]), marker="o", capsize=3)
  if rows and "log_C" in rows[0]:
    axes[1].axhline(rows[0]["log_C"], color="grey", lw=0.8, ls="--", label="log C")
    axes[1].legend(loc="lower right")
  axes[1].set(title="held-out MI lower bound (nats)", xlabel="iteration")
  axes[2].plot(it, [r["mean_tokens_positive"] for r in rows], marker="o")
  axes[2].set(title="mean response tokens (positive constitution)", xlabel="iteration")
  for ax in axes:
    ax.set_xticks(it)
  fig.suptitle(title)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path
