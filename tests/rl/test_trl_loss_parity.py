"""pragjax's clipped policy-gradient loss against TRL's own GRPO loss arithmetic, on identical tensors.

`trl.GRPOTrainer._compute_loss(self, model, inputs)` (trl/trainer/grpo_trainer.py, TRL 1.16) is called
unbound with a stub `self` that holds only the attributes it reads, and whose
`_get_per_token_logps_and_entropies` returns the test's log-probs (a leaf tensor, so that the gradient
w.r.t. the per-token log-probs can be compared too). No model is involved. The stub's settings: one
process, no gradient accumulation, `steps_per_generation = 1`, token-level importance sampling, no vLLM,
no entropy bonus, no two-sided `delta` clip, no KL importance correction.

Matching configurations (see `pragjax.objectives.rl.policy_gradient_loss`):
- "grpo":    normalize="sequence" (TRL divides the sum of per-row means by all N rows, pragjax by the
             non-empty rows: equal when no row is empty, which these inputs ensure; the ratio with an
             empty row is checked too);
- "dr_grpo": normalize="constant", max_len = TRL's `max_completion_length` (here larger than T);
- "dapo":    normalize="token" (TRL's `num_items_in_batch` = the masked tokens of the batch).
"""

import types
from collections import defaultdict

import jax
import numpy as np
import pytest

from pragjax.objectives import rl

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e .[test] pins it)")
torch = pytest.importorskip("torch", reason="torch is not installed (TRL parity needs it)")
grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
trl_utils = pytest.importorskip("trl.trainer.utils")

N, T, G, MAX_COMPLETION = 8, 10, 4, 16
NORMALIZE = {"grpo": "sequence", "dr_grpo": "constant", "dapo": "token"}


class _Accelerator:
  num_processes = 1

  def gather(self, x):
    return x

  gather_for_metrics = gather

  def reduce(self, x, reduction="sum"):
    return x


def _stub(loss_type, beta, eps_low, eps_high, logp, entropy):
  def per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kwargs):
    assert logits_to_keep == logp.shape[1]
    return logp, entropy, None

  return types.SimpleNamespace(
      loss_type=loss_type, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high,
      max_completion_length=MAX_COMPLETION, importance_sampling_level="token", top_entropy_quantile=1.0,
      off_policy_mask_threshold=None, use_vllm=False, vllm_importance_sampling_correction=False,
      _entropy_bonus_enabled=False, aux_loss_enabled=False, current_gradient_accumulation_steps=1,
      model=types.SimpleNamespace(training=True), accelerator=_Accelerator(),
      _metrics=defaultdict(lambda: defaultdict(list)),
      args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
      _get_per_token_logps_and_entropies=per_token_logps_and_entropies)


def _inputs(seed, *, empty_row=None):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.05, 3.0, size=(N, T)).astype(np.float32)
  old = (logp + rng.normal(scale=0.25, size=(N, T))).astype(np.float32)
  ref = (logp + rng.normal(scale=0.5, size=(N, T))).astype(np.float32)
  mask = (np.arange(T)[None, :] < rng.integers(1, T + 1, size=N)[:, None]).astype(np.float32)
  if empty_row is not None:
    mask[empty_row] = 0.0
  rewards = rng.integers(0, 2, size=N).astype(np.float32) + rng.normal(scale=0.1, size=N).astype(np.float32)
  entropy = rng.uniform(0.0, 2.0, size=(N, T)).astype(np.float32)
  return logp, old, ref, mask, rewards, entropy


def _trl_loss(loss_type, logp, old, ref, mask, adv, entropy, *, beta, eps_low, eps_high):
  lp = torch.tensor(logp, requires_grad=True)
  stub = _stub(loss_type, beta, eps_low, eps_high, lp, torch.tensor(entropy))
  inputs = {"prompt_ids": torch.zeros((N, 2), dtype=torch.long), "prompt_mask": torch.ones((N, 2)),
            "completion_ids": torch.zeros((N, T), dtype=torch.long), "completion_mask": torch.tensor(mask),
            "advantages": torch.tensor(adv), "old_per_token_logps": torch.tensor(old),
            "ref_per_token_logps": torch.tensor(ref), "num_items_in_batch": torch.tensor(mask.sum())}
  loss = grpo_trainer.GRPOTrainer._compute_loss(stub, None, inputs)
  loss.backward()
  metrics = {k: v[-1] for k, v in stub._metrics["train"].items()}
  return float(loss.detach()), lp.grad.numpy(), metrics


def _trl_advantages(rewards, eps):
  """TRL's group advantages (grpo_trainer.py, `_generate_and_score_completions`, scale_rewards="group":
  `(r - nanmean(group)) / (nanstd(group) + 1e-4)`), written out here around TRL's own `nanstd`."""
  r = torch.tensor(rewards).view(-1, G)
  mean = torch.nanmean(r, dim=1).repeat_interleave(G)
  std = trl_utils.nanstd(r, dim=1).repeat_interleave(G)
  return ((torch.tensor(rewards) - mean) / (std + eps)).numpy()


def test_group_advantages_match_trl_nanstd():
  _, _, _, _, rewards, _ = _inputs(0)
  got = np.asarray(rl.group_advantages(rewards, group_size=G, eps=1e-4))
  np.testing.assert_allclose(got, _trl_advantages(rewards, 1e-4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28)], ids=["sym", "dapo"])
@pytest.mark.parametrize("loss_type", sorted(NORMALIZE))
def test_loss_gradient_and_metrics_match_trl(loss_type, clip, beta):
  logp, old, ref, mask, rewards, entropy = _inputs(1)
  adv = np.asarray(rl.group_advantages(rewards, group_size=G, eps=1e-4))
  want, want_grad, trl_metrics = _trl_loss(loss_type, logp, old, ref, mask, adv, entropy, beta=beta,
                                           eps_low=clip[0], eps_high=clip[1])

  def loss(lp):
    return rl.policy_gradient_loss(lp, old, adv, mask, ref_logp=ref, clip_low=clip[0], clip_high=clip[1],
                                   kl_coef=beta, normalize=NORMALIZE[loss_type], max_len=MAX_COMPLETION,
                                   entropy=entropy)

  (got, metrics), grad = jax.value_and_grad(loss, has_aux=True)(logp)
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)
  assert trl_metrics["clip_ratio/region_mean"] > 0  # the inputs do clip
  np.testing.assert_allclose(float(metrics["clip_fraction"]), trl_metrics["clip_ratio/region_mean"], rtol=1e-6)
  np.testing.assert_allclose(float(metrics["clip_low_fraction"]), trl_metrics["clip_ratio/low_mean"], rtol=1e-6)
  np.testing.assert_allclose(float(metrics["clip_high_fraction"]), trl_metrics["clip_ratio/high_mean"], rtol=1e-6)
  np.testing.assert_allclose(float(metrics["entropy"]), trl_metrics["entropy"], rtol=1e-5)
  if beta:
    np.testing.assert_allclose(float(metrics["kl"]), trl_metrics["kl"], rtol=1e-5)


def test_grpo_with_an_empty_row_differs_by_the_documented_row_count():
  """TRL's "grpo" averages per-row means over all N rows, pragjax's "sequence" over the non-empty ones."""
  logp, old, ref, mask, rewards, entropy = _inputs(2, empty_row=3)
  adv = np.asarray(rl.group_advantages(rewards, group_size=G, eps=1e-4))
  want, _, _ = _trl_loss("grpo", logp, old, ref, mask, adv, entropy, beta=0.04, eps_low=0.2, eps_high=0.2)
  got, _ = rl.policy_gradient_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.04, normalize="sequence")
  np.testing.assert_allclose(float(got) * (N - 1) / N, want, rtol=1e-5, atol=1e-6)
