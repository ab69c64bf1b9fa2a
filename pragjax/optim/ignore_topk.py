"""Ignore-top-k: zero the largest-magnitude entries of a parameter update.

From "How new data permeates LLM knowledge" (Sun et al., 2025): after the
optimizer has computed the update of every parameter tensor, the `k` entries
of largest magnitude are set to zero and all other entries are applied as
they are. This cuts "priming" (a new fact leaking into unrelated contexts)
while keeping memorization of the fact.

The rule, for a tree of updates `u` and a `fraction` in [0, 1):

- **scope="tensor"** (the paper's): in every leaf `u_l` of `n_l` entries,
  `k_l = round(fraction * n_l)` entries are zeroed (Python `round`, i.e.
  halves go to the even integer).
- **scope="global"**: one threshold over all leaves together;
  `k = round(fraction * sum_l n_l)` entries are zeroed in total.
- Entries are ranked by `|u|` computed in float32 (bfloat16/float16 widen
  exactly; float64 rounds first). NaN ranks above +inf, so NaNs are zeroed
  first. `-0.0` and `0.0` are equal.
- **Ties** at the threshold: among entries whose magnitude equals the
  k-th largest, those that come first are zeroed, in the order (leaf order of
  `jax.tree.leaves`, then row-major flat index within the leaf). So the set
  of zeroed entries is exactly the first `k` of the stable descending sort of
  the magnitudes (`numpy.argsort(-|u|, kind="stable")[:k]`).
- Every other entry is returned unchanged, bit for bit (`jnp.where`, no
  arithmetic on kept values).

Threshold selection (`mode`):

- **"exact"**: a distributed selection, no sort and no gather. The float32
  magnitudes are viewed as their IEEE-754 bit patterns (uint32 "keys"),
  whose integer order is the order of the magnitudes. The k-th largest key
  is found by a search of counting passes: each pass is one fused variadic
  reduce giving the number of keys >= a candidate and the nearest keys on
  either side of it; under `jit` on sharded parameters each device reduces
  its shard and only scalars are exchanged. The candidates interpolate the
  counts in key space, every third one bisects, and the bracket ends snap to
  real keys (see `_search`); the search starts from a bracket read off a
  sample (below) and checked by one pass. Typical cost: 1 + 4-7 passes per
  tensor, +1 when the search ends just above the k-th key (overheads in
  benchmarks/README.md); worst case about 3 x 31 passes, always exact. When
  the k-th key is tied, a bisection on the flat index (only then) finds
  where the tied entries stop being zeroed.
- **"approx"**: the threshold is the exact k-th largest key of a sample of
  about `sample_size` entries per tensor (per tree for scope="global",
  leaves contributing in proportion to their size), found as above on the
  sample alone, and every entry with magnitude >= it is zeroed: one
  elementwise pass over the tensor. The sample (`sample`) is systematic and
  "diagonal", covering every row and every column; on sharded tensors only
  the sample leaves its device. The number of zeroed entries differs from
  `k` with relative standard deviation about `approx_relative_error(f, m) =
  sqrt((1 - f) / (f * m))` (1.3% at f = 8%, m = 65536). Both modes zero a
  top set of magnitudes, so the sets are nested: their Jaccard overlap is
  `min(n_a, n_e) / max(n_a, n_e)`. Tensors of at most `sample_size` entries
  get the exact threshold (ties at it are all zeroed). Measured errors on
  AdamW updates: benchmarks/README.md.

Tensors of the same shape (the same weight in every layer) are stacked and
searched together under one `vmap` (one compiled loop for all of them).

Entry points:
  `ignore_topk(fraction, scope=, mode=, sample_size=)`: an optax transform,
     chained after the optimizer:
     `optax.chain(optax.adamw(1e-4), ignore_topk(0.08))`.
  `prune_topk(tree, fraction, ...)`: the same pruning on any tree.
  `topk_masks(tree, fraction, ...)`: boolean masks, True where zeroed.
  `prune_delta(params_before, params_after, fraction, ...)`: the
     "whole-episode" variant: rank `params_after - params_before` once and
     return params equal to `params_after` except at the pruned entries,
     which keep their `params_before` value.
  `num_pruned(fraction, size)`: the target `k`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

SCOPES = ("tensor", "global")
MODES = ("exact", "approx")
DEFAULT_SAMPLE_SIZE = 65536

_KEY_MAX = 0x7FFFFFFF  # largest |float32| bit pattern (a NaN); +inf is 0x7F800000
_INT32_MAX = 2**31 - 1
_LIMB = 16  # counts are (hi, lo) int32 pairs, value = hi * 2**16 + lo


# -- arguments ---------------------------------------------------------------


def check_args(fraction: float, scope: str = "tensor", mode: str = "exact",
               sample_size: int = DEFAULT_SAMPLE_SIZE) -> float:
  """Validates the arguments shared by every entry point; returns `fraction`."""
  try:
    fraction = float(fraction)
  except (TypeError, ValueError):
    raise TypeError(f"ignore_topk fraction must be a number, got {fraction!r}") from None
  if not 0.0 <= fraction < 1.0 or math.isnan(fraction):
    raise ValueError(f"ignore_topk fraction={fraction} must be in [0, 1)")
  if scope not in SCOPES:
    raise ValueError(f"ignore_topk scope={scope!r}; expected one of {SCOPES}")
  if mode not in MODES:
    raise ValueError(f"ignore_topk mode={mode!r}; expected one of {MODES}")
  if int(sample_size) < 1:
    raise ValueError(f"ignore_topk sample_size={sample_size} must be >= 1")
  return fraction


def num_pruned(fraction: float, size: int) -> int:
  """`round(fraction * size)`: how many entries of `size` are zeroed."""
  return int(round(float(fraction) * int(size)))


def approx_relative_error(fraction: float, sample_size: int) -> float:
  """Standard deviation of `(zeroed - k) / k` in approx mode: the binomial
  spread of a sample quantile, `sqrt((1 - fraction) / (fraction * sample_size))`."""
  return math.sqrt((1.0 - fraction) / (fraction * sample_size))


# -- exact counts beyond int32 (global scope on multi-billion models) --------


class _Count(NamedTuple):
  """A non-negative or negative integer `hi * 2**16 + lo` held in int32 pairs,
  so that counts over more than 2**31 entries stay exact without x64."""

  hi: jax.Array
  lo: jax.Array

  @staticmethod
  def of(c) -> "_Count":
    c = jnp.asarray(c, jnp.int32)
    return _Count(c >> _LIMB, c & ((1 << _LIMB) - 1))

  @staticmethod
  def const(v: int) -> "_Count":
    return _Count(jnp.int32(v >> _LIMB), jnp.int32(v & ((1 << _LIMB) - 1)))

  def norm(self) -> "_Count":
    return _Count(self.hi + (self.lo >> _LIMB), self.lo & ((1 << _LIMB) - 1))

  def __add__(self, o: "_Count") -> "_Count":
    return _Count(self.hi + o.hi, self.lo + o.lo).norm()

  def __sub__(self, o: "_Count") -> "_Count":
    return _Count(self.hi - o.hi, self.lo - o.lo).norm()

  def ge(self, o: "_Count") -> jax.Array:
    a, b = self.norm(), o.norm()
    return (a.hi > b.hi) | ((a.hi == b.hi) & (a.lo >= b.lo))

  def clip_int32(self, upper: jax.Array) -> jax.Array:
    """min(max(value, 0), upper) as int32, for `0 <= upper < 2**31`."""
    a = self.norm()
    neg = a.hi < 0
    big = a.hi > (_INT32_MAX >> _LIMB)
    v = jnp.where(neg | big, 0, a.hi) * (1 << _LIMB) + jnp.where(neg | big, 0, a.lo)
    return jnp.where(neg, 0, jnp.where(big, upper, jnp.minimum(v, upper)))


class _Found(NamedTuple):
  """Result of `_search`: the k-th largest key `t`; `at_lo`: exactly k keys
  are >= t; `at_hi`: exactly k - 1 keys are > t; otherwise (neither)
  count(>= t) = c_lo and count(> t) = c_hi."""

  t: jax.Array
  at_lo: jax.Array
  at_hi: jax.Array
  c_lo: _Count
  c_hi: _Count
  steps: jax.Array


_NO_KEY = 0xFFFFFFFF  # "no such key" for min reductions (real keys are <= _KEY_MAX)


def _leaf_stats(key: jax.Array, *vs) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
  """For each threshold v: (count of keys >= v, smallest key >= v, largest
  key < v) of one leaf, all in one pass.

  One variadic reduce: XLA:CPU runs it as a single fused loop (a plain
  `jnp.sum` of a comparison materializes the comparison and reduces it in a
  tree of passes, ~5x slower), and the SPMD partitioner reduces it per shard
  and all-gathers the per-shard scalars. Empty-set results: `_NO_KEY` / 0.
  """
  ops, init = [], []
  for v in vs:
    ge = key >= v
    ops += [ge.astype(jnp.int32), jnp.where(ge, key, jnp.uint32(_NO_KEY)), jnp.where(ge, jnp.uint32(0), key)]
    init += [jnp.int32(0), jnp.uint32(_NO_KEY), jnp.uint32(0)]

  def combine(x, y):
    out = []
    for i in range(0, len(x), 3):
      out += [x[i] + y[i], jnp.minimum(x[i + 1], y[i + 1]), jnp.maximum(x[i + 2], y[i + 2])]
    return tuple(out)

  red = jax.lax.reduce(tuple(ops), tuple(init), combine, tuple(range(key.ndim)))
  return [tuple(red[i:i + 3]) for i in range(0, len(red), 3)]


def _stats(keys: Sequence[jax.Array], *vs) -> list[tuple[_Count, jax.Array, jax.Array]]:
  """`_leaf_stats` over all leaves, the counts as exact `_Count`s."""
  out = [(_Count.const(0), jnp.uint32(_NO_KEY), jnp.uint32(0)) for _ in vs]
  for key in keys:
    for i, (c, mn, mx) in enumerate(_leaf_stats(key, *vs)):
      tc, tmn, tmx = out[i]
      out[i] = (tc + _Count.of(c), jnp.minimum(tmn, mn), jnp.maximum(tmx, mx))
  return out


def _maybe(pred, fn, default):
  """`fn()` if `pred` else `default`, as a while loop of at most one step:
  unlike `lax.cond`, under `vmap` it runs `fn` only if some member needs it."""
  body = lambda c: (jnp.zeros_like(c[0]), fn())
  return jax.lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred), default))[1]


def _count(pred: jax.Array) -> jax.Array:
  """Number of True entries (int32) in one fused pass (see `_leaf_stats`)."""
  return _leaf_stats(jnp.where(pred, jnp.uint32(1), jnp.uint32(0)), jnp.uint32(1))[0][0]


# -- keys, samples, selection --------------------------------------------------


def magnitude_key(x: jax.Array) -> jax.Array:
  """uint32 keys whose integer order is the order of `|x|` (float32)."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"ignore_topk needs floating-point updates, got dtype {x.dtype}")
  return jax.lax.bitcast_convert_type(jnp.abs(x.astype(jnp.float32)), jnp.uint32)


def _is_prime(n: int) -> bool:
  return n >= 2 and all(n % p for p in range(2, int(n**0.5) + 1))


def _next_prime(n: int) -> int:
  n = max(n, 2)
  while not _is_prime(n):
    n += 1
  return n


def sample_strides(shape: Sequence[int], target: int) -> tuple[int, ...]:
  """Per-axis strides (1 or primes) such that `x[::s0, ::s1, ...]` has about
  `target` entries (at least `target`, up to rounding), reducing the larger
  axes most."""
  size = math.prod(shape)
  strides = [1] * len(shape)
  if size <= target:
    return tuple(strides)
  need = size / max(target, 1)  # reduction factor still to apply
  order = sorted(range(len(shape)), key=lambda i: shape[i])
  for pos, i in enumerate(order):
    left = len(order) - pos
    want = need ** (1.0 / left)
    if want < 1.5 or shape[i] < 2:
      continue
    s = _next_prime(int(want))
    if s >= shape[i]:
      s = shape[i]  # keep one index of this axis
    strides[i] = s
    need /= shape[i] / math.ceil(shape[i] / s)
  return tuple(strides)


def sample(x: jax.Array, target: int) -> jax.Array:
  """About `target` entries of `x` (all of them if it has no more), flat.

  A "diagonal" systematic sample that covers every row and every column
  rather than a grid (a grid sample of R rows sees only R row scales, which
  biases the quantile when rows differ, e.g. embedding rows of unseen
  tokens). Rows = the leading axes, strided by `sample_strides` only when
  there are more than `target` rows; in the last axis (n entries) sampled row
  number r takes entries `j * s + (r mod s)`, j = 0 .. n // s - 1, with
  `s = n // ceil(target / rows)`; the last `n mod s` columns are never
  sampled. Only strided slices, a reshape of the last axis and a gather
  along it: on sharded tensors nothing but the sample leaves its device.
  """
  if x.size <= target:
    return x.reshape(-1)
  if x.ndim == 1:
    return x[:: -(-x.size // target)]
  lead, n = x.shape[:-1], x.shape[-1]
  rows = math.prod(lead)
  if rows > target:
    x = x[tuple(slice(None, None, st) for st in sample_strides(lead, target))]
    lead = x.shape[:-1]
    rows = math.prod(lead)
  per_row = -(-target // rows)
  s = n // per_row
  if s <= 1:
    return x.reshape(-1)
  cols = n // s
  if cols * s < n:
    x = x[..., : cols * s]
  x3 = x.reshape(lead + (cols, s))
  off = (_flat_index(lead) % s)[..., None, None]
  picked = jnp.take_along_axis(x3, jnp.broadcast_to(off, lead + (cols, 1)), axis=-1)
  return picked.reshape(-1)


def _as_float(c: _Count) -> jax.Array:
  c = c.norm()
  return c.hi.astype(jnp.float32) * float(1 << _LIMB) + c.lo.astype(jnp.float32)


def _search(keys: Sequence[jax.Array], k: int, lo, hi, c_lo: _Count, c_hi: _Count, lo_is_key, hi_is_key):
  """The k-th largest key `t`, from a bracket `lo <= t < hi` with
  c_lo = count(>= lo) >= k and c_hi = count(>= hi) < k; `lo_is_key` /
  `hi_is_key` say whether `lo` / `hi - 1` are keys present in `keys`.

  Each step counts at one candidate `mid` inside the bracket and, in the
  same pass, finds the nearest keys on either side of it, so the end that
  moves lands on a real key ("snapping"): every step removes at least one
  distinct magnitude, and gaps and heavy ties (e.g. many exact zeros) cost
  one step. The candidate interpolates the counts linearly in key space
  (~log-magnitude, where update distributions are smooth), aiming at rank
  k - 1/2; every third step bisects instead, bounding the worst case at
  about 3 x 31 steps. It stops when the bracket holds one value, or its
  lower end is a key with exactly k keys at or above it (t = lo), or its
  upper end a key with exactly k - 1 above it (t = hi - 1).
  Returns a `_Found`.
  """
  kc, k1 = _Count.const(k), _Count.const(k - 1)
  kf = jnp.float32(k - 0.5)

  def ends(lo, hi, c_lo, c_hi, lo_is_key, hi_is_key):
    at_lo = lo_is_key & c_lo.ge(kc) & kc.ge(c_lo)
    at_hi = hi_is_key & c_hi.ge(k1) & k1.ge(c_hi)
    return at_lo, at_hi

  def cond(c):
    lo, hi = c[0], c[1]
    at_lo, at_hi = ends(*c[:6])
    return ~((hi - lo <= 1) | at_lo | at_hi)

  def body(c):
    lo, hi, c_lo, c_hi, lo_is_key, hi_is_key, it = c
    width = hi - lo
    fl, fh = _as_float(c_lo), _as_float(c_hi)
    frac = jnp.clip((fl - kf) / jnp.maximum(fl - fh, 1.0), 0.0, 1.0)
    off = jnp.floor(frac * width.astype(jnp.float32)).astype(jnp.uint32)
    off = jnp.where(it % 3 == 2, width // 2, jnp.clip(off, jnp.uint32(1), width - 1))
    mid = lo + off
    [(cm, above, below)] = _stats(keys, mid)
    ok = cm.ge(kc)  # t >= mid: the new lower end is the smallest key >= mid
    pick = lambda x, y: jax.tree.map(lambda a, b: jnp.where(ok, a, b), x, y)
    return (jnp.where(ok, above, lo), jnp.where(ok, hi, below + 1), pick(cm, c_lo), pick(c_hi, cm),
            lo_is_key | ok, hi_is_key | ~ok, it + 1)

  init = (jnp.asarray(lo, jnp.uint32), jnp.asarray(hi, jnp.uint32), c_lo, c_hi, jnp.asarray(lo_is_key),
          jnp.asarray(hi_is_key), jnp.int32(0))
  lo, hi, c_lo, c_hi, lo_is_key, hi_is_key, steps = jax.lax.while_loop(cond, body, init)
  at_lo, at_hi = ends(lo, hi, c_lo, c_hi, lo_is_key, hi_is_key)
  at_hi = at_hi & ~at_lo
  return _Found(jnp.where(at_hi, hi - 1, lo), at_lo, at_hi, c_lo, c_hi, steps)


def _find(keys: Sequence[jax.Array], k: int, bracket=None) -> "_Found":
  """`_search` from `bracket=(lo, hi)` (uint32 scalars, lo <= hi), checked
  with one counting pass that also gives the side to search when it misses;
  the full key range without one. No `lax.cond`, so that a `vmap` over
  same-shaped tensors does not run untaken branches."""
  n, zero = _Count.const(sum(x.size for x in keys)), _Count.const(0)
  top = jnp.uint32(_KEY_MAX + 1)
  if bracket is None:
    return _search(keys, k, jnp.uint32(0), top, n, zero, False, False)
  # keys <= 0x7FFFFFFF, so bracket[1] + 1 <= 2**31
  (c_lo, lo, below_lo), (c_hi, above_hi, below_hi) = _stats(keys, bracket[0], bracket[1] + 1)
  kc = _Count.const(k)
  too_high, too_low = ~c_lo.ge(kc), c_hi.ge(kc)  # t < bracket[0]; t > bracket[1]
  sel = lambda cond, a, b: jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)
  start = (lo, below_hi + 1, c_lo, c_hi, True, True)
  start = sel(too_high, (jnp.uint32(0), below_lo + 1, n, c_lo, False, True), start)
  start = sel(too_low, (above_hi, top, c_hi, zero, True, False), start)
  return _search(keys, k, *start)


def kth_largest_key(keys: Sequence[jax.Array], k: int, *, bracket=None) -> tuple[jax.Array, jax.Array]:
  """The k-th largest key over all `keys` (1 <= k <= total size), by
  counting passes (sharded reductions; see `_search`), starting from
  `bracket=(lo, hi)` when given and right. Returns (key, search steps)."""
  f = _find(keys, k, bracket)
  return f.t, f.steps


def _flat_index(shape) -> jax.Array:
  idx = jnp.zeros(shape, jnp.int32)
  stride = 1
  for ax in reversed(range(len(shape))):
    idx = idx + jax.lax.broadcasted_iota(jnp.int32, shape, ax) * stride
    stride *= shape[ax]
  return idx


def _tie_cut(key: jax.Array, t, r, e) -> jax.Array:
  """Smallest flat index j with count(key == t and index < j) >= r, for
  0 <= r <= e = count(key == t); the tied entries before j are zeroed. The
  bisection on j runs only when 0 < r < e (it starts closed otherwise)."""
  n = key.size
  idx = _flat_index(key.shape)
  tied = key == t

  def body(c):
    lo, hi = c  # count(tied below hi) >= r; answer in [lo, hi]
    mid = lo + (hi - lo) // 2
    ok = _count(tied & (idx < mid)) >= r
    return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

  split = (r > 0) & (r < e)
  closed = jnp.where(r == 0, jnp.int32(0), jnp.int32(n))
  init = (jnp.where(split, 0, closed), jnp.where(split, n, closed))
  lo, _ = jax.lax.while_loop(lambda c: c[0] < c[1], body, init)
  return lo


def _first_tied(key: jax.Array, t) -> jax.Array:
  """Flat index of the first entry equal to `t` (key.size if none)."""
  return jnp.min(jnp.where(key == t, _flat_index(key.shape), jnp.int32(key.size)))


def _exact_masks(keys: list[jax.Array], k: int, sample_size: int) -> list[jax.Array]:
  """Masks of the exact rule. After the search, one of three cases holds:
  exactly k keys are >= t (zero all entries >= t: no extra pass); exactly
  k - 1 are > t (zero those and the first entry equal to t: one min pass);
  or the counts at and above t are known and the r = k - count(> t) first
  tied entries are found by `_tie_cut` (a bisection only if t is tied)."""
  f = _find(keys, k, _sample_bracket(keys, k, sample_size))
  t, zero = f.t, jnp.int32(0)
  plain = ~(f.at_lo | f.at_hi)
  r = jnp.where(plain, (_Count.const(k) - f.c_hi).clip_int32(jnp.int32(_INT32_MAX)), zero)
  e = jnp.where(plain, (f.c_lo - f.c_hi).clip_int32(jnp.int32(_INT32_MAX)), zero)
  if len(keys) == 1:
    key, n = keys[0], jnp.int32(keys[0].size)
    first = _maybe(f.at_hi, lambda: _first_tied(key, t), n)
    cut = jnp.where(f.at_lo, n, jnp.where(f.at_hi, first + 1, _tie_cut(key, t, r, e)))
    cuts = [cut]
  else:  # global scope (never vmapped): per-leaf tie counts, in leaf order
    def split():
      cuts, before, rc = [], _Count.const(0), _Count.of(jnp.where(f.at_hi, 1, r))
      for key in keys:
        e_l = _count(key == t)
        cuts.append(_tie_cut(key, t, (rc - before).clip_int32(e_l), e_l))
        before = before + _Count.of(e_l)
      return cuts
    all_tied = f.at_lo | (plain & (r == e))
    cuts = jax.lax.cond(all_tied, lambda: [jnp.int32(x.size) for x in keys], split)
  return [(key > t) | ((key == t) & (_flat_index(key.shape) < cut)) for key, cut in zip(keys, cuts)]


def _samples(keys: Sequence[jax.Array], sample_size: int) -> jax.Array:
  total = sum(x.size for x in keys)
  parts = [sample(x, max(1, math.ceil(sample_size * x.size / total))) for x in keys]
  return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def _sample_k(fraction_k: int, total: int, m: int) -> int:
  return min(m, max(1, int(round(fraction_k * m / total))))


def _sample_bracket(keys: Sequence[jax.Array], k: int, sample_size: int):
  """A (lo, hi) key bracket likely to contain the k-th largest key: the
  order statistics of a sample (of `sample_size`, at most 1/8 of the
  entries) 6 binomial standard deviations either side of rank k; an end
  beyond the sample is left open. None for fewer than 4096 entries."""
  total = sum(x.size for x in keys)
  if total < 4096:
    return None
  s = _samples(keys, min(sample_size, total // 8))
  m = s.size
  p = k / total
  dev = 6.0 * math.sqrt(m * p * (1 - p)) + 2
  k_hi = math.floor(m * p - dev)  # rank in the sample of the upper end (fewer above: a higher key)
  k_lo = math.ceil(m * p + dev)
  hi = kth_largest_key([s], k_hi)[0] if k_hi >= 1 else jnp.uint32(_KEY_MAX)
  lo = kth_largest_key([s], k_lo)[0] if k_lo <= m else jnp.uint32(0)
  return lo, hi


def _approx_threshold(samples: jax.Array, k: int, total: int) -> jax.Array:
  """The approx-mode threshold key: the sample's k-th largest at the
  sample rank matching k of `total`."""
  return kth_largest_key([samples], _sample_k(k, total, samples.size))[0]


def _check_sizes(keys: Sequence[jax.Array]) -> None:
  for x in keys:
    if x.size > _INT32_MAX:
      raise ValueError(f"ignore_topk: a tensor of {x.size} entries exceeds the 2**31 - 1 limit"
                       " of its flat index")


def _masks_for(keys: list[jax.Array], fraction: float, mode: str, sample_size: int) -> list[jax.Array]:
  """Masks for `keys` ranked together (one tensor, or all for global scope)."""
  total = sum(x.size for x in keys)
  k = num_pruned(fraction, total)
  if k == 0:
    return [jnp.zeros(x.shape, bool) for x in keys]
  _check_sizes(keys)
  if mode == "approx" and total > sample_size:
    t = _approx_threshold(_samples(keys, sample_size), k, total)
    return [key >= t for key in keys]
  return _exact_masks(keys, k, sample_size)


# -- public functions ------------------------------------------------------------


def topk_masks(tree: Any, fraction: float, *, scope: str = "tensor", mode: str = "exact",
               sample_size: int = DEFAULT_SAMPLE_SIZE) -> Any:
  """Boolean masks, same structure as `tree`, True at the entries that
  ignore-top-k zeroes (see the module docstring for the rule)."""
  fraction = check_args(fraction, scope, mode, sample_size)
  leaves, treedef = jax.tree.flatten(tree)
  if scope == "global" and leaves:
    masks = _masks_for([magnitude_key(jnp.asarray(x)) for x in leaves], fraction, mode, sample_size)
  else:
    masks = _per_tensor_masks([jnp.asarray(x) for x in leaves], fraction, mode, sample_size)
  return jax.tree.unflatten(treedef, masks)


def _per_tensor_masks(leaves: list[jax.Array], fraction: float, mode: str,
                      sample_size: int) -> list[jax.Array]:
  """Masks per tensor; tensors of one shape (e.g. the same weight in every
  layer) are stacked and handled by one `vmap`ped search, which compiles
  once and runs one loop for all of them."""
  groups: dict[tuple, list[int]] = {}
  for i, x in enumerate(leaves):
    groups.setdefault(tuple(x.shape), []).append(i)
  masks: list[Any] = [None] * len(leaves)
  for idx in groups.values():
    keys = [magnitude_key(leaves[i]) for i in idx]
    size = keys[0].size
    k = num_pruned(fraction, size)
    _check_sizes(keys[:1])
    if k == 0:
      out = [jnp.zeros(key.shape, bool) for key in keys]
    elif mode == "approx" and size > sample_size:
      # only the samples are stacked; the mask fuses into the caller's where
      samples = jnp.stack([sample(key, sample_size) for key in keys])
      ts = jax.vmap(lambda s: _approx_threshold(s, k, size))(samples)
      out = [key >= ts[j] for j, key in enumerate(keys)]
    elif len(keys) == 1:
      out = _exact_masks(keys, k, sample_size)
    else:
      stacked = jax.vmap(lambda key: _exact_masks([key], k, sample_size)[0])(jnp.stack(keys))
      out = [stacked[j] for j in range(len(keys))]
    for j, i in enumerate(idx):
      masks[i] = out[j]
  return masks


def prune_topk(tree: Any, fraction: float, *, scope: str = "tensor", mode: str = "exact",
               sample_size: int = DEFAULT_SAMPLE_SIZE) -> Any:
  """`tree` with its largest-magnitude entries set to zero; others unchanged."""
  fraction = check_args(fraction, scope, mode, sample_size)
  if fraction == 0.0:
    return tree
  masks = topk_masks(tree, fraction, scope=scope, mode=mode, sample_size=sample_size)
  return jax.tree.map(lambda x, m: jnp.where(m, jnp.zeros((), x.dtype), x), tree, masks)


def prune_delta(params_before: Any, params_after: Any, fraction: float, *, scope: str = "tensor",
                mode: str = "exact", sample_size: int = DEFAULT_SAMPLE_SIZE) -> Any:
  """Whole-episode ignore-top-k: the delta `params_after - params_before`
  (computed in float32) is ranked once, and the result equals `params_after`
  (bit for bit) except at the pruned entries, which keep `params_before`."""
  fraction = check_args(fraction, scope, mode, sample_size)
  if jax.tree.structure(params_before) != jax.tree.structure(params_after):
    raise ValueError("prune_delta: params_before and params_after have different tree structures")
  if fraction == 0.0:
    return params_after

  def delta_shape_check(b, a):
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(f"prune_delta: shape {jnp.shape(b)} before vs {jnp.shape(a)} after")

  jax.tree.map(delta_shape_check, params_before, params_after)
  return _prune_delta(params_before, params_after, fraction, scope, mode, int(sample_size))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _prune_delta(params_before, params_after, fraction, scope, mode, sample_size):
  deltas = jax.tree.map(lambda b, a: jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32),
                        params_before, params_after)
  masks = topk_masks(deltas, fraction, scope=scope, mode=mode, sample_size=sample_size)
  keep = lambda b, a, m: jnp.where(m, jnp.asarray(b, a.dtype), a)
  return jax.tree.map(keep, params_before, params_after, masks)


def ignore_topk(fraction: float, *, scope: str = "tensor", mode: str = "exact",
                sample_size: int = DEFAULT_SAMPLE_SIZE) -> optax.GradientTransformation:
  """Optax transform zeroing the `round(fraction * size)` largest-magnitude
  entries of the incoming updates, per tensor (`scope="tensor"`) or over all
  of them (`scope="global"`). Chain it after the optimizer:
  `optax.chain(optax.adamw(lr), ignore_topk(0.08))`. Stateless.

  Args:
    fraction: share of entries zeroed, in [0, 1); 0 is the identity.
    scope: "tensor" | "global".
    mode: "exact" | "approx" (threshold from a strided sample; see module doc).
    sample_size: sample entries per tensor (per tree for global) in "approx",
      and for the starting bracket of "exact".
  """
  fraction = check_args(fraction, scope, mode, sample_size)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return prune_topk(updates, fraction, scope=scope, mode=mode, sample_size=sample_size), state

  return optax.GradientTransformation(init_fn, update_fn)
