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


def test_random_direction_moves_the_weights_as_far_as_the_policy():
  import jax.numpy as jnp
  import numpy as np

  from pragjax.methods.rl import prm_eval

  init = {"a": jnp.zeros((3, 4)), "b": jnp.ones((5,))}
  policy = {"a": jnp.full((3, 4), 0.1), "b": jnp.ones((5,)) * 1.2}
  moved = prm_eval.random_direction(init, policy, seed=0)
  dist = lambda x, y: float(np.sqrt(sum(np.sum((np.asarray(x[k]) - np.asarray(y[k])) ** 2) for k in x)))  # noqa: E731
  assert abs(dist(moved, init) - dist(policy, init)) < 1e-5
  direction = np.concatenate([(np.asarray(moved[k]) - np.asarray(init[k])).ravel() for k in init])
  along = np.concatenate([(np.asarray(policy[k]) - np.asarray(init[k])).ravel() for k in init])
  assert abs(direction @ along) / (np.linalg.norm(direction) * np.linalg.norm(along)) < 0.99  # not the RL direction
  assert not np.allclose(np.asarray(prm_eval.random_direction(init, policy, seed=1)["a"]), np.asarray(moved["a"]))
