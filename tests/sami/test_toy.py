"""The toy SAMI pipeline (the `ci` variant) on the built-in `sami` model: the held-out MI bound rises."""

import os

import numpy as np
import pytest

from experiments.configs import sami as configs
from pragjax.methods.sami import recipe as sami
from pragjax.models import toy_builtins as builtin
from pragjax.toyworld import sami as world


def test_toy_template_is_the_worlds():
  assert configs.TOY_TEMPLATE == world.PROMPT_TEMPLATE


def test_world_checks():
  topics = ("animals", "music", "food")
  up = world.Rule("case", False)
  assert world.holds(topics, "BEE DRUM", up) and not world.holds(topics, "bee drum", up)
  assert world.holds(topics, "bee drum fig", world.Rule("order", True))
  assert world.holds(topics, "fig drum bee", world.Rule("order", False))
  assert world.holds(topics, "bee drum", world.Rule("brief", True))
  assert not world.holds(topics, "bee drum rain", world.Rule("brief", True))  # rain is not on these topics
  assert world.parse(topics, "bee bee") is None and world.parse(topics, "Bee drum") is None
  assert world.holds(topics, "ant bee cat cow dog elk", world.Rule("brief", False))
  rng = np.random.default_rng(0)
  follow = world.corpus(rng, 2000, 1.0)
  for d in follow[:200]:  # with follow_rate 1 every stated rule holds
    lines = d["prompt"].split("\n")
    topics = world.parse_query(lines[3][len("topics: "):])
    for line in lines[1:3]:
      text = line[3:]
      rule = next(world.Rule(p.name, text == p.positive) for p in world.PRINCIPLES if text in (p.positive, p.negative))
      assert world.holds(topics, d["response"], rule), (d, rule)
  held = world.heldout_queries(0, 50)
  assert all(world.is_heldout(q) for q in held)
  assert not any(world.is_heldout(q) for q in world.training_queries(rng, 200))


@pytest.mark.skipif(not os.path.exists(os.path.join(builtin.ASSETS, "sami", "config.json")),
                    reason="built-in sami model not shipped")
@pytest.mark.slow
def test_ci_pipeline_mi_bound_rises(tmp_path):
  config = configs.get_config("ci")
  report = sami.run(config, str(tmp_path / "sami"), log=lambda *_: None)
  rows = report["rows"]
  assert [r["iteration"] for r in rows] == list(range(config.sami.iterations + 1))
  mi = [r["mi_bound"] for r in rows]
  assert mi[-1] > mi[0] + 0.02, mi
  assert all(0.0 <= r["win_rate"] <= 1.0 for r in rows)


def test_shipped_model_is_small_and_of_this_world():
  from pragjax.train import runner

  path = builtin.model_path("sami")
  size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
  assert size < 5 * 2 ** 20, size
  loaded = runner.load_model({"builtin": "sami"})
  assert loaded.tokenizer.vocab_size == world.tokenizer().vocab_size == loaded.config.vocab_size
  ids = loaded.tokenizer.encode(world.prompt(world.sample_rules(np.random.default_rng(0)), ("animals", "music", "food")))
  assert ids[0] == loaded.tokenizer.bos_token_id and 3 not in ids  # every word known (id 3 = <unk>)
