"""KV-cache sampling compiled as one jitted loop.

`generate` prefills the prompts into a KV cache, then runs a single
`lax.while_loop` (no Python dispatch per token) that samples one token per
step: greedy, temperature, top-k, top-p, stop tokens, `num_samples` per
prompt. Prompts may be left- or right-padded: positions come from the mask
and padded cache slots are masked out.

Log-probabilities: `logprobs` are the *raw* model log-probabilities of the
chosen tokens (float32 log-softmax of the logits, before temperature, top-k
or top-p), which is what a teacher-forced forward pass of the same tokens
gives; `processed_logprobs` are those of the distribution actually sampled
from (after temperature/top-k/top-p). Both are 0 after a sequence ends.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Int

from pragjax.models.decoder import Decoder, KVCache

_NEG = -jnp.inf


@flax.struct.dataclass
class GenerateOutput:
  """tokens/logprobs/processed_logprobs: `[B * num_samples, max_new_tokens]`
  (rows of one prompt are adjacent); lengths: `[B * num_samples]` generated
  tokens per row, a stop token included; padding after a stop is
  `pad_token_id`."""

  tokens: Array
  logprobs: Array
  processed_logprobs: Array
  lengths: Array


def process_logits(logits, temperature, top_k: int | None, top_p: float | None):
  """Temperature, then top-k, then top-p (nucleus) filtering, in float32."""
  x = logits.astype(jnp.float32) / temperature
  if top_k is not None and top_k < x.shape[-1]:
    kth = jax.lax.top_k(x, top_k)[0][..., -1:]
    x = jnp.where(x < kth, _NEG, x)
  if top_p is not None and top_p < 1.0:
    sorted_x = jnp.sort(x, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_x, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each
    keep = before < top_p
    keep = keep.at[..., 0].set(True)
    cutoff = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < cutoff, _NEG, x)
  return x


def _sample(logits, key, temperature, greedy: bool, top_k, top_p):
  raw = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  if greedy:
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    lp = jnp.take_along_axis(raw, tok[:, None], axis=-1)[:, 0]
    return tok, lp, lp
  x = process_logits(logits, temperature, top_k, top_p)
  tok = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
  lp = jnp.take_along_axis(raw, tok[:, None], axis=-1)[:, 0]
  plp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), tok[:, None], axis=-1)[:, 0]
  return tok, lp, plp


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "max_new_tokens", "greedy", "top_k", "top_p", "eos", "num_samples", "pad_id"),
)
def _generate(graphdef, state, input_ids, attention_mask, rng, temperature, *,
              max_new_tokens, greedy, top_k, top_p, eos, num_samples, pad_id):
  model: Decoder = nnx.merge(graphdef, state)
  ids = jnp.repeat(input_ids, num_samples, axis=0)
  mask = jnp.repeat(attention_mask, num_samples, axis=0).astype(jnp.int32)
  b, p = ids.shape
  cache = KVCache.init(model.config, b, p + max_new_tokens)
  out = model(ids, mask, cache=cache, compute_logits=False, prefill=True)
  last = p - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  logits = model.logits_from_hidden(out.final_hidden[jnp.arange(b), last])
  eos_arr = jnp.asarray(eos if eos else (-1,), jnp.int32)

  def cond(carry):
    i, _, _, _, done, *_ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, cache, logits, key, done, toks, lps, plps, lengths = carry
    key, sub = jax.random.split(key)
    tok, lp, plp = _sample(logits, sub, temperature, greedy, top_k, top_p)
    tok = jnp.where(done, pad_id, tok)
    toks = toks.at[:, i].set(tok)
    lps = lps.at[:, i].set(jnp.where(done, 0.0, lp))
    plps = plps.at[:, i].set(jnp.where(done, 0.0, plp))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.isin(tok, eos_arr)
    step = model(tok[:, None], jnp.ones((b, 1), jnp.int32), cache=cache, compute_logits=False)
    logits = model.logits_from_hidden(step.final_hidden[:, 0])
    return i + 1, step.cache, logits, key, done, toks, lps, plps, lengths

  carry = (
      jnp.zeros((), jnp.int32), out.cache, logits, rng, jnp.zeros((b,), bool),
      jnp.full((b, max_new_tokens), pad_id, jnp.int32),
      jnp.zeros((b, max_new_tokens), jnp.float32),
      jnp.zeros((b, max_new_tokens), jnp.float32),
      jnp.zeros((b,), jnp.int32),
  )
  carry = jax.lax.while_loop(cond, body, carry)
  return GenerateOutput(tokens=carry[5], logprobs=carry[6], processed_logprobs=carry[7], lengths=carry[8])


def generate(
    model: Decoder,
    input_ids: Int[Array, "B P"],
    attention_mask: Int[Array, "B P"] | None = None,
    *,
    max_new_tokens: int,
    rng: jax.Array | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_ids=(),
    num_samples: int = 1,
    pad_token_id: int | None = None,
) -> GenerateOutput:
  """Samples continuations of a batch of prompts.

  Args:
    model: a `Decoder` (parameters may be sharded on a mesh).
    input_ids, attention_mask: `[B, P]` prompts, left or right padded.
    max_new_tokens: length of the output rows.
    rng: PRNG key; required when `temperature > 0`.
    temperature: 0 means greedy (argmax).
    top_k, top_p: optional filters applied after temperature.
    eos_token_ids: stop tokens; a row stops after emitting one.
    num_samples: samples per prompt; output rows `b * num_samples + s`.
    pad_token_id: fills rows after they stop (default: config pad, else 0).
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  greedy = temperature == 0.0
  if not greedy and rng is None:
    raise ValueError("generate with temperature > 0 needs an rng key")
  if top_k is not None and top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  input_ids = jnp.asarray(input_ids, jnp.int32)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  if isinstance(eos_token_ids, int):
    eos_token_ids = (eos_token_ids,)
  pad = pad_token_id if pad_token_id is not None else (model.config.pad_token_id or 0)
  graphdef, state = nnx.split(model)
  return _generate(
      graphdef, state, input_ids, jnp.asarray(attention_mask, jnp.int32),
      rng if rng is not None else jax.random.key(0),
      jnp.asarray(max(temperature, 1e-6), jnp.float32),
      max_new_tokens=int(max_new_tokens), greedy=greedy,
      top_k=None if greedy else top_k, top_p=None if greedy else top_p,
      eos=tuple(int(e) for e in eos_token_ids), num_samples=int(num_samples), pad_id=int(pad),
  )
