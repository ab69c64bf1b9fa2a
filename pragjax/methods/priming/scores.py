"""Priming and memorization scores (Sun et al., 2025), and the prior-vs-priming analysis.

A keyword's probability in a context is the product of the probabilities of
its tokens, `P(key | X) = prod_i p(k_i | X, k_<i)`, where the keyword is the
continuation `" " + key` of `X` (byte-level BPE never merges across the
space, so the context's tokens are a prefix of the whole text's). One forward
pass scores every token of a batch of (context, keyword) pairs with the lean
log-prob path (`pragjax.models.logprobs`), so `[B, T, V]` logits are never
materialised; the keyword's log-probability is the sum over its tokens.

Scores, for a keyword learnt from one sample:
- priming: `mean_t P_after(key | X_t) / P_before(key | X_t)` over the
  thematic prompts `X_t` of the keyword's theme;
- memorization: `P_after(key | X_c) / P_before(key | X_c)` with `X_c` the
  sample's own text up to the keyword.
Both are returned as log10 (computed in log space: the ratios of keywords a
model has never seen reach 1e20 and more) and as ratios, for the whole keyword
and for its first token (`keyword_scores_fn`).

A variant's effect: the cut of the median score on the ratio scale (the
paper's, `ratio_cut`) and in log space (`log_cut`), and its selectivity, the
priming cut minus the memorization cut with a paired bootstrap CI over
samples (`selectivity`).

Predictor analysis: the Spearman correlation between the keyword's log
probability in its own context before learning (its prior) and the log
priming score, the share of samples whose priming exceeds a threshold on each
side of a prior of 1e-3, and a scatter plot.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax import paths
from pragjax.eval import batching
from pragjax.models.logprobs import batch_token_logprobs

LN10 = math.log(10.0)


def keyword_batch(tokenizer, contexts: Sequence[str], keywords: Sequence[str], *, pad_to_multiple_of: int = 16,
                  max_length: int = 0) -> dict[str, np.ndarray]:
  """Token ids of `context + " " + keyword` and a mask of the keyword's tokens.

  Returns `input_ids`, `attention_mask`, `keyword_mask`, `first_mask`, each
  `[N, T]` int32 (right padded; `keyword_mask[n, t] = 1` where token t
  belongs to the keyword, `first_mask` the same for its first token only).
  ValueError if the context's tokens are not a prefix of the whole text's, if
  a keyword has no token, or if a text exceeds `max_length` (0 = no limit).
  """
  if len(contexts) != len(keywords):
    raise ValueError(f"{len(contexts)} contexts but {len(keywords)} keywords")
  rows, masks = [], []
  for context, key in zip(contexts, keywords):
    prefix = tokenizer.encode(context)
    ids = tokenizer.encode(f"{context} {key}")
    if ids[:len(prefix)] != prefix or len(ids) == len(prefix):
      raise ValueError(f"keyword {key!r} after {context!r}: the context's tokens are not a prefix of the text's")
    if max_length and len(ids) > max_length:
      raise ValueError(f"{context!r} + {key!r} has {len(ids)} tokens, more than max_length={max_length}")
    rows.append(ids)
    masks.append([0] * len(prefix) + [1] * (len(ids) - len(prefix)))
  width = max([len(r) for r in rows] + [1])
  width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
  out = {k: np.zeros((len(rows), width), np.int32)
         for k in ("input_ids", "attention_mask", "keyword_mask", "first_mask")}
  out["input_ids"][:] = tokenizer.pad_token_id or 0
  for n, (ids, m) in enumerate(zip(rows, masks)):
    out["input_ids"][n, :len(ids)] = ids
    out["attention_mask"][n, :len(ids)] = 1
    out["keyword_mask"][n, :len(ids)] = m
    out["first_mask"][n, len(ids) - sum(m)] = 1
  return out


def _token_logprobs(graphdef, params, batch, chunk_size):
  return batch_token_logprobs(graphdef, params, {"input_ids": batch["input_ids"],
                                                 "attention_mask": batch["attention_mask"]},
                              chunk_size=chunk_size)


def keyword_logprob_fn(graphdef: nnx.GraphDef, *, chunk_size: int = 128):
  """`fn(params, batch) -> [N]` float32 `log P(keyword | context)` (natural log), one forward pass.

  `batch` holds `input_ids`, `attention_mask`, `keyword_mask` (`keyword_batch`).
  Pure and traceable: jit it, or vmap it over stacked parameters.
  """

  def fn(params, batch):
    lp = _token_logprobs(graphdef, params, batch, chunk_size)
    return jnp.sum(jnp.where(batch["keyword_mask"][:, 1:] > 0, lp, 0.0), axis=-1)

  return fn


def keyword_scores_fn(graphdef: nnx.GraphDef, *, chunk_size: int = 128):
  """`fn(params, batch) -> [N, 2]` float32: the whole keyword's log-probability and its first token's, from one
  forward pass (`batch` from `keyword_batch`, with `first_mask`).

  Most of a rare multi-token word's prior sits in its continuation tokens (spelling, which memorization shares),
  so the first token's probability is the score of the word being chosen at all.
  """

  def fn(params, batch):
    lp = _token_logprobs(graphdef, params, batch, chunk_size)
    whole = jnp.sum(jnp.where(batch["keyword_mask"][:, 1:] > 0, lp, 0.0), axis=-1)
    first = jnp.sum(jnp.where(batch["first_mask"][:, 1:] > 0, lp, 0.0), axis=-1)
    return jnp.stack([whole, first], axis=-1)

  return fn


@functools.partial(jax.jit, static_argnums=(0,))
def _keyword_logprobs(graphdef, params, batch):
  return keyword_logprob_fn(graphdef)(params, batch)


def keyword_logprobs(model, tokenizer, contexts: Sequence[str], keywords: Sequence[str], *,
                     batch_size: int = 256) -> np.ndarray:
  """`log P(keyword | context)` (natural log) for each pair, float64 `[N]`, in jitted batches.

  Batches of `batch_size` rows (`pragjax.eval.batching.map_batches`, sharded
  over the current mesh's batch axes; tokens padded to a multiple of 16) share
  one compilation: a short last batch of several is filled with zero rows;
  pairs that fit in one batch are not padded.
  """
  graphdef, params = nnx.split(model, nnx.Param)
  full = keyword_batch(tokenizer, contexts, keywords)
  out = batching.map_batches(lambda chunk: _keyword_logprobs(graphdef, params, chunk), full, batch_size=batch_size,
                             shrink=True)
  return np.asarray(out, np.float64)


def log10_priming(logp_after: np.ndarray, logp_before: np.ndarray) -> np.ndarray:
  """`log10 mean_t P_after/P_before` over the last axis (thematic prompts) of natural-log probabilities."""
  d = np.asarray(logp_after, np.float64) - np.asarray(logp_before, np.float64)
  m = d.max(axis=-1, keepdims=True)
  return (m[..., 0] + np.log(np.mean(np.exp(d - m), axis=-1))) / LN10


def log10_memorization(logp_after: np.ndarray, logp_before: np.ndarray) -> np.ndarray:
  """`log10 P_after/P_before` of natural-log probabilities in the sample's own context."""
  return (np.asarray(logp_after, np.float64) - np.asarray(logp_before, np.float64)) / LN10


def ratio(log10_score) -> np.ndarray:
  """A log10 score as a ratio (inf past float64's range)."""
  with np.errstate(over="ignore"):
    return np.power(10.0, np.asarray(log10_score, np.float64))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points or a constant input."""
  from scipy import stats

  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan")
  return float(stats.spearmanr(x, y).statistic)


def ratio_cut(log10_variant: float, log10_baseline: float) -> float:
  """The cut of a median score on the ratio scale (the paper's): `1 - ratio_variant / ratio_baseline`, from
  log10 medians (the median commutes with the log)."""
  return float(1.0 - 10.0 ** (log10_variant - log10_baseline))


def log_cut(log10_variant: float, log10_baseline: float) -> float:
  """The cut in log space, the share of decades removed: `1 - log10_variant / log10_baseline` (NaN when the
  baseline's median is 0)."""
  return float(1.0 - log10_variant / log10_baseline) if log10_baseline else float("nan")


def selectivity(variant: dict[str, np.ndarray], baseline: dict[str, np.ndarray], *, scale: str = "log",
                suffix: str = "", num_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
  """Priming cut minus memorization cut of a variant against the baseline on the same samples, with a paired
  bootstrap CI over samples.

  Args:
    variant, baseline: per-sample `log10_priming{suffix}` and `log10_memorization{suffix}` arrays, aligned.
    scale: "log" (`log_cut`) or "ratio" (`ratio_cut`), each cut taken on medians over the (resampled) samples.
  Returns `estimate`, `lo`, `hi` (percentile interval), `n`. Positive: the variant removes more of the
  priming than of the memorization (the paper's claim for ignore-top-k).
  """
  cut = {"log": log_cut, "ratio": ratio_cut}[scale]
  vp, vm = (np.asarray(variant[f"log10_{k}{suffix}"], np.float64) for k in ("priming", "memorization"))
  bp, bm = (np.asarray(baseline[f"log10_{k}{suffix}"], np.float64) for k in ("priming", "memorization"))
  n = len(vp)
  if not n:
    return {"estimate": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}

  def stat(idx):
    return (cut(np.median(vp[idx]), np.median(bp[idx])) - cut(np.median(vm[idx]), np.median(bm[idx])))

  rng = np.random.default_rng([0x53454C, seed])
  boot = np.array([stat(rng.integers(0, n, n)) for _ in range(num_boot)])
  a = (1.0 - level) / 2
  lo, hi = np.nanquantile(boot, [a, 1 - a]) if np.isfinite(boot).any() else (float("nan"),) * 2
  return {"estimate": float(stat(np.arange(n))), "lo": float(lo), "hi": float(hi), "n": n}


def predictor_report(log10_prior: np.ndarray, log10_priming_score: np.ndarray, *, prior_threshold: float = 1e-3,
                     priming_threshold: float = 10.0) -> dict:
  """Prior-vs-priming statistics.

  Args:
    log10_prior: log10 P_before(key | own context) per sample.
    log10_priming_score: log10 priming score per sample.
    prior_threshold: the prior that splits samples (1e-3 in the paper).
    priming_threshold: a priming ratio counted as "primed".
  Returns: `spearman`, and for the samples below and at/above the prior
  threshold: `n_low`, `n_high`, `primed_low`, `primed_high` (shares with
  priming > threshold; NaN where a side has no sample).
  """
  prior = np.asarray(log10_prior, np.float64)
  prime = np.asarray(log10_priming_score, np.float64)
  low = prior < math.log10(prior_threshold)
  primed = prime > math.log10(priming_threshold)

  def share(sel):
    return float(primed[sel].mean()) if sel.any() else float("nan")

  return {"spearman": spearman(prior, prime), "n_low": int(low.sum()), "n_high": int((~low).sum()),
          "primed_low": share(low), "primed_high": share(~low), "prior_threshold": prior_threshold,
          "priming_threshold": priming_threshold}


def scatter_plot(path: str, groups: dict[str, tuple[np.ndarray, np.ndarray]], *, prior_threshold: float = 1e-3,
                 title: str = "") -> str:
  """Saves a PNG scatter of log10 priming against log10 prior, one colour per group; returns `path`.

  `groups` maps a label to (log10 priors, log10 priming scores).
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=100)
  for label, (x, y) in groups.items():
    ax.scatter(x, y, s=12, alpha=0.7, label=label)
  ax.axvline(math.log10(prior_threshold), color="grey", lw=0.8, ls="--")
  ax.axhline(0.0, color="grey", lw=0.8)
  ax.set_xlabel("log10 P(keyword | own context) before learning")
  ax.set_ylabel("log10 priming score")
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.save_figure(fig, path)
  plt.close(fig)
  return path
