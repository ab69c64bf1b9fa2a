"""Preference pairs: the three record shapes, response-only loss masks, drops, and errors naming file, line, field."""

import json

import numpy as np
import pytest

from pragjax.data import DataError
from pragjax.methods.preference import data as pref_data
from pragjax.methods.preference import toy
from pragjax.models.tokenizer import build_word_level_tokenizer
from pragjax.toyworld import arithmetic

WORDS = "hi there how are you fine thanks bye see ya user assistant system <|im_start|> <|im_end|> a b c d e".split()
TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def _tok():
  tok = build_word_level_tokenizer(WORDS)
  tok.chat_template = TEMPLATE
  return tok


def _words(tok, ids):
  return [tok.backend.id_to_token(int(i)) for i in ids]


def _targets(tok, ex):
  return _words(tok, ex["input_ids"][ex["loss_mask"] == 1])


def _user(text):
  return {"role": "user", "content": text}


def _bot(text):
  return {"role": "assistant", "content": text}


def test_string_pairs_train_on_the_responses_and_eos():
  tok = _tok()
  pair = pref_data.parse_pair({"prompt": "hi there", "chosen": "fine thanks", "rejected": "bye"})
  chosen, rejected = pref_data.tokenize_pair(pair, tok, max_length=32)
  assert _words(tok, chosen["input_ids"]) == ["<s>", "hi", "there", "fine", "thanks", "</s>"]
  assert _targets(tok, chosen) == ["fine", "thanks", "</s>"]
  assert _words(tok, rejected["input_ids"]) == ["<s>", "hi", "there", "bye", "</s>"]
  assert _targets(tok, rejected) == ["bye", "</s>"]
  assert chosen["input_ids"].dtype == np.int32 and chosen["loss_mask"].dtype == np.int32


def test_chat_pairs_share_their_prompt_turns_and_mask_them():
  tok = _tok()
  prompt = [{"role": "system", "content": "see ya"}, _user("hi"), _bot("fine"), _user("how are you")]
  record = {"chosen": prompt + [_bot("fine thanks")], "rejected": prompt + [_bot("bye")]}
  pair = pref_data.parse_pair(record)
  assert pair["format"] == "chat" and pair["prompt"] == prompt
  assert pair["chosen"] == [_bot("fine thanks")] and pair["rejected"] == [_bot("bye")]
  chosen, rejected = pref_data.tokenize_pair(pair, tok, max_length=64)
  # The prompt's own assistant turn ("fine") is context: only the response turn and its end-of-turn are targets.
  assert _targets(tok, chosen) == ["fine", "thanks", "<|im_end|>"]
  assert _targets(tok, rejected) == ["bye", "<|im_end|>"]
  assert _words(tok, chosen["input_ids"]) == tok.apply_chat_template(record["chosen"]).split()
  # The same tokens as the explicit-prompt shape.
  explicit = pref_data.parse_pair({"prompt": prompt, "chosen": [_bot("fine thanks")], "rejected": [_bot("bye")]})
  for a, b in zip(pref_data.tokenize_pair(explicit, tok, max_length=64), (chosen, rejected)):
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])


def test_multi_turn_responses_train_on_their_assistant_turns_only():
  tok = _tok()
  record = {"prompt": [_user("hi")], "chosen": [_bot("fine"), _user("bye"), _bot("see ya")],
            "rejected": [_bot("a b")]}
  chosen, _ = pref_data.tokenize_pair(pref_data.parse_pair(record), tok, max_length=64)
  assert _targets(tok, chosen) == ["fine", "<|im_end|>", "see", "ya", "<|im_end|>"]


def test_pairs_that_do_not_fit_are_dropped():
  tok = _tok()
  pair = pref_data.parse_pair({"prompt": "hi", "chosen": "a b c d", "rejected": "e"})
  assert pref_data.tokenize_pair(pair, tok, max_length=7) is not None  # <s> hi a b c d </s>
  assert pref_data.tokenize_pair(pair, tok, max_length=6) is None  # the chosen side's EOS would be cut


@pytest.mark.parametrize("record, match", [
    ({"prompt": "hi", "chosen": "a"}, "missing field 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
    ({"prompt": "hi", "chosen": "a", "rejected": 3}, "field 'rejected' must be a string"),
    ({"prompt": ["hi"], "chosen": "a", "rejected": "b"}, "field 'prompt' must be a string"),
    ({"chosen": [_user("hi"), _bot("a")], "rejected": [_user("hi"), {"role": "assistant"}]},
     r"missing field rejected\[1\].content"),
    ({"chosen": [_user("hi"), _bot("a")], "rejected": [_user("hi"), _bot("a")]},
     "field 'chosen' has no 'assistant' message after the turns both sides share"),
    ({"prompt": [_user("hi")], "chosen": [_user("a")], "rejected": [_bot("b")]},
     "field 'chosen' has no 'assistant' message, so"),
    ({"chosen": [_user("hi"), _bot("a")], "rejected": {"role": "assistant"}}, "field 'rejected' must be a string or"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_records_name_the_field(record, match):
  with pytest.raises(DataError, match=match):
    pref_data.parse_pair(record, "record 0")


def test_errors_in_files_name_file_and_line(tmp_path):
  path = tmp_path / "pairs.jsonl"
  good = {"prompt": "hi", "chosen": "a", "rejected": "b"}
  path.write_text(json.dumps(good) + "\n\n" + json.dumps({"prompt": "hi", "chosen": "a"}) + "\n")
  src = pref_data.PairSource(str(path))
  assert len(src) == 2 and src[0]["chosen"] == "a"
  with pytest.raises(DataError, match=rf"{path}, line 3: missing field 'rejected'"):
    pref_data.validate_pairs(str(path))
  path.write_text(json.dumps(good) + "\nnot json\n")
  with pytest.raises(DataError, match=rf"{path}, line 2: invalid JSON"):
    pref_data.read_pairs(str(path))


def test_a_chat_template_that_does_not_render_incrementally_names_the_record():
  tok = _tok()
  tok.chat_template = "{% for m in messages %}{% if loop.last %}{{ m['content'] }} {% endif %}{% endfor %}"
  src = pref_data.PairSource([{"chosen": [_user("hi"), _bot("a")], "rejected": [_user("hi"), _bot("b")]}])
  with pytest.raises(DataError, match="record 0, chosen: .*not a prefix"):
    pref_data.pair_group(src, tok, max_length=32)(0)


def test_toy_pairs_are_gold_over_a_carried_slip():
  problems = arithmetic.heldout_problems(0, 50)
  pairs = toy.pairs(problems, seed=1)
  for p, pair in zip(problems, pairs):
    assert pair["chosen"] == p.solution and pair["prompt"] == p.prompt
    assert arithmetic.first_error(p, pair["rejected"]) == pair["slip_step"]
    assert not arithmetic.is_correct(p, pair["rejected"])
    # Every step after the slip is right for the slipped value: the rest of the chain is consistent.
    steps = [arithmetic.parse_step(s) for s in arithmetic.split_steps(pair["rejected"])[:-1]]
    assert all(s is not None and arithmetic.apply_op(s.op, s.left, s.right) == s.result
               for i, s in enumerate(steps) if i != pair["slip_step"])
  assert len({pair["slip_step"] for pair in pairs}) > 1
  assert toy.training_pairs(0, 5) == toy.training_pairs(0, 5)
