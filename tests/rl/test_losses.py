"""`pragjax.objectives.rl` against plain numpy transcriptions (loops) of its equations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.objectives import rl

B, G, T, MAX_LEN = 3, 4, 9, 12
N = B * G


# -- numpy transcriptions, one element at a time -----------------------------------------------------------------


def np_advantages(r, g, scale, baseline, eps, ddof=1):
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  for start in range(0, len(r), g):
    group = [float(x) for x in r[start:start + g]]
    mean = sum(group) / g
    std = (sum((x - mean) ** 2 for x in group) / (g - ddof)) ** 0.5 if g > ddof else float("nan")
    for i, x in enumerate(group):
      if baseline == "mean":
        b = mean
      else:
        b = sum(y for j, y in enumerate(group) if j != i) / (g - 1)
      out[start + i] = (x - b) / (std + eps) if scale == "std" else x - b
  return out


def np_token_terms(logp, old, adv, mask, ref, clip_low, clip_high, kl_coef):
  """Per masked token: (row, loss term, ratio, clipped-is-active, k3 KL, d loss term / d logp)."""
  terms = []
  for i in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      if not mask[i, t]:
        continue
      rho = np.exp(float(logp[i, t]) - float(old[i, t]))
      a = float(adv[i])
      unclipped = rho * a
      clipped = min(max(rho, 1 - clip_low), 1 + clip_high) * a
      objective = min(unclipped, clipped)
      grad = -rho * a if unclipped <= clipped else 0.0  # d(-objective)/d logp
      k3 = 0.0
      if ref is not None:
        d = float(ref[i, t]) - float(logp[i, t])
        k3 = np.exp(d) - d - 1
        grad += kl_coef * (1 - np.exp(d))
      terms.append((i, -objective + kl_coef * k3, rho, clipped < unclipped, k3, grad))
  return terms


def np_loss_and_grad(logp, old, adv, mask, ref=None, *, clip_low=0.2, clip_high=0.2, kl_coef=0.0,
                     normalize="sequence", max_len=None):
  """The loss and its gradient with respect to logp [N, T]."""
  terms = np_token_terms(logp, old, adv, mask, ref, clip_low, clip_high, kl_coef)
  n = logp.shape[0]
  count = {i: sum(1 for r, *_ in terms if r == i) for i in range(n)}
  rows = [i for i in range(n) if count[i] > 0]
  if normalize == "sequence":
    weight = {i: 1.0 / (count[i] * len(rows)) for i in rows}
  elif normalize == "token":
    weight = {i: 1.0 / len(terms) for i in rows}
  else:
    weight = {i: 1.0 / (n * max_len) for i in rows}
  loss = sum(weight[i] * term for i, term, *_ in terms)
  grad = np.zeros(logp.shape)
  k = 0
  for i in range(n):
    for t in range(logp.shape[1]):
      if mask[i, t]:
        grad[i, t] = weight[i] * terms[k][5]
        k += 1
  return loss, grad


def np_metrics(logp, old, adv, mask, ref=None, entropy=None, *, clip_low=0.2, clip_high=0.2):
  terms = np_token_terms(logp, old, adv, mask, ref, clip_low, clip_high, 0.0)
  k = len(terms)
  rows = sorted({i for i, *_ in terms})
  a = [float(adv[i]) for i in rows]
  mean = sum(a) / len(a)
  out = {"clip_fraction": sum(active for _, _, _, active, _, _ in terms) / k,
         "kl": sum(k3 for _, _, _, _, k3, _ in terms) / k,
         "ratio_mean": sum(rho for _, _, rho, _, _, _ in terms) / k, "advantage_mean": mean,
         "advantage_std": (sum((x - mean) ** 2 for x in a) / len(a)) ** 0.5}
  low = high = 0
  for i, _, rho, _, _, _ in terms:
    low += rho < 1 - clip_low and adv[i] < 0
    high += rho > 1 + clip_high and adv[i] > 0
  out["clip_low_fraction"], out["clip_high_fraction"] = low / k, high / k
  if entropy is not None:
    out["entropy"] = sum(float(entropy[i, t]) for i in range(mask.shape[0]) for t in range(mask.shape[1])
                         if mask[i, t]) / k
  return out


# -- random rollouts -----------------------------------------------------------------------------------------------


def rollout(seed, *, n=N, t=T, empty_rows=(4,)):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.05, 3.0, size=(n, t)).astype(np.float32)
  old = (logp + rng.normal(scale=0.25, size=(n, t))).astype(np.float32)  # ratios around 1, some clipped
  ref = (logp + rng.normal(scale=0.5, size=(n, t))).astype(np.float32)
  lengths = rng.integers(1, t + 1, size=n)
  mask = np.arange(t)[None, :] < lengths[:, None]
  for i in empty_rows:
    mask[i] = False
  rewards = rng.integers(0, 2, size=n).astype(np.float32) + rng.normal(scale=0.1, size=n).astype(np.float32)
  entropy = rng.uniform(0.0, 2.0, size=(n, t)).astype(np.float32)
  return {"logp": logp, "old": old, "ref": ref, "mask": mask, "rewards": rewards, "entropy": entropy}


KL_CASES = {"no_ref": (False, 0.0), "ref_no_kl": (True, 0.0), "ref_kl": (True, 0.05)}


# -- advantages ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", rl.SCALES)
@pytest.mark.parametrize("baseline", rl.BASELINES)
def test_advantages_equal_numpy(baseline, scale):
  r = rollout(0)["rewards"]
  got = np.asarray(rl.group_advantages(r, group_size=G, scale=scale, baseline=baseline))
  np.testing.assert_allclose(got, np_advantages(r, G, scale, baseline, 1e-6), rtol=1e-5, atol=1e-6)
  if scale == "std":
    got = np.asarray(rl.group_advantages(r, group_size=G, scale=scale, baseline=baseline, std_ddof=0, eps=1e-4))
    np.testing.assert_allclose(got, np_advantages(r, G, scale, baseline, 1e-4, ddof=0), rtol=1e-5, atol=1e-6)


def test_advantages_of_equal_rewards_are_zero_and_leave_one_out_rescales_the_mean():
  r = np.array([1, 1, 1, 1, 0, 1, 0, 0], np.float32)
  adv = np.asarray(rl.group_advantages(r, group_size=4))
  np.testing.assert_array_equal(adv[:4], 0.0)
  mean = np.asarray(rl.group_advantages(r, group_size=4, scale="none"))
  loo = np.asarray(rl.group_advantages(r, group_size=4, scale="none", baseline="leave_one_out"))
  np.testing.assert_allclose(loo, mean * 4 / 3, rtol=1e-6)


def test_advantage_errors():
  r = np.zeros(6, np.float32)
  with pytest.raises(ValueError, match="divisor"):
    rl.group_advantages(r, group_size=4)
  with pytest.raises(ValueError, match="divisor"):
    rl.group_advantages(r, group_size=0)
  with pytest.raises(ValueError, match="leave-one-out baseline needs group_size >= 2"):
    rl.group_advantages(r, group_size=1, scale="none", baseline="leave_one_out")
  with pytest.raises(ValueError, match="std_ddof=1 needs group_size > 1"):
    rl.group_advantages(r, group_size=1)
  with pytest.raises(ValueError, match="unknown scale"):
    rl.group_advantages(r, group_size=2, scale="batch")
  with pytest.raises(ValueError, match="unknown baseline"):
    rl.group_advantages(r, group_size=2, baseline="median")
  with pytest.raises(ValueError, match="1-D"):
    rl.group_advantages(r.reshape(2, 3), group_size=3)
  np.testing.assert_array_equal(np.asarray(rl.group_advantages(r, group_size=1, scale="none")), 0.0)


# -- the clipped loss ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28)], ids=["sym", "dapo"])
@pytest.mark.parametrize("kl", sorted(KL_CASES))
@pytest.mark.parametrize("scale", rl.SCALES)
@pytest.mark.parametrize("baseline", rl.BASELINES)
@pytest.mark.parametrize("normalize", rl.NORMALIZERS)
def test_loss_and_gradient_equal_numpy(normalize, baseline, scale, kl, clip):
  x = rollout(1)
  adv = np_advantages(x["rewards"], G, scale, baseline, 1e-6).astype(np.float32)
  use_ref, kl_coef = KL_CASES[kl]
  ref = x["ref"] if use_ref else None
  max_len = MAX_LEN if normalize == "constant" else None
  kw = dict(clip_low=clip[0], clip_high=clip[1], kl_coef=kl_coef, normalize=normalize, max_len=max_len)

  def loss(lp):
    return rl.policy_gradient_loss(lp, x["old"], adv, x["mask"], ref_logp=ref, **kw)[0]

  got, grad = jax.value_and_grad(loss)(jnp.asarray(x["logp"]))
  want, want_grad = np_loss_and_grad(x["logp"], x["old"], adv, x["mask"], ref, **kw)
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28)], ids=["sym", "dapo"])
def test_metrics_equal_numpy(clip):
  x = rollout(2)
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6).astype(np.float32)
  _, m = rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"], ref_logp=x["ref"], entropy=x["entropy"],
                                 clip_low=clip[0], clip_high=clip[1], kl_coef=0.1)
  want = np_metrics(x["logp"], x["old"], adv, x["mask"], x["ref"], x["entropy"], clip_low=clip[0], clip_high=clip[1])
  assert 0.05 < want["clip_fraction"] < 0.6  # the rollout does exercise clipping
  assert want["clip_fraction"] == pytest.approx(want["clip_low_fraction"] + want["clip_high_fraction"])
  for k, v in want.items():
    np.testing.assert_allclose(float(m[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)
  assert float(m["loss_weight"]) == N - 1  # non-empty rows, "sequence"
  _, m = rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"])
  assert float(m["kl"]) == 0.0 and "entropy" not in m
  _, m = rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"], normalize="token")
  assert float(m["loss_weight"]) == x["mask"].sum()
  _, m = rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"], normalize="constant", max_len=MAX_LEN)
  assert float(m["loss_weight"]) == N


@pytest.mark.parametrize("normalize", rl.NORMALIZERS)
def test_fully_masked_rows_give_no_nan_and_no_contribution(normalize):
  x = rollout(3, empty_rows=(0, 5, 6))
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6).astype(np.float32)
  logp = x["logp"].copy()
  logp[~x["mask"]] = -np.inf  # what padding may hold: must not leak into the loss
  kw = dict(ref_logp=x["ref"], kl_coef=0.05, normalize=normalize, max_len=MAX_LEN)
  loss = lambda lp, a, m: rl.policy_gradient_loss(lp, x["old"], a, m, **kw)[0]
  value, grad = jax.value_and_grad(loss)(jnp.asarray(logp), adv, x["mask"])
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_array_equal(np.asarray(grad)[~x["mask"]], 0.0)
  want, _ = np_loss_and_grad(x["logp"], x["old"], adv, x["mask"], x["ref"], kl_coef=0.05, normalize=normalize,
                             max_len=MAX_LEN)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  if normalize != "constant":  # the constant normaliser counts every row, by definition
    keep = x["mask"].any(-1)
    sub = rl.policy_gradient_loss(x["logp"][keep], x["old"][keep], adv[keep], x["mask"][keep],
                                  ref_logp=x["ref"][keep], kl_coef=0.05, normalize=normalize)[0]
    np.testing.assert_allclose(float(value), float(sub), rtol=1e-6)
  # Nothing masked at all: loss 0, finite metrics.
  none = np.zeros_like(x["mask"])
  value, m = rl.policy_gradient_loss(logp, x["old"], adv, none, entropy=x["entropy"], **kw)
  assert float(value) == 0.0
  assert all(np.isfinite(float(v)) for v in m.values())


@pytest.mark.parametrize("normalize", rl.NORMALIZERS)
def test_on_policy_ratio_is_one_and_gradient_is_reinforce(normalize):
  x = rollout(4)
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6).astype(np.float32)
  mask = x["mask"]
  max_len = MAX_LEN if normalize == "constant" else None

  def clipped(lp):
    loss, m = rl.policy_gradient_loss(lp, lp, adv, mask, clip_low=0.2, clip_high=0.28, normalize=normalize,
                                      max_len=max_len)
    return loss, m

  def reinforce(lp):  # -(A * logp), reduced by the same normaliser
    per = jnp.where(mask, -adv[:, None] * lp, 0.0)
    count = mask.sum(-1)
    if normalize == "sequence":
      rows = count > 0
      return jnp.sum(jnp.where(rows, per.sum(-1) / np.maximum(count, 1), 0.0)) / rows.sum()
    if normalize == "token":
      return jnp.sum(per) / mask.sum()
    return jnp.sum(per) / (N * MAX_LEN)

  lp = jnp.asarray(x["logp"])
  (_, m), g_clip = jax.value_and_grad(clipped, has_aux=True)(lp)
  assert float(m["ratio_mean"]) == 1.0 and float(m["clip_fraction"]) == 0.0
  ratio = jnp.exp(lp - jax.lax.stop_gradient(lp))
  np.testing.assert_array_equal(np.asarray(ratio), 1.0)
  np.testing.assert_allclose(np.asarray(g_clip), np.asarray(jax.grad(reinforce)(lp)), rtol=1e-6, atol=1e-9)


def test_gradient_flows_through_logp_only():
  x = rollout(5)
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6).astype(np.float32)

  def loss(old, a, ref, ent):
    return rl.policy_gradient_loss(x["logp"], old, a, x["mask"], ref_logp=ref, kl_coef=0.1, entropy=ent)[0]

  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(x["old"], adv, x["ref"], x["entropy"])
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("normalize", rl.NORMALIZERS)
def test_loss_weight_makes_accumulation_equal_the_full_batch(normalize):
  """make_train_step's accumulation: micro-batch losses and gradients averaged with their `loss_weight`."""
  x = rollout(6, empty_rows=(1, 7))
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6).astype(np.float32)
  kw = dict(ref_logp=None, normalize=normalize, max_len=MAX_LEN)

  def loss(lp, old, a, m):
    value, metrics = rl.policy_gradient_loss(lp, old, a, m, **kw)
    return value, metrics["loss_weight"]

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  (full, _), g_full = grad_fn(x["logp"], x["old"], adv, x["mask"])
  acc_l, acc_g, acc_w = 0.0, 0.0, 0.0
  for half in (slice(0, N // 2), slice(N // 2, N)):
    (l, w), g = grad_fn(x["logp"][half], x["old"][half], adv[half], x["mask"][half])
    acc_l, acc_w = acc_l + w * l, acc_w + w
    acc_g = acc_g + w * np.pad(np.asarray(g), ((half.start, N - half.stop), (0, 0)))
  np.testing.assert_allclose(float(acc_l / acc_w), float(full), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(acc_g / acc_w), np.asarray(g_full), rtol=1e-5, atol=1e-9)


def test_float32_whatever_the_input_dtype():
  x = rollout(7)
  adv = np_advantages(x["rewards"], G, "std", "mean", 1e-6)
  b = lambda a: jnp.asarray(a, jnp.bfloat16)
  loss, m = rl.policy_gradient_loss(b(x["logp"]), b(x["old"]), b(adv), x["mask"], ref_logp=b(x["ref"]), kl_coef=0.1)
  assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in m.values())
  assert rl.group_advantages(b(x["rewards"]), group_size=G).dtype == jnp.float32


def test_jit_equals_eager():
  x = rollout(8)

  @functools.partial(jax.jit, static_argnames=("normalize",))
  def step(rewards, logp, old, ref, mask, normalize):
    adv = rl.group_advantages(rewards, group_size=G, baseline="leave_one_out")
    return rl.policy_gradient_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.05, clip_high=0.28,
                                   normalize=normalize, max_len=MAX_LEN)

  for normalize in rl.NORMALIZERS:
    got = step(x["rewards"], x["logp"], x["old"], x["ref"], x["mask"], normalize)
    adv = rl.group_advantages(x["rewards"], group_size=G, baseline="leave_one_out")
    want = rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"], ref_logp=x["ref"], kl_coef=0.05,
                                   clip_high=0.28, normalize=normalize, max_len=MAX_LEN)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6), got, want)


def test_loss_errors():
  x = rollout(9)
  adv = np.zeros(N, np.float32)
  args = (x["logp"], x["old"], adv, x["mask"])
  with pytest.raises(ValueError, match="unknown normalize 'batch'"):
    rl.policy_gradient_loss(*args, normalize="batch")
  with pytest.raises(ValueError, match="needs a positive max_len"):
    rl.policy_gradient_loss(*args, normalize="constant")
  with pytest.raises(ValueError, match="needs a positive max_len"):
    rl.policy_gradient_loss(*args, normalize="constant", max_len=0)
  with pytest.raises(ValueError, match="needs ref_logp"):
    rl.policy_gradient_loss(*args, kl_coef=0.1)
  with pytest.raises(ValueError, match="advantages must be"):
    rl.policy_gradient_loss(x["logp"], x["old"], adv[:-1], x["mask"])
  with pytest.raises(ValueError, match="mask must have the shape"):
    rl.policy_gradient_loss(x["logp"], x["old"], adv, x["mask"][:, :-1])
  with pytest.raises(ValueError, match="ref_logp must have the shape"):
    rl.policy_gradient_loss(*args, ref_logp=x["ref"][:-1])
  with pytest.raises(ValueError, match=r"logp must be \[N, T\]"):
    rl.policy_gradient_loss(x["logp"][0], x["old"][0], adv, x["mask"][0])
