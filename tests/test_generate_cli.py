"""`python -m experiments.generate` end to end on the toy built-in: JSONL in, completions out, errors."""

import json
import os
import subprocess
import sys

import numpy as np

from pragjax.models import generate
from pragjax.toyworld import arithmetic
from pragjax.train import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "experiments.generate", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_generate_cli_writes_the_greedy_completions(tmp_path):
  problems = arithmetic.heldout_problems(0, 3)
  inp = tmp_path / "in.jsonl"
  inp.write_text("".join(json.dumps({"prompt": p.prompt, "id": i}) + "\n" for i, p in enumerate(problems)))
  out = tmp_path / "out.jsonl"
  r = _run("--model=builtin:arithmetic", f"--input={inp}", f"--output={out}", "--max_new_tokens=12", "--batch_size=2")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "tokens/s" in r.stdout
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [row["id"] for row in rows] == [0, 1, 2]
  loaded = runner.load_model(dict(builtin="arithmetic"))
  tok = loaded.tokenizer
  for row, p in zip(rows, problems):
    ids, mask = tok.encode_batch([p.prompt], padding_side="left")
    res = generate(loaded.model, ids, mask, max_new_tokens=12, eos_token_ids=(tok.eos_token_id,))
    n = int(np.asarray(res.lengths)[0])
    assert row["completions"] == [tok.decode(np.asarray(res.tokens)[0, :n])] and row["lengths"] == [n]


def test_generate_cli_names_the_bad_line(tmp_path):
  inp = tmp_path / "bad.jsonl"
  inp.write_text('{"prompt": "1 + 1 ="}\n{"prompt": 3}\n')
  r = _run("--model=builtin:arithmetic", f"--input={inp}")
  assert r.returncode != 0
  assert "bad.jsonl, line 2: expected an object with a string 'prompt' or a list 'messages'" in r.stderr
