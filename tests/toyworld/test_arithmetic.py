"""Tests for pragjax.toyworld.arithmetic and the character-level tokenizer."""

import math
import re

import numpy as np
import pytest

from pragjax.models.tokenizer import Tokenizer, TokenizerError
from pragjax.toyworld import arithmetic as ar
from pragjax.toyworld.tokenizer import char_tokenizer

N_PROBLEMS = 500
_LINE_RE = re.compile(r"([a-z])=(\d+)([-+*])(\d+)=(\d+)")


@pytest.fixture(scope="module")
def problems():
  rng = np.random.default_rng(0)
  return [ar.sample_problem(rng) for _ in range(N_PROBLEMS)]


def _evaluate_prompt(prompt):
  """Independent reading of a prompt: variable values and the queried variable."""
  assert prompt.endswith("?\n"), prompt
  given, *operations, query = prompt[:-2].split(";")
  values = {}
  for item in given.split(","):
    name, value = item.split("=")
    values[name] = int(value)
  for op_text in operations:
    target, expr = op_text.split("=")
    left, op, right = re.fullmatch(r"([a-z]|\d+)([-+*])([a-z]|\d+)", expr).groups()
    lv, rv = (values[x] if x.isalpha() else int(x) for x in (left, right))
    values[target] = {"+": lv + rv, "-": lv - rv, "*": lv * rv}[op]
  return values, query


def _replace_line(problem, index, line):
  steps = list(problem.gold_steps)
  steps[index] = line
  return "".join(s + "\n" for s in steps)


def _with_numbers(line, left=None, right=None, result=None, op=None, target=None):
  t, lv, o, rv, res = _LINE_RE.fullmatch(line).groups()
  return (f"{target or t}={lv if left is None else left}{op or o}{rv if right is None else right}="
          f"{res if result is None else result}")


def _wrong(value):
  return value + 1 if value < 99 else value - 1


# Gold solutions.

def test_gold_solutions_verify(problems):
  for p in problems:
    solution = p.solution
    assert ar.first_error(p, solution) == -1, p.text
    assert ar.is_correct(p, solution)
    assert ar.extract_answer(solution) == p.answer
    steps = ar.split_steps(solution)
    assert steps == list(p.gold_steps) and len(steps) == len(p.operations) + 1
    assert all(ar.verify_step(p, i, s, steps[:i]) for i, s in enumerate(steps))


def test_prompt_and_solution_agree_with_an_independent_evaluation(problems):
  for p in problems:
    values, query = _evaluate_prompt(p.prompt)
    assert values == p.values
    assert query == p.operations[-1].target and values[query] == p.answer
    for line, o in zip(p.gold_steps, p.operations):
      t, lv, op, rv, res = _LINE_RE.fullmatch(line).groups()
      assert (t, op, int(res)) == (o.target, o.op, values[o.target])
      assert {"+": int(lv) + int(rv), "-": int(lv) - int(rv), "*": int(lv) * int(rv)}[op] == int(res)
    assert p.gold_steps[-1] == f"#{p.answer}"
    assert p.text == p.prompt + p.solution and p.solution.endswith("\n")


def test_format_example():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b"), ar.Operation("d", "*", "c", 2),
                                              ar.Operation("e", "-", "d", "b")])
  assert p.prompt == "a=3,b=5;c=a+b;d=c*2;e=d-b;e?\n"
  assert p.solution == "c=3+5=8\nd=8*2=16\ne=16-5=11\n#11\n"
  assert p.answer == 11 and p.results == (8, 16, 11)


def test_values_stay_in_range_and_steps_form_a_chain():
  rng = np.random.default_rng(1)
  ops_seen = set()
  for max_value in (99, 20):
    for _ in range(1000):
      p = ar.sample_problem(rng, max_value=max_value, max_input=min(50, max_value))
      constants = [x for o in p.operations for x in (o.left, o.right) if isinstance(x, int)]
      assert all(0 <= v <= max_value for v in [*p.values.values(), *constants]), p.text
      assert 2 <= len(p.operations) <= 4 and 2 <= len(p.inputs) <= 3
      for prev, o in zip(p.operations, p.operations[1:]):
        assert prev.target in (o.left, o.right), p.prompt
      ops_seen.update(o.op for o in p.operations)
  assert ops_seen == {"+", "-", "*"}


def test_build_problem_rejects_bad_chains():
  with pytest.raises(ValueError, match="not defined"):
    ar.build_problem([("a", 3)], [ar.Operation("c", "+", "a", "b")])
  with pytest.raises(ValueError, match="0..99"):
    ar.build_problem([("a", 30)], [ar.Operation("c", "*", "a", 4)])
  with pytest.raises(ValueError, match="0..99"):
    ar.build_problem([("a", 3)], [ar.Operation("c", "-", "a", 4)])
  with pytest.raises(ValueError, match="twice"):
    ar.build_problem([("a", 3)], [ar.Operation("a", "+", "a", 1)])
  with pytest.raises(ValueError, match="unknown operator"):
    ar.build_problem([("a", 3)], [ar.Operation("c", "/", "a", 1)])
  with pytest.raises(ValueError, match="num_steps"):
    ar.sample_problem(np.random.default_rng(0), num_steps=(3, 2))


# Step-level errors.

def test_corrupted_result_is_the_first_error(problems):
  for p in problems[:200]:
    for i in range(len(p.operations)):
      bad = _replace_line(p, i, _with_numbers(p.gold_steps[i], result=_wrong(p.results[i])))
      assert ar.first_error(p, bad) == i, bad


def test_corrupted_operand_is_the_first_error(problems):
  for p in problems[:200]:
    for i in range(len(p.operations)):
      step = ar.gold_step(p, i)
      for field in ("left", "right"):
        # The result is recomputed from the wrong operand: only the operand is wrong.
        left = _wrong(step.left) if field == "left" else step.left
        right = _wrong(step.right) if field == "right" else step.right
        result = ar.apply_op(step.op, left, right)
        bad = _replace_line(p, i, _with_numbers(p.gold_steps[i], left=left, right=right, result=result))
        assert ar.first_error(p, bad) == i, bad


def test_wrong_operator_or_variable_is_the_first_error():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b"), ar.Operation("d", "*", "c", 2)])
  assert ar.first_error(p, "c=3*5=15\nd=30*2=60\n#60\n") == 0  # Right operands, right arithmetic, wrong op.
  assert ar.first_error(p, "c=3+5=8\nx=8*2=16\n#16\n") == 1
  assert ar.first_error(p, "c=5+3=8\nd=8*2=16\n#16\n") == 0  # Operands out of the prompt's order.


def test_error_propagated_downstream_stays_first_and_later_steps_are_gold_anchored():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b"), ar.Operation("d", "*", "c", 2)])
  consistent_but_wrong = "c=3+5=9\nd=9*2=18\n#18\n"
  assert ar.first_error(p, consistent_but_wrong) == 0
  steps = ar.split_steps(consistent_but_wrong)
  assert not ar.verify_step(p, 1, steps[1], steps[:1])  # Reuses the wrong 9 faithfully: still incorrect.
  assert ar.verify_step(p, 1, "d=8*2=16", steps[:1])  # Gold line is correct whatever came before.
  assert not ar.is_correct(p, consistent_but_wrong)


def test_answer_line_errors():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b")])
  assert ar.first_error(p, "c=3+5=8\n#9\n") == 1 and not ar.is_correct(p, "c=3+5=8\n#9\n")
  assert ar.first_error(p, "c=3+5=8\n8\n") == 1 and ar.extract_answer("c=3+5=8\n8\n") is None
  # Outcome and process labels differ: a right answer after a wrong step.
  assert ar.is_correct(p, "c=3+5=9\n#8\n") and ar.first_error(p, "c=3+5=9\n#8\n") == 0


def test_truncated_solution_errs_at_the_missing_step(problems):
  for p in problems[:200]:
    for j in range(len(p.gold_steps)):
      prefix = "".join(s + "\n" for s in p.gold_steps[:j])
      assert ar.first_error(p, prefix) == j
    half_line = "".join(s + "\n" for s in p.gold_steps[:-2]) + p.gold_steps[-2][:-1]  # Last operation cut short.
    assert ar.first_error(p, half_line) == len(p.gold_steps) - 2


def test_extra_and_unparseable_steps():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b")])
  assert ar.first_error(p, "c=3+5=8\n#8\nc=3+5=8\n") == 2
  assert ar.first_error(p, "c=3+5=8\n#8") == -1  # The last separator is optional.
  for bad_line in ("c=03+5=8", "c=3+5=8 ", "c = 3+5=8", "", "c=3+5", "c=+3+5=8"):
    assert ar.first_error(p, bad_line + "\n#8\n") == 0, bad_line
  assert ar.first_error(p, "c=3+5=8\n\n#8\n") == 1
  assert ar.first_error(p, "") == 0


def test_verify_step_checks_its_arguments():
  p = ar.build_problem([("a", 3)], [ar.Operation("c", "+", "a", 1)])
  with pytest.raises(ValueError, match="needs the 1 steps"):
    ar.verify_step(p, 1, "#4", [])
  with pytest.raises(ValueError, match="non-negative"):
    ar.verify_step(p, -1, "c=3+1=4", [])
  assert not ar.verify_step(p, 2, "#4", ["c=3+1=4", "#4"])  # Past the answer line.


def test_split_steps_and_extract_answer():
  assert ar.split_steps("") == []
  assert ar.split_steps("x\ny\n") == ["x", "y"]
  assert ar.split_steps("x\ny") == ["x", "y"]
  assert ar.split_steps("x\n\n") == ["x", ""]
  assert ar.extract_answer("c=1+1=2\n#2\n#5\n") == 2
  assert ar.extract_answer("c=1+1=2\n#-3\n") == -3
  assert ar.extract_answer("c=1+1=2\n#02\n") is None
  assert ar.extract_answer("c=1+1=2\n") is None


# Corpus and held-out split.

def test_same_seed_same_corpus():
  a = ar.corpus(np.random.default_rng(7), 300)
  assert a == ar.corpus(np.random.default_rng(7), 300)
  assert a != ar.corpus(np.random.default_rng(8), 300)
  assert len(a) == 300 and len(set(a)) > 290
  assert [p.prompt for p in ar.heldout_problems(3, 50)] == [p.prompt for p in ar.heldout_problems(3, 50)]


def test_heldout_problems_never_in_training_corpus():
  heldout = ar.heldout_problems(0, 200)
  assert all(ar.is_heldout(p) for p in heldout)
  keys = {ar.canonical_prompt(p) for p in heldout}
  assert len(keys) == 200
  train = ar.training_problems(np.random.default_rng(0), 5000)
  assert not any(ar.is_heldout(p) for p in train)
  assert keys.isdisjoint(ar.canonical_prompt(p) for p in train)
  docs = ar.corpus(np.random.default_rng(0), 5000)
  assert docs == [p.text for p in train]
  assert not any(doc.startswith(p.prompt) for doc in docs for p in heldout[:20])


def test_heldout_split_holds_in_a_space_small_enough_to_collide():
  kwargs = {"num_steps": (1, 1), "num_inputs": (1, 1), "max_value": 9, "max_input": 9, "max_constant": 3}
  rng = np.random.default_rng(1)
  raw = {ar.canonical_prompt(ar.sample_problem(rng, **kwargs)) for _ in range(3000)}
  heldout = {ar.canonical_prompt(p) for p in ar.heldout_problems(1, 5, **kwargs)}
  assert heldout & raw  # Unfiltered sampling would leak held-out problems into training...
  train = {ar.canonical_prompt(p) for p in ar.training_problems(np.random.default_rng(1), 3000, **kwargs)}
  assert not heldout & train  # ...the split does not.
  assert 0.03 < sum(ar.is_heldout(ar.sample_problem(rng, **kwargs)) for _ in range(2000)) / 2000 < 0.2
  with pytest.raises(RuntimeError, match="too small"):
    ar.heldout_problems(1, 100, **kwargs)


def test_renamed_problems_share_their_heldout_status():
  p = ar.build_problem([("a", 3), ("b", 5)], [ar.Operation("c", "+", "a", "b")])
  q = ar.build_problem([("x", 3), ("k", 5)], [ar.Operation("m", "+", "x", "k")])
  assert ar.canonical_prompt(q) == p.prompt and ar.is_heldout(p) == ar.is_heldout(q)


def test_unigram_entropy():
  assert ar.unigram_entropy([[5, 5], [5]]) == 0.0
  assert math.isclose(ar.unigram_entropy([[0, 1], [2, 3]]), math.log(4))
  assert math.isclose(ar.unigram_entropy([np.array([1, 1, 1, 2])]), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
  with pytest.raises(ValueError, match="at least one token"):
    ar.unigram_entropy([[]])


# Tokenizer.

def test_char_tokenizer_encodes_each_character_and_decodes_exactly():
  alphabet = "\n ab="
  tok = char_tokenizer(alphabet)
  assert isinstance(tok, Tokenizer) and tok.vocab_size == 4 + len(alphabet)
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
  text = "a= b\n\nba  "
  ids = tok.encode(text)
  assert ids == [1] + [4 + alphabet.index(c) for c in text]
  assert tok.decode(ids) == text
  assert tok.encode("aZb") == [1, 4 + alphabet.index("a"), 3, 4 + alphabet.index("b")]  # Unknown: <unk>.
  assert tok.decode(tok.encode("ab") + [2]) == "ab"
  assert char_tokenizer(alphabet).backend.get_vocab() == tok.backend.get_vocab()
  with pytest.raises(TokenizerError, match="repeats"):
    char_tokenizer("abca")


def test_world_tokenizer_covers_every_document():
  tok = ar.tokenizer()
  assert tok.vocab_size == 4 + len(ar.ALPHABET) and len(set(ar.ALPHABET)) == len(ar.ALPHABET)
  docs = ar.corpus(np.random.default_rng(2), 500)
  assert set("".join(docs)) <= set(ar.ALPHABET)
  for doc in docs:
    ids = tok.encode(doc)
    assert len(ids) == len(doc) + 1 and 3 not in ids and 2 not in ids
    assert tok.decode(ids) == doc


def test_tokenizer_round_trip_through_save(tmp_path, problems):
  tok = ar.tokenizer()
  tok.save(str(tmp_path))
  loaded = Tokenizer.from_dir(str(tmp_path))
  texts = [p.text for p in problems[:50]] + ["a b\n"]
  for text in texts:
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(loaded.encode(text)) == text.replace(" ", "")  # " " is not in ALPHABET: <unk>.


def test_tokenizer_round_trip_through_transformers(tmp_path, problems):
  transformers = pytest.importorskip("transformers")
  tok = char_tokenizer(ar.ALPHABET + " ")
  tok.save(str(tmp_path))
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, len(hf)) == (1, 2, 0, tok.vocab_size)
  for text in [p.text for p in problems[:50]] + ["a = b\n c ", "\n\n"]:
    ids = tok.encode(text)
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids) == text
