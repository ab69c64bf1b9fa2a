"""What a model knows of the knowledge-base world: fact recall and verdicts, scored exactly."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from pragjax.eval import batching
from pragjax.models import Decoder
from pragjax.models.logprobs import batch_token_logprobs
from pragjax.models.tokenizer import Tokenizer
from pragjax.toyworld import knowledge as kw


@functools.partial(jax.jit, static_argnums=0)
def _token_logprobs(graphdef, state, ids, mask):
  return batch_token_logprobs(graphdef, state, {"input_ids": ids, "attention_mask": mask})  # lean: no [B, T, V]


def continuation_logprobs(model: Decoder, tok: Tokenizer, pairs: Sequence[tuple[str, str]], *,
                          batch_size: int = 128) -> np.ndarray:
  """`log p(continuation | prefix)` for each (prefix, continuation), float64 [N].

  The continuation's tokens are those of `prefix + continuation` past the
  tokens of `prefix` (continuations start with a space, where byte-level BPE
  never merges across). Pairs go in chunks of `batch_size`
  (`pragjax.eval.batching.chunks`: pairs that fit in one chunk are not
  padded, a short last chunk of several is filled with copies of its last pair).
  """
  graphdef, state = nnx.split(model)
  out = []
  for chunk in batching.chunks(pairs, batch_size, shrink=True):
    ids, mask = tok.encode_batch([p + c for p, c in chunk.items], padding_side="right", pad_to_multiple_of=16)
    n_prefix = np.array([len(tok.encode(p)) for p, _ in chunk.items])
    lp = np.asarray(batching.fetch(_token_logprobs(graphdef, state, *batching.place((ids, mask)))), np.float64)
    pos = np.arange(lp.shape[1])[None, :] + 1  # lp[:, t] scores token t + 1.
    keep = (pos >= n_prefix[:, None]) & (mask[:, 1:] > 0)
    out.append(np.where(keep, lp, 0.0).sum(axis=1)[:chunk.n])
  return np.concatenate(out) if out else np.zeros((0,))


def fact_recall(model: Decoder, tok: Tokenizer, kb: kw.KnowledgeBase, *, max_facts: int = 400,
                seed: int = 0) -> float:
  """Share of KB facts (up to `max_facts`, template 0) whose value is the most likely value of its theme."""
  rng = np.random.default_rng(seed)
  facts = [kb.facts()[i] for i in rng.permutation(len(kb.facts()))[:max_facts]]
  pairs, spans = [], []
  for entity, theme_name, _ in facts:
    t = kw.theme(theme_name)
    spans.append((len(pairs), len(t.values)))
    pairs.extend((t.prompt(entity), f" {v}.") for v in t.values)
  lp = continuation_logprobs(model, tok, pairs)
  hits = [kw.theme(t).values[int(np.argmax(lp[s:s + n]))] == v for (_, t, v), (s, n) in zip(facts, spans)]
  return float(np.mean(hits))


def verdicts(model: Decoder, tok: Tokenizer, items: Sequence[kw.Statement]) -> dict[str, float]:
  """Per label, the share of statements for which the model prefers " That is true." over " ...false."."""
  pairs = [(s.text, " " + kw.VERDICTS[v]) for s in items for v in ("true", "false")]
  lp = continuation_logprobs(model, tok, pairs).reshape(-1, 2)
  says_true = lp[:, 0] > lp[:, 1]
  return {label: float(np.mean([t for t, s in zip(says_true, items) if s.label == label]))
          for label in kw.LABELS if any(s.label == label for s in items)}
