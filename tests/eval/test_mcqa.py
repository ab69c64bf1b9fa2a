"""Multiple-choice scoring (pragjax.eval.mcqa) and its entry point, on the toy built-in `knowledge` model.

References are direct: one unpadded forward per (prompt, option) with the
full `[T, V]` logits, a float64 numpy log-softmax, and the option's tokens
found by tokenizing the prompt alone (prompts here end without whitespace,
where byte-level BPE never merges across the joining space).
"""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import mcqa as configs
from pragjax import sharding as sharding_lib
from pragjax.data.errors import DataError
from pragjax.eval import mcqa
from pragjax.methods.mcqa import recipe as entry
from pragjax.models.tokenizer import Tokenizer
from pragjax.train import runner

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def toy():
  return runner.load_model({"builtin": "knowledge"})


def _records() -> list[mcqa.Record]:
  """A 2-option task and a 6-option task (one record with two correct options), in the toy world's words."""
  pair = [mcqa.Record(f"pair/{i}", "pair", p, list(o), a) for i, (p, o, a) in enumerate([
      ("By trade, Gisira is a baker.", ("True.", "False."), 0),
      ("Rifo works as a teacher. Is that so?\nAnswer:", ("yes", "no"), 1),
      ("Gipudo likes to eat", ("bread.", "fish."), 0),
  ])]
  many = [mcqa.Record(f"many/{i}", "many", p, list(o), a) for i, (p, o, a) in enumerate([
      ("The favourite colour of Pigeba is", ("red", "blue", "green", "yellow", "purple", "orange"), 0),
      ("The job of Tigo is", ("baker", "doctor", "farmer", "teacher", "pilot", "singer"), [0, 0, 1, 0, 0, 1]),
  ])]
  return pair + many


def _direct_logprobs(model, tok, pairs) -> np.ndarray:
  """log p(continuation | prompt) per (prompt, continuation): full logits, float64 log-softmax, no padding mask.

  Each row is the unpadded text followed by filler tokens that causal
  attention hides from every earlier position, so one call serves all rows.
  """
  rows, spans = [], []
  for prompt, continuation in pairs:
    ctx, ids = tok.encode(prompt), tok.encode(prompt + continuation)
    assert ids[:len(ctx)] == ctx and len(ids) > len(ctx), (prompt, continuation)
    rows.append(ids)
    spans.append((len(ctx), len(ids)))
  width = max(map(len, rows))
  ids = np.asarray([r + [5] * (width - len(r)) for r in rows], np.int32)
  logits = np.asarray(model(jnp.asarray(ids), compute_logits=True).logits, np.float64)
  m = logits.max(axis=-1, keepdims=True)
  logp = logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))
  return np.asarray([sum(logp[b, t - 1, ids[b, t]] for t in range(a, e)) for b, (a, e) in enumerate(spans)])


def _letter_text(r: mcqa.Record) -> str:
  letters = "ABCDEFGHIJ"
  return "\n".join([r.prompt] + [f"{letters[i]}. {o}" for i, o in enumerate(r.options)] + ["Answer:"])


# ----------------------------------------------------------------------------- tokenization


def test_option_tokens_are_those_of_the_concatenation(toy):
  tok = toy.tokenizer
  for prompt, option, text, shown in [
      ("Q: is it?\nA: ", "yes", "Q: is it?\nA: yes", " yes"),  # the trailing space moves onto the option
      ("Answer:", "yes", "Answer: yes", " yes"),  # the separator joins them
      ("Answer:", " yes", "Answer: yes", " yes"),  # an option's own space is not doubled
      ("Sentence 1: x\n", "entailment", "Sentence 1: x\nentailment", "entailment"),  # a newline stays in the prompt
  ]:
    ctx, opt = mcqa.continuation_ids(tok, prompt, option)
    assert ctx + opt == tok.encode(text)
    assert ctx == tok.encode(text[:len(text) - len(shown)])
    assert tok.decode(opt) == shown
  with pytest.raises(ValueError, match="no token of its own"):
    mcqa.continuation_ids(tok, "Answer:", "")


def test_chat_template_puts_the_option_at_the_start_of_the_assistant_turn(toy):
  tok = Tokenizer.from_dir(toy.path)
  tok.chat_template = CHATML
  ctx, opt = mcqa.continuation_ids(tok, "Is it?", "yes", chat_template=True)
  assert tok.decode(ctx, skip_special_tokens=False) == "<|im_start|>user\nIs it?<|im_end|>\n<|im_start|>assistant\n"
  assert tok.decode(opt) == "yes" and tok.bos_token_id not in ctx  # the template writes its own specials


# ----------------------------------------------------------------------------- scoring


def test_option_scores_equal_direct_forward_passes(toy):
  records = _records()
  got = mcqa.score_records(toy.model, toy.tokenizer, records, modes=("sum", "mean", "pmi", "letter"), batch_size=4)
  pairs = []
  for r in records:
    pairs += [(r.prompt, " " + o) for o in r.options] + [("Answer:", " " + o) for o in r.options]
    pairs += [(_letter_text(r), " " + "ABCDEF"[k]) for k in range(len(r.options))]
  direct = iter(_direct_logprobs(toy.model, toy.tokenizer, pairs))
  for i, r in enumerate(records):
    cond, neutral, letters = (np.asarray([next(direct) for _ in r.options]) for _ in range(3))
    n_tok = np.asarray([len(mcqa.continuation_ids(toy.tokenizer, r.prompt, o)[1]) for o in r.options])
    np.testing.assert_allclose(got["sum"][i], cond, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["mean"][i], cond / n_tok, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["pmi"][i], cond - neutral, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["letter"][i], letters, atol=1e-5, rtol=0)
    assert len(set(np.round(cond, 3))) == len(cond)  # options really differ: the comparison has teeth
  assert mcqa.letter_prompt(records[3]) == _letter_text(records[3])


def _rows(tok):
  rows = []
  for r in _records():
    for o in r.options:
      ctx, opt = mcqa.continuation_ids(tok, r.prompt, o)
      rows.append((ctx + opt, len(opt)))
  return rows


def test_batched_equals_alone_and_left_padding_equals_right(toy):
  rows = _rows(toy.tokenizer)
  assert len({len(ids) for ids, _ in rows}) > 3  # rows of many lengths share batches
  pad = toy.tokenizer.pad_token_id
  alone = mcqa.score_rows(toy.model, rows, pad_id=pad, batch_size=1)
  right = mcqa.score_rows(toy.model, rows, pad_id=pad, batch_size=16, padding_side="right")
  left = mcqa.score_rows(toy.model, rows, pad_id=pad, batch_size=16, padding_side="left")
  np.testing.assert_allclose(right, alone, atol=1e-5, rtol=0)
  np.testing.assert_allclose(left, right, atol=1e-5, rtol=0)
  assert np.all(alone < 0) and np.ptp(alone) > 1.0


def test_sharded_batches_give_the_same_scores(toy):
  rows = _rows(toy.tokenizer)
  pad = toy.tokenizer.pad_token_id
  plain = mcqa.score_rows(toy.model, rows, pad_id=pad, batch_size=8)
  mesh = sharding_lib.make_mesh(data=2, fsdp=4, devices=jax.devices()[:8])
  model = runner.load_model({"builtin": "knowledge"}, mesh).model
  with jax.set_mesh(mesh):
    sharded = mcqa.score_rows(model, rows, pad_id=pad, batch_size=6, mesh=mesh)  # rounded up to 8 rows
  np.testing.assert_allclose(sharded, plain, atol=1e-5, rtol=1e-6)  # fsdp matmuls sum in another order


def test_bad_modes_and_rows_are_rejected(toy):
  with pytest.raises(ValueError, match="unknown scoring mode"):
    mcqa.score_records(toy.model, toy.tokenizer, _records(), modes=("sum", "logit"))
  with pytest.raises(ValueError, match="row 0"):
    mcqa.score_rows(toy.model, [([1, 2], 2)], pad_id=0)


def test_max_length_cuts_the_context_from_the_left_keeping_bos(toy):
  r = _records()[3]
  full = mcqa.score_records(toy.model, toy.tokenizer, [r], modes=("sum",))["sum"][0]
  cut = mcqa.score_records(toy.model, toy.tokenizer, [r], modes=("sum",), max_length=6)["sum"][0]
  bos = toy.tokenizer.bos_token_id
  for k, o in enumerate(r.options):
    ctx, opt = mcqa.continuation_ids(toy.tokenizer, r.prompt, o)
    assert len(ctx) + len(opt) > 6 and ctx[0] == bos
    keep = [bos] + ctx[len(ctx) - (6 - len(opt) - 1):]
    want = mcqa.score_rows(toy.model, [(keep + opt, len(opt))], pad_id=0)[0]
    np.testing.assert_allclose(cut[k], want, atol=1e-5, rtol=0)
  assert not np.allclose(cut, full, atol=1e-3)


# ----------------------------------------------------------------------------- loaders


def _write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def test_bigbench_task_directory_with_subtasks(tmp_path):
  root = tmp_path / "prag"
  _write_json(str(root / "task.json"), {"name": "prag", "example_input_prefix": "\nHuman: "})  # parent: no examples
  _write_json(str(root / "alpha" / "task.json"), {
      "task_prefix": "Yes or no?", "example_input_prefix": "\n\nQ: ", "example_output_prefix": " \nA: ",
      "append_choices_to_input": False,
      "examples": [{"input": "Is it?", "target_scores": {"yes": 0, "no": 1}},
                   {"input": "Is it not?", "target_scores": {"yes": 1.0, "no": 0.0}}]})
  _write_json(str(root / "beta" / "task.json"), {  # BIG-bench defaults: "\nQ: ", "\nA: ", choices appended
      "examples": [{"input": "Pick.", "target_scores": {"a": 1, "b": 0, "c": 1}, "comment": "ignored"}]})
  records = mcqa.load_task(str(root))
  assert [r.task for r in records] == ["prag/alpha", "prag/alpha", "prag/beta"]
  assert [r.id for r in records] == ["prag/alpha/0", "prag/alpha/1", "prag/beta/0"]
  a0, _, b0 = records
  assert a0.prompt == "Yes or no?\n\nQ: Is it? \nA: " and a0.stem == "Yes or no?\n\nQ: Is it?"
  assert a0.options == ["yes", "no"] and a0.answer == 1 and records[1].answer == 0
  assert b0.prompt == "\nQ: Pick.\n  choice: a\n  choice: b\n  choice: c\nA: "
  assert b0.answer == [1.0, 0.0, 1.0] and b0.correct_options() == [0, 2]
  assert b0.is_correct(2) and not b0.is_correct(1)
  # One subtask alone, by its task.json.
  assert [r.task for r in mcqa.load_task(str(root / "beta" / "task.json"))] == ["beta"]


def test_shared_bigbench_tasks_load(shared_data):
  hhh = mcqa.load_task(str(shared_data / "bigbench" / "hhh_alignment"))
  by_task = {t: sum(r.task == t for r in hhh) for t in {r.task for r in hhh}}
  assert by_task == {"hhh_alignment/harmless": 58, "hhh_alignment/helpful": 59, "hhh_alignment/honest": 61,
                     "hhh_alignment/other": 43}
  assert hhh[0].prompt.startswith("\nHuman: ") and hhh[0].prompt.endswith("\nAssistant:")
  imp = mcqa.load_task(str(shared_data / "bigbench" / "implicatures"))
  assert len(imp) == 492 and imp[0].prompt.startswith("Does Speaker 2's answer mean yes or no? \n\nQ: ")
  assert {tuple(r.options) for r in imp} == {("yes", "no")}
  fig = mcqa.load_task(str(shared_data / "bigbench" / "figure_of_speech_detection"))
  assert {len(r.options) for r in fig} == {10}


def test_jsonl_records(tmp_path):
  path = tmp_path / "pairs.jsonl"
  lines = [{"prompt": "P0", "options": ["x", "y"], "answer": 1, "id": "first"},
           {"prompt": "P1", "options": ["x", "y", "z"], "answer": "z", "stem": "S1"},
           {"prompt": "P2", "options": ["x", "y"], "answer": [0.5, 1.0]}]
  path.write_text(json.dumps(lines[0]) + "\n\n" + "\n".join(json.dumps(x) for x in lines[1:]) + "\n")
  records = mcqa.load_task(str(path))
  assert [r.id for r in records] == ["first", "pairs/1", "pairs/2"]
  assert [r.answer for r in records] == [1, 2, [0.5, 1.0]]
  assert records[1].stem == "S1" and records[0].stem is None and {r.task for r in records} == {"pairs"}


def test_csv_records_with_json_options_or_option_columns(tmp_path):
  path = tmp_path / "cols.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "prompt", "option_0", "option_1", "option_2", "answer"])
    w.writerow(["a", "multi\nline prompt", "yes", "no", "", "no"])
    w.writerow(["b", "P", "0", "1", "2", "0"])  # an answer equal to an option's text is that option
    w.writerow(["c", "P", "u", "v", "w", "2"])  # else a number is an index
  assert [(r.id, r.options, r.answer) for r in mcqa.load_task(str(path))] == [
      ("a", ["yes", "no"], 1), ("b", ["0", "1", "2"], 0), ("c", ["u", "v", "w"], 2)]
  path = tmp_path / "listed.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["prompt", "options", "answer"])
    w.writerow(["P", json.dumps(["left", "right"]), "right"])
  (r,) = mcqa.load_task(str(path))
  assert (r.id, r.task, r.options, r.answer) == ("listed/0", "listed", ["left", "right"], 1)


@pytest.mark.parametrize("lines, pattern", [
    ([{"prompt": "p", "options": ["a", "b"], "answer": 0}, {"prompt": "p", "options": ["a", "b"], "answer": 2}],
     r"bad\.jsonl, line 2: field 'answer' index 2 is out of range"),
    ([{"prompt": "p", "options": ["a", "b"], "answer": "c"}], r"line 1: field 'answer' 'c' is not one of the options"),
    ([{"prompt": "p", "answer": 0}], r"line 1: missing field 'options'"),
    ([{"prompt": "p", "options": ["a", 3], "answer": 0}], r"line 1: field 'options\[1\]' must be a non-empty string"),
    ([{"prompt": "p", "options": ["a", "a"], "answer": 0}], r"line 1: field 'options' repeats"),
    ([{"prompt": 5, "options": ["a", "b"], "answer": 0}], r"line 1: field 'prompt' must be a string"),
    ([{"prompt": "p", "options": ["a", "b"], "answer": True}], r"line 1: field 'answer' must be an option index"),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, lines, pattern):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  with pytest.raises(DataError, match=pattern):
    mcqa.load_task(str(path))


def test_csv_errors_name_file_line_and_field(tmp_path):
  path = tmp_path / "bad.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["prompt", "option_0", "option_1", "option_2", "answer"])
    w.writerow(["two\nlines", "a", "b", "", "a"])  # lines 2-3
    w.writerow(["p", "a", "", "c", "a"])  # line 4
  with pytest.raises(DataError, match=r"bad\.csv, line 4: field 'option_1' is empty but a later option column"):
    mcqa.load_task(str(path))
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([["prompt", "answer"], ["p", "0"]])
  with pytest.raises(DataError, match=r"bad\.csv, line 1: missing column 'options'"):
    mcqa.load_task(str(path))
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([["prompt", "options", "answer"], ["p", "[not json", "0"]])
  with pytest.raises(DataError, match=r"line 2: field 'options' must be a JSON list"):
    mcqa.load_task(str(path))


@pytest.mark.parametrize("example, pattern", [
    ({"input": "x", "target": "y"}, r"examples\[1\]: missing field 'target_scores'"),
    ({"input": "x", "target_scores": {"a": 1}}, r"examples\[1\]: field 'target_scores' must map at least 2"),
    ({"input": "x", "target_scores": {"a": 1, "b": "high"}}, r"examples\[1\]: field 'target_scores' gives 'b'"),
    ({"target_scores": {"a": 1, "b": 0}}, r"examples\[1\]: field 'input' must be a string"),
])
def test_bigbench_errors_name_file_example_and_field(tmp_path, example, pattern):
  path = str(tmp_path / "t" / "task.json")
  _write_json(path, {"examples": [{"input": "ok", "target_scores": {"a": 1, "b": 0}}, example]})
  with pytest.raises(DataError, match=r"t/task\.json, " + pattern):
    mcqa.load_task(os.path.dirname(path))


def test_bigbench_file_level_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match=r"empty/task\.json: not found"):
    mcqa.load_task(str(tmp_path / "empty"))
  _write_json(str(tmp_path / "p" / "task.json"), {"examples": [], "task_prefix": "x"})
  with pytest.raises(DataError, match=r"p/task\.json: field 'examples' must be a non-empty list"):
    mcqa.load_task(str(tmp_path / "p"))
  _write_json(str(tmp_path / "q" / "task.json"), {"examples": [{"input": "x", "target_scores": {"a": 1, "b": 0}}],
                                                   "example_output_prefix": 3})
  with pytest.raises(DataError, match=r"q/task\.json: field 'example_output_prefix' must be a string"):
    mcqa.load_task(str(tmp_path / "q"))


def test_subsample_and_permute_options():
  records = [mcqa.Record(f"t/{i}", "t", "p", ["r", "w", "x"], 0) for i in range(20)]
  records += [mcqa.Record("u/0", "u", "p", ["a", "b"], [0.0, 1.0])]
  sub = mcqa.subsample(records, 5, seed=1)
  assert sum(r.task == "t" for r in sub) == 5 and sub[-1].id == "u/0"
  assert [r.id for r in sub] == sorted((r.id for r in sub), key=lambda s: (s[0], int(s.split("/")[1])))
  assert sub == mcqa.subsample(records, 5, seed=1) and sub != mcqa.subsample(records, 5, seed=2)
  perm = mcqa.permute_options(records, seed=0)
  assert all(p.options[p.answer] == "r" for p in perm[:20])
  assert len({p.answer for p in perm[:20]}) == 3  # the correct option no longer always comes first
  assert perm[20].options[perm[20].correct_options()[0]] == "b"


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("k, n", [(0, 1), (0, 10), (3, 10), (8, 10), (10, 10), (57, 200), (1, 3)])
def test_wilson_interval_solves_the_score_equation(k, n):
  """The interval's ends are the roots p of (p - phat)^2 = z^2 p (1 - p) / n."""
  z = 1.959963984540054
  phat = k / n
  roots = np.sort(np.roots([1 + z * z / n, -(2 * phat + z * z / n), phat * phat]).real)
  lo, hi = mcqa.wilson_interval(k, n)
  np.testing.assert_allclose([lo, hi], np.clip(roots, 0, 1), atol=1e-12)
  assert lo <= phat <= hi


def test_wilson_known_value_and_empty():
  np.testing.assert_allclose(mcqa.wilson_interval(8, 10), (0.4901625, 0.9433178), atol=1e-6)
  assert all(np.isnan(mcqa.wilson_interval(0, 0)))


def test_summary_chance_majority_micro_macro():
  recs = [mcqa.Record(f"a/{i}", "a", "p", ["yes", "no"], a) for i, a in enumerate([0, 0, 0, 1])]
  recs += [mcqa.Record("g/x/0", "g/x", "p", ["u", "v", "w"], 2), mcqa.Record("g/x/1", "g/x", "p", ["q", "r", "s"], 2),
           mcqa.Record("g/y/0", "g/y", "p", ["u", "v", "w", "z"], [1, 0, 0, 1])]
  scores = {"sum": [np.array(s, float) for s in ([1, 0], [1, 0], [0, 1], [0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 0, 5])]}
  s = mcqa.summarize(recs, scores)
  a, x, y = s["tasks"]["a"], s["tasks"]["g/x"], s["tasks"]["g/y"]
  assert (a["chance"], a["majority"], a["majority_by"]) == (0.5, 0.75, "label")
  assert (x["majority"], x["majority_by"]) == (1.0, "position") and x["chance"] == pytest.approx(1 / 3)
  assert y["chance"] == 0.5 and y["options_max"] == 4
  assert [t["modes"]["sum"]["correct"] for t in (a, x, y)] == [3, 1, 1]
  micro, macro = s["overall"]["micro"]["sum"], s["overall"]["macro"]["sum"]
  assert (micro["n"], micro["correct"]) == (7, 5)
  assert (micro["ci_low"], micro["ci_high"]) == mcqa.wilson_interval(5, 7)
  accs, ns = np.array([0.75, 0.5, 1.0]), np.array([4, 2, 1])
  half = 1.959963984540054 * np.sqrt(np.sum(accs * (1 - accs) / ns)) / 3
  np.testing.assert_allclose([macro["accuracy"], macro["ci_low"], macro["ci_high"]],
                             [0.75, 0.75 - half, min(1.0, 0.75 + half)])
  assert s["groups"]["g"]["n"] == 3 and s["groups"]["g"]["modes"]["sum"]["correct"] == 2
  assert s["overall"]["chance_micro"] == pytest.approx((4 * 0.5 + 2 / 3 + 0.5) / 7)
  table = mcqa.format_table(s, ["sum"])
  assert "| a | 4 | 2 | 0.500 | 0.750 | 0.750 [" in table and "| g/y | 1 | 4 |" in table
  assert "| g (all) | 3 | 3-4 |" in table and "**micro** | 7 |" in table and "**macro** (3 tasks)" in table


# ----------------------------------------------------------------------------- entry point


def test_every_config_field_is_documented():
  doc = configs.__doc__
  for variant in ("bigbench", "smollm2", "ci"):
    for field, value in configs.get_config(variant).items():
      if field not in ("seed", "model", "mesh", "runtime"):
        assert f"  {field} " in doc, f"{field} undocumented"
  assert configs.get_config("smollm2").model.path == "builtin:smollm2-135m-instruct"
  with pytest.raises(ValueError, match="unknown mcqa variant"):
    configs.get_config("nope")


def test_ci_tasks_resolve_in_the_shared_data(shared_data):
  config = configs.get_config("ci")
  config.bigbench_dir = str(shared_data / "bigbench")
  records = entry.load_records(config)
  assert {r.task: len(r.options) for r in records} == {"implicatures": 2, "figure_of_speech_detection": 10}
  assert len(records) == 8
  config.tasks = "implicatures,no_such_task"
  with pytest.raises(FileNotFoundError, match="no_such_task"):
    entry.task_paths(config)


def test_entry_point_end_to_end(tmp_path):
  root = tmp_path / "tasks"
  _write_json(str(root / "bb" / "one" / "task.json"), {"examples": [
      {"input": f"Is {w} red?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2 == 1)}}
      for i, w in enumerate(["it", "that", "this"])]})
  _write_json(str(root / "bb" / "two" / "task.json"), {"examples": [
      {"input": "Pick one.", "target_scores": {"red": 0, "green": 1, "blue": 0, "black": 0, "white": 0}}]})
  jsonl = root / "pairs.jsonl"
  jsonl.write_text("\n".join(json.dumps({"prompt": f"Q{i}:", "options": ["good", "bad"], "answer": i % 2})
                             for i in range(3)) + "\n")
  config = configs.get_config("ci")
  config.update(tasks=f"{root / 'bb'},{jsonl}", max_examples=2, batch_size=8)
  logs = []
  out = entry.run(config, str(tmp_path / "work"), log=logs.append)
  with open(tmp_path / "work" / "results.json") as f:
    saved = json.load(f)
  assert list(saved["tasks"]) == ["bb/one", "bb/two", "pairs"]
  assert [saved["tasks"][t]["n"] for t in saved["tasks"]] == [2, 1, 2]  # max_examples per task
  assert saved["tasks"]["bb/two"]["options_max"] == 5 and saved["groups"]["bb"]["n"] == 3
  assert saved["modes"] == list(mcqa.MODES) and saved["table"] == out["table"]
  assert saved["table"].count("\n") == 2 + 3 + 1 + 2 - 1  # header, 3 tasks, 1 group, micro and macro
  for mode in mcqa.MODES:
    correct = sum(e[mode]["prediction"] in e["correct"] for e in saved["examples"])
    assert saved["overall"]["micro"][mode]["correct"] == correct
    assert all(len(e[mode]["scores"]) == {"bb/two": 5}.get(e["task"], 2) for e in saved["examples"])
  assert any("5 records in 3 tasks" in line for line in logs)


def test_plot_summary_writes_a_png(tmp_path):
  records = [mcqa.Record(id=str(i), task="t2" if i % 2 else "t5", prompt="Q:", options=["a", "b"] if i % 2 else
                         ["a", "b", "c", "d", "e"], answer=i % 2) for i in range(8)]
  scores = {m: [np.arange(len(r.options), dtype=np.float64)[::-1] for r in records] for m in ("sum", "pmi")}
  summary = mcqa.summarize(records, scores)
  path = mcqa.plot_summary(summary, ["sum", "pmi"], str(tmp_path / "p.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(path) > 5000
