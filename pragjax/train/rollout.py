"""The rollout source: on-policy training batches for any method that samples from the policy it trains.

A `RolloutSource` is a data iterator for `pragjax.train.loop.run` (through
`runner.train_lm`, as the `Method.data` of a sampling method). Before each
`next()` the loop offers it the current model (`wants_model()` /
`observe_model(model)`, the parameters of the train state merged into a
`Decoder`: no copy of the weights). When its buffer is empty it runs one
rollout:

1. takes the next `prompts_per_rollout` prompts of a seeded stream (a new
   permutation `np.random.default_rng([seed, epoch])` per pass);
2. samples `group_size` responses per prompt with `pragjax.models.generate`
   from the current parameters, on the current mesh (rng
   `fold_in(key(seed), rollout)`, then the draw index);
3. scores each response with `reward_fn(record, response_text)` (a float, or a
   mapping with `reward` and optionally `correct` and any other numbers);
4. optionally drops groups (`filter_equal`: all rewards of the group equal, so
   every advantage is 0, DAPO's dynamic sampling; `accuracy_range=(lo, hi)`:
   the group's mean `correct` outside [lo, hi], PRIME's filter) and samples
   more prompts to refill, at most `max_draws` draws per rollout (then the
   dropped groups fill the rest, and `kept_groups` says so);
5. computes the advantages (`advantage_fn(rewards [N]) -> [N]`, e.g.
   `pragjax.objectives.rl.group_advantages`), and
6. lays the N = prompts x G sequences out as training rows and serves them as
   `epochs_per_rollout` passes of `minibatches` minibatches each (a seeded
   shuffle of the rows per pass): `steps_per_rollout = epochs x minibatches`
   optimizer steps on one rollout.

Batch contract (numpy, this process's rows; T = `seq_len`):
`input_ids`, `attention_mask`, `loss_mask` `[n, T]` int32 (`loss_mask` 1 on
the response tokens, the stop token included: the targets); `old_logp [n, T]`
float32, the sampling pass's raw log-prob of token t at position t (0 off the
response); `advantages`, `reward`, `correct`, `response_length` `[n]`
float32 (`correct` -1 where `reward_fn` gives none); `on_policy [n]` float32, 1 on the first step of a rollout, where the
parameters are still those that sampled (a loss then takes the old log-probs
equal to its own, so the ratio is exactly 1), else 0.

Demonstrations (ReLIFT): with `demonstration_fn(record) -> str | None` and
`sft_batch = B > 0`, every prompt of a rollout whose G responses all fail
(`correct`, else `reward`, <= 0 for each) and that has a demonstration goes,
with it, into a buffer (rollouts' order, prompts' order). Whenever a rollout
has been served in full and the buffer holds B items, the next batch is one
fine-tuning batch of the B oldest items (prompt + demonstration + EOS, the
demonstration and EOS as targets), padded with empty rows (`loss_mask` 0) to
the minibatch's row count, so the one compiled step serves it; then RL
continues. With a buffer every batch carries `sft [n]` float32 (1 on the rows
of a fine-tuning batch, else 0), and such a batch has `advantages` 0 and
`on_policy` 1. A fine-tuning batch takes one optimizer step out of the run's
budget (`train.steps`), so a ReLIFT run of S steps samples fewer rollouts than
an RL run of S steps; `metrics()` counts `sft/steps`, `sft/buffered` and
`sft/demonstrations` (items trained on).

Processes: every process runs the same rollout (same prompts, same rng, the
sampled tokens fetched to every host) and takes its contiguous share of each
minibatch's rows, so the concatenation over processes is the one-process
minibatch.

Checkpointing: `get_state()` is JSON (stream position, rollouts done, and the
unfinished rollout's rows with the step reached, when a save falls inside a
rollout), so a resumed run serves exactly the batches an uninterrupted one
would have.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from pragjax.data.errors import DataError
from pragjax.eval import batching
from pragjax.models import generate

__all__ = ["RolloutSource", "ROW_KEYS", "SFT_KEY"]

ROW_KEYS = ("input_ids", "attention_mask", "loss_mask", "old_logp", "advantages", "reward", "correct",
            "response_length")
SFT_KEY = "sft"
_INT_KEYS = ("input_ids", "attention_mask", "loss_mask")


def _reward_row(value: Any, where: str) -> dict[str, float]:
  if isinstance(value, Mapping):
    if "reward" not in value:
      raise DataError(f"{where}: reward_fn returned {sorted(value)} without a 'reward' key")
    out = {k: float(v) for k, v in value.items()}
  else:
    out = {"reward": float(value)}
  if not np.isfinite(out["reward"]):
    raise DataError(f"{where}: reward_fn returned a non-finite reward {out['reward']}")
  return out


class RolloutSource:
  """On-policy batches sampled from the model the loop trains (module docstring).

  Args:
    prompts: records with the prompt text under `prompt_key` (and whatever
      `reward_fn` needs, e.g. the answer).
    reward_fn: `(record, response_text) -> float | {"reward", "correct", ...}`.
    tokenizer: encodes prompts (with its leading special tokens), decodes
      responses; its EOS stops sampling.
    advantage_fn: `rewards [N] (grouped consecutively, G per prompt) -> [N]`.
    group_size: G responses per prompt.
    prompts_per_rollout: prompts per rollout (N = prompts x G rows).
    seq_len: T, the rows' length (prompt + response); a longer prompt is an
      error naming it.
    max_new_tokens: response length cap.
    temperature, top_p, top_k: sampling (temperature 0 = greedy).
    epochs_per_rollout, minibatches: steps per rollout = epochs x minibatches.
    filter_equal, accuracy_range, max_draws: group filters (module docstring).
    sample_batch_size: prompts per `generate` call (0 = all of a draw at once).
    seed, shuffle: the prompt stream and the sampling rng.
    demonstration_fn, sft_batch: ReLIFT's fine-tuning on the demonstrations of
      prompts that every response failed (module docstring); `sft_batch` 0 = off.
    process_index, process_count: default JAX's.
  """

  def __init__(self, prompts: Sequence[Mapping[str, Any]], reward_fn: Callable[[Mapping, str], Any], tokenizer, *,
               advantage_fn: Callable[[np.ndarray], np.ndarray], group_size: int, prompts_per_rollout: int,
               seq_len: int, max_new_tokens: int, temperature: float = 1.0, top_p: float | None = None,
               top_k: int | None = None, epochs_per_rollout: int = 1, minibatches: int = 1,
               filter_equal: bool = False, accuracy_range: tuple[float, float] | None = None, max_draws: int = 4,
               sample_batch_size: int = 0, seed: int = 0, shuffle: bool = True, prompt_key: str = "prompt",
               demonstration_fn: Callable[[Mapping], str | None] | None = None, sft_batch: int = 0,
               process_index: int | None = None, process_count: int | None = None):
    self._pi = jax.process_index() if process_index is None else int(process_index)
    self._pc = jax.process_count() if process_count is None else int(process_count)
    for name, value, low in (("group_size", group_size, 1), ("prompts_per_rollout", prompts_per_rollout, 1),
                             ("max_new_tokens", max_new_tokens, 1), ("epochs_per_rollout", epochs_per_rollout, 1),
                             ("minibatches", minibatches, 1), ("max_draws", max_draws, 1),
                             ("sample_batch_size", sample_batch_size, 0), ("sft_batch", sft_batch, 0)):
      if int(value) < low:
        raise DataError(f"rollout: {name} must be >= {low}, got {value}")
    if not prompts:
      raise DataError("rollout: no prompts")
    rows = int(group_size) * int(prompts_per_rollout)
    if rows % int(minibatches) or (rows // int(minibatches)) % self._pc:
      raise DataError(f"rollout: {prompts_per_rollout} prompts x {group_size} responses = {rows} rows must split "
                      f"into {minibatches} minibatches of a multiple of the process count {self._pc}")
    if int(sft_batch) and demonstration_fn is None:
      raise DataError("rollout: sft_batch > 0 needs a demonstration_fn (the reference solution of a prompt)")
    if int(sft_batch) > rows // int(minibatches):
      raise DataError(f"rollout: sft_batch={sft_batch} exceeds the {rows // int(minibatches)} rows of a minibatch, "
                      f"the shape one fine-tuning batch is served in")
    if seq_len <= max_new_tokens:
      raise DataError(f"rollout: seq_len={seq_len} leaves no room for a prompt before max_new_tokens="
                      f"{max_new_tokens}")
    if accuracy_range is not None and not 0.0 <= accuracy_range[0] <= accuracy_range[1] <= 1.0:
      raise DataError(f"rollout: accuracy_range must satisfy 0 <= lo <= hi <= 1, got {accuracy_range}")
    self._prompts, self._reward_fn, self._tok = list(prompts), reward_fn, tokenizer
    self._advantage_fn = advantage_fn
    self._g, self._p, self._t, self._new = int(group_size), int(prompts_per_rollout), int(seq_len), int(max_new_tokens)
    self._temperature, self._top_p, self._top_k = float(temperature), top_p, top_k
    self._epochs, self._minibatches = int(epochs_per_rollout), int(minibatches)
    self._filter_equal, self._accuracy_range, self._max_draws = bool(filter_equal), accuracy_range, int(max_draws)
    self._sample_batch = int(sample_batch_size)
    self._seed, self._shuffle, self._key = int(seed), bool(shuffle), prompt_key
    self._model = None
    self._position = 0  # prompts taken from the stream so far
    self._rollouts = 0  # rollouts started so far
    self._rows: dict[str, np.ndarray] | None = None  # the current rollout's rows (all processes' rows)
    self._served = 0  # steps served from the current rollout
    self._stats: dict[str, float] = {}
    self._order_cache: tuple[int, np.ndarray] | None = None
    self._demo_fn, self._sft_batch = demonstration_fn, int(sft_batch)
    self._buffer: list[int] = []  # prompt indices of failed groups with a demonstration, oldest first
    self._sft_steps = 0
    self._sft_items = 0

  @property
  def steps_per_rollout(self) -> int:
    return self._epochs * self._minibatches

  # The loop's side: offer the model before each batch.
  def wants_model(self) -> bool:
    """True when the next batch starts a rollout (so the loop hands over the current model)."""
    return self._rows is None

  def observe_model(self, model) -> None:
    self._model = model

  def metrics(self) -> dict[str, float]:
    """The last rollout's statistics (reward, accuracy, lengths, kept groups, timings) for the metrics rows."""
    return dict(self._stats)

  # The prompt stream.
  def _order(self, epoch: int) -> np.ndarray:
    if self._order_cache is None or self._order_cache[0] != epoch:
      n = len(self._prompts)
      order = np.random.default_rng([self._seed, epoch]).permutation(n) if self._shuffle else np.arange(n)
      self._order_cache = (epoch, order)
    return self._order_cache[1]

  def _take_prompts(self, k: int) -> list[int]:
    n = len(self._prompts)
    out = []
    for _ in range(k):
      epoch, i = divmod(self._position, n)
      out.append(int(self._order(epoch)[i]))
      self._position += 1
    return out

  # Sampling.
  def _encode_prompt(self, index: int) -> list[int]:
    record = self._prompts[index]
    if self._key not in record or not isinstance(record[self._key], str):
      raise DataError(f"rollout prompt {index}: expected a string under {self._key!r}, got keys {sorted(record)}")
    ids = self._tok.encode(record[self._key], add_special_tokens=True)
    if len(ids) + self._new > self._t:
      raise DataError(f"rollout prompt {index}: {len(ids)} tokens + max_new_tokens={self._new} exceed "
                      f"seq_len={self._t}")
    return list(ids)

  def _sample(self, indices: Sequence[int], key: jax.Array) -> tuple[list[list[int]], np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """(prompt ids per prompt, tokens [k*G, R], raw logprobs [k*G, R], lengths [k*G]) for `indices`."""
    if self._model is None:
      raise RuntimeError("RolloutSource: no model to sample from; the loop hands it over with observe_model")
    prompt_ids = [self._encode_prompt(i) for i in indices]
    # One compiled shape: every generate call gets `chunk` prompts rounded up to the mesh's batch shards (a short draw repeats its last prompt, whose
    # samples are dropped), left padded to seq_len - max_new_tokens.
    chunk = self._sample_batch or self._p
    rows = batching.chunk_rows(chunk)  # a multiple of the mesh's batch shards
    width = self._t - self._new
    toks, lps, lens = [], [], []
    for start in range(0, len(indices), chunk):
      part = prompt_ids[start:start + chunk]
      real = len(part)
      part = part + [part[-1]] * (rows - real)
      ids = np.full((rows, width), self._tok.pad_token_id or 0, np.int32)
      mask = np.zeros((rows, width), np.int32)
      for r, p in enumerate(part):  # left padded: the sampler reads positions from the mask
        ids[r, width - len(p):], mask[r, width - len(p):] = p, 1
      ids, mask = batching.place((ids, mask))
      res = generate(self._model, ids, mask, max_new_tokens=self._new, rng=jax.random.fold_in(key, start),
                     temperature=self._temperature, top_p=self._top_p, top_k=self._top_k,
                     eos_token_ids=(self._tok.eos_token_id,), num_samples=self._g,
                     pad_token_id=self._tok.pad_token_id)
      t, lp, n = batching.fetch((res.tokens, res.logprobs, res.lengths))
      keep = real * self._g
      toks.append(np.asarray(t)[:keep]), lps.append(np.asarray(lp, np.float32)[:keep]), lens.append(np.asarray(n)[:keep])
    return prompt_ids, np.concatenate(toks), np.concatenate(lps), np.concatenate(lens)

  def _score(self, indices, tokens, lengths) -> list[dict[str, float]]:
    texts = self._tok.decode_batch(tokens, lengths=lengths)
    return [_reward_row(self._reward_fn(self._prompts[indices[r // self._g]], text),
                        f"rollout prompt {indices[r // self._g]}, response {r % self._g}")
            for r, text in enumerate(texts)]

  def _keep_group(self, scores: Sequence[Mapping[str, float]]) -> bool:
    rewards = [s["reward"] for s in scores]
    if self._filter_equal and max(rewards) == min(rewards):
      return False
    if self._accuracy_range is not None:
      acc = float(np.mean([s.get("correct", s["reward"]) for s in scores]))
      lo, hi = self._accuracy_range
      if not lo <= acc <= hi:
        return False
    return True

  def _rollout(self) -> None:
    t0 = time.perf_counter()
    key = jax.random.fold_in(jax.random.key(self._seed), self._rollouts)
    self._rollouts += 1
    kept, dropped = [], []  # groups: (prompt ids, tokens [G, R], logprobs [G, R], lengths [G], scores)
    draws, sampled, generated = 0, 0, 0
    while len(kept) < self._p and draws < self._max_draws:
      need = self._p - len(kept)
      indices = self._take_prompts(need)
      prompt_ids, tokens, logps, lengths = self._sample(indices, jax.random.fold_in(key, draws))
      draws += 1
      sampled += len(indices)
      generated += int(lengths.sum())
      scores = self._score(indices, tokens, lengths)
      for j, ids in enumerate(prompt_ids):
        s = slice(j * self._g, (j + 1) * self._g)
        group = (ids, tokens[s], logps[s], lengths[s], scores[s], indices[j])
        (kept if self._keep_group(group[4]) else dropped).append(group)
        if self._sft_batch and all(x.get("correct", x["reward"]) <= 0 for x in group[4]) \
            and self._demonstration(indices[j]) is not None:
          self._buffer.append(int(indices[j]))
      if not (self._filter_equal or self._accuracy_range is not None):
        break
    sample_s = time.perf_counter() - t0
    groups = kept + dropped[:self._p - len(kept)]
    all_scores = [s for g in dropped + kept for s in g[4]]

    self._rows = self._layout(groups)
    self._served = 0
    n = self._g * self._p
    self._stats = {
        "rollout/reward": float(np.mean([s["reward"] for s in all_scores])),
        "rollout/response_length": float(np.mean(self._rows["response_length"])),
        "rollout/kept_groups": float(len(kept[:self._p])) / self._p,
        "rollout/sampled_prompts": float(sampled),
        "rollout/sample_seconds": sample_s,
        "rollout/tokens_per_sec": generated / max(sample_s, 1e-9),
        "rollout/rows": float(n),
    }
    if all("correct" in s for s in all_scores):
      self._stats["rollout/accuracy"] = float(np.mean([s["correct"] for s in all_scores]))
    if self._sft_batch:
      self._stats.update(self._sft_stats())

  # Demonstrations (ReLIFT).
  def _demonstration(self, index: int) -> str | None:
    text = self._demo_fn(self._prompts[index])
    if text is not None and not isinstance(text, str):
      raise DataError(f"rollout prompt {index}: demonstration_fn returned {type(text).__name__}, expected str or None")
    return text or None

  def _sft_stats(self) -> dict[str, float]:
    return {"sft/steps": float(self._sft_steps), "sft/buffered": float(len(self._buffer)),
            "sft/demonstrations": float(self._sft_items)}

  def _sft_rows(self) -> dict[str, np.ndarray]:
    """One fine-tuning batch (all processes' rows): the `sft_batch` oldest buffered prompts with their
    demonstrations, padded with empty rows to a minibatch."""
    size = self._g * self._p // self._minibatches
    take, self._buffer = self._buffer[:self._sft_batch], self._buffer[self._sft_batch:]
    out = {k: np.zeros((size, self._t), np.int32) for k in _INT_KEYS}
    out["input_ids"][:] = self._tok.pad_token_id or 0
    out["old_logp"] = np.zeros((size, self._t), np.float32)
    for k in ("advantages", "reward", "correct", "response_length"):
      out[k] = np.zeros((size,), np.float32)
    for r, index in enumerate(take):
      prompt = self._encode_prompt(index)
      demo = list(self._tok.encode(self._demonstration(index), add_special_tokens=False)) + [self._tok.eos_token_id]
      if len(prompt) + len(demo) > self._t:
        raise DataError(f"rollout prompt {index}: prompt ({len(prompt)} tokens) + demonstration ({len(demo)} tokens, "
                        f"EOS included) exceed seq_len={self._t}")
      n = len(prompt) + len(demo)
      out["input_ids"][r, :n] = prompt + demo
      out["attention_mask"][r, :n] = 1
      out["loss_mask"][r, len(prompt):n] = 1
      out["response_length"][r] = len(demo)
      out["correct"][r] = -1.0
    out[SFT_KEY] = np.zeros((size,), np.float32)
    out[SFT_KEY][:len(take)] = 1.0
    self._sft_steps += 1
    self._sft_items += len(take)
    return out

  def _layout(self, groups) -> dict[str, np.ndarray]:
    n = self._g * len(groups)
    out = {k: np.zeros((n, self._t), np.int32) for k in _INT_KEYS}
    out["old_logp"] = np.zeros((n, self._t), np.float32)
    for k in ("advantages", "reward", "correct", "response_length"):
      out[k] = np.zeros((n,), np.float32)
    pad = self._tok.pad_token_id or 0
    out["input_ids"][:] = pad
    rewards = []
    for gi, (ids, tokens, logps, lengths, scores, _) in enumerate(groups):
      for j in range(self._g):
        r = gi * self._g + j
        length = int(lengths[j])
        p = len(ids)
        out["input_ids"][r, :p] = ids
        out["input_ids"][r, p:p + length] = tokens[j, :length]
        out["attention_mask"][r, :p + length] = 1
        out["loss_mask"][r, p:p + length] = 1
        out["old_logp"][r, p:p + length] = logps[j, :length]
        out["reward"][r] = scores[j]["reward"]
        out["correct"][r] = scores[j].get("correct", -1.0)
        out["response_length"][r] = length
        rewards.append(scores[j]["reward"])
    out["advantages"] = np.asarray(self._advantage_fn(np.asarray(rewards, np.float32)), np.float32).reshape(n)
    return out

  # Serving.
  def __iter__(self) -> "RolloutSource":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._rows is None and self._sft_batch and len(self._buffer) >= self._sft_batch:
      rows = self._sft_rows()
      local = len(rows["reward"]) // self._pc
      batch = {k: v[self._pi * local:(self._pi + 1) * local] for k, v in rows.items()}
      batch["on_policy"] = np.ones((local,), np.float32)
      self._stats.update(self._sft_stats())
      return batch
    if self._rows is None:
      self._rollout()
    epoch, mb = divmod(self._served, self._minibatches)
    n = len(self._rows["reward"])
    order = np.random.default_rng([self._seed, 0x524C, self._rollouts, epoch]).permutation(n) \
        if self._minibatches > 1 else np.arange(n)
    size = n // self._minibatches
    rows = order[mb * size:(mb + 1) * size]
    local = size // self._pc
    rows = rows[self._pi * local:(self._pi + 1) * local]
    batch = {k: v[rows] for k, v in self._rows.items()}
    batch["on_policy"] = np.full((len(rows),), 1.0 if self._served == 0 else 0.0, np.float32)
    if self._sft_batch:
      batch[SFT_KEY] = np.zeros((len(rows),), np.float32)
    self._served += 1
    if self._served == self.steps_per_rollout:
      self._rows = None
    return batch

  def get_state(self) -> dict[str, Any]:
    state: dict[str, Any] = {"position": self._position, "rollouts": self._rollouts, "served": self._served,
                             "num_prompts": len(self._prompts), "seed": self._seed, "stats": self._stats,
                             "sft": {"buffer": list(self._buffer), "steps": self._sft_steps, "items": self._sft_items}}
    if self._rows is not None:
      state["rows"] = {k: v.tolist() for k, v in self._rows.items()}
    return state

  def set_state(self, state: Mapping[str, Any]) -> None:
    if int(state.get("num_prompts", -1)) != len(self._prompts) or int(state.get("seed", -1)) != self._seed:
      raise DataError(f"rollout state for {state.get('num_prompts')} prompts and seed {state.get('seed')} cannot "
                      f"resume a source of {len(self._prompts)} prompts and seed {self._seed}")
    self._position, self._rollouts = int(state["position"]), int(state["rollouts"])
    self._served = int(state["served"])
    self._stats = dict(state.get("stats", {}))
    sft = state.get("sft", {})
    self._buffer = [int(i) for i in sft.get("buffer", [])]
    self._sft_steps, self._sft_items = int(sft.get("steps", 0)), int(sft.get("items", 0))
    rows = state.get("rows")
    self._rows = None if rows is None else {
        k: np.asarray(v, np.int32 if k in _INT_KEYS else np.float32) for k, v in rows.items()}
