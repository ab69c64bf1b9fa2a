"""RL learning curves from metrics.jsonl and report.json, and their PNG."""

import json

from pragjax.methods.rl import report


def test_curves_and_plot(tmp_path):
  rows = [{"step": 4, "loss": 0.1, "rollout/reward": 0.25, "response_length": 30.0},
          {"step": 8, "loss": 0.0, "rollout/reward": 0.5, "response_length": 31.0, "eval/accuracy": 0.4}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "report.json").write_text(json.dumps({"before": {"accuracy": 0.3}}))
  c = report.curves(str(tmp_path))
  assert c["eval/accuracy"] == [(0, 0.3), (8, 0.4)]
  assert c["rollout/reward"] == [(4, 0.25), (8, 0.5)] and c["response_length"] == [(4, 30.0), (8, 31.0)]
  out = report.plot_runs({"a": str(tmp_path)}, str(tmp_path / "curve.png"), title="t")
  assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
