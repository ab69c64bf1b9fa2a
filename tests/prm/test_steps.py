"""Step ends from tokenized prefixes agree with the tokenization of the whole text, for several tokenizers."""

import numpy as np
import pytest
import tokenizers
from tokenizers import models

from pragjax.data.errors import DataError
from pragjax.methods.prm import steps as steps_lib
from pragjax.models.tokenizer import Tokenizer, build_word_level_tokenizer, train_bpe_tokenizer
from pragjax.toyworld import arithmetic

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

STEPS = ["First, 18 / 3 = 6 flamingos.", "Then 18 - 6 = 12 pink ones remain.\nSo we add 18: 30.",
         "", "The answer is $\\boxed{24}$.  "]


def _bpe(chat: bool = False) -> Tokenizer:
  texts = [" ".join(STEPS) * 3, "The answer is 42.\n\nStep 2: add numbers", "flamingos pink white " * 20]
  tok = train_bpe_tokenizer(texts, vocab_size=400)
  if chat:
    tok.chat_template = CHAT_TEMPLATE
  return tok


def _word() -> Tokenizer:
  words = sorted({w for s in STEPS for w in s.split()} | {"Sue", "has", "flamingos?"})
  return build_word_level_tokenizer(words)


TOKENIZERS = {"char": arithmetic.tokenizer, "bpe": _bpe, "bpe_chat": lambda: _bpe(True), "word": _word}


def _check_against_whole(tok, prompt, response, char_ends, exact_decode, add_eos=True):
  enc = steps_lib.encode_solution(tok, prompt, response, char_ends, add_eos=add_eos)
  p_ids, r_ids = steps_lib.prompt_and_response_ids(tok, prompt, response, add_eos=add_eos)
  whole = p_ids + r_ids
  assert list(enc.input_ids) == whole
  assert list(enc.response_mask) == [0] * len(p_ids) + [1] * len(r_ids)
  assert len(enc.step_end) == len(char_ends) and enc.boundary_merges == 0
  assert np.all(np.diff(enc.step_end) >= 0)
  for k, (end, c) in enumerate(zip(enc.step_end, char_ends)):
    if add_eos and k == len(char_ends) - 1:
      assert end == len(whole) - 1 and whole[end] == tok.eos_token_id
      continue
    prefix = tok.encode(response[:c], add_special_tokens=False) if c else []
    assert whole[len(p_ids):end + 1] == prefix, f"step {k}"
    if exact_decode:
      assert tok.decode(whole[len(p_ids):end + 1]) == response[:c]
  return enc


@pytest.mark.parametrize("name", ["char", "bpe", "bpe_chat", "word"])
def test_step_ends_match_whole_tokenization(name):
  tok = TOKENIZERS[name]()
  if name == "char":
    problem = arithmetic.sample_problem(np.random.default_rng(0))
    prompt, response = problem.prompt, problem.solution
    ends = steps_lib.split_response(response, arithmetic.STEP_SEPARATOR)
    assert len(ends) == len(arithmetic.split_steps(response))
  else:
    prompt = "Sue has 18 flamingos?"
    response, ends = steps_lib.join_steps(STEPS, "\n\n")
  enc = _check_against_whole(tok, prompt, response, ends, exact_decode=name != "word")
  _check_against_whole(tok, prompt, response, ends, exact_decode=name != "word", add_eos=False)
  if name == "bpe_chat":
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    assert tok.decode(enc.input_ids[:int(np.argmax(enc.response_mask))], skip_special_tokens=False) == rendered


def test_chat_template_can_be_forced_off():
  tok = _bpe(True)
  on = steps_lib.encode_steps(tok, "q", ["a", "b"])
  off = steps_lib.encode_steps(tok, "q", ["a", "b"], chat_template=False)
  assert len(on.input_ids) > len(off.input_ids)
  with pytest.raises(DataError, match="no chat template"):
    steps_lib.encode_steps(_bpe(False), "q", ["a"], chat_template=True)


def test_join_and_split():
  text, ends = steps_lib.join_steps(["ab", "", "c"], "\n\n")
  assert text == "ab\n\n\n\nc" and ends == [4, 6, 7]
  assert steps_lib.join_steps(["a", "b"], "\n", trailing_separator=True) == ("a\nb\n", [2, 4])
  assert steps_lib.split_response("a\nb\n#3\n", "\n") == [2, 4, 7]
  assert steps_lib.split_response("a\nb", "\n") == [2, 3]
  assert steps_lib.split_response("", "\n") == []


def test_empty_first_step_and_truncation():
  tok = arithmetic.tokenizer()
  enc = steps_lib.encode_solution(tok, "a?\n", "\nx=1\n", [1, 5], add_eos=False)
  # BOS a ? \n | \n x = 1 \n : the empty-ish first step is the newline at index 4.
  assert list(enc.step_end) == [4, 8]
  enc0 = steps_lib.encode_solution(tok, "a?\n", "x=1\n", [0, 4], add_eos=False)
  assert list(enc0.step_end) == [3, 7]  # an empty first step ends at the last prompt token (reward 0)
  short = steps_lib.encode_solution(tok, "a?\n", "x=1\ny=2\n", [4, 8], max_length=9)
  assert len(short.input_ids) == 9 and list(short.step_end) == [7] and short.num_steps == 2


def test_boundary_merge_is_counted_not_guessed():
  backend = tokenizers.Tokenizer(models.BPE(vocab={"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4},
                                            merges=[("a", "b")]))
  tok = Tokenizer(backend, bos_token="<s>", eos_token="</s>")
  enc = steps_lib.encode_solution(tok, "b", "aab", [2, 3], add_eos=False)
  # Whole response "aab" -> [a, ab]; the prefix "aa" -> [a, a] differs at its last token,
  # so step 0 ends at the shared token "a" and the merged "ab" belongs to step 1.
  assert enc.boundary_merges == 1
  assert list(enc.input_ids) == [3, 2, 4] and list(enc.step_end) == [1, 2]


def test_collate_solutions_pads_and_masks():
  tok = arithmetic.tokenizer()
  a = steps_lib.encode_solution(tok, "a?\n", "x=1\n#1\n", [4, 7])
  b = steps_lib.encode_solution(tok, "a?\n", "#1\n", [3])
  batch = steps_lib.collate_solutions([a, b], tok.pad_token_id, pad_to_multiple_of=8, steps_multiple_of=4)
  assert batch["input_ids"].shape == (2, 16) and batch["step_end"].shape == (2, 4)
  assert batch["step_mask"].tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]
  assert batch["attention_mask"][1].sum() == len(b.input_ids)
  with pytest.raises(DataError, match="more than the batch"):
    steps_lib.collate_solutions([a], tok.pad_token_id, seq_len=4)
