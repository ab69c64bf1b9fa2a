"""The batched C x C scoring equals scoring every (constitution, response) pair alone; batches and masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.data.groups import GroupIterator
from pragjax.methods.sami import batches, constitutions, sampling, scoring, training
from pragjax.models import Decoder, ModelConfig
from pragjax.objectives.sami import sami_loss
from pragjax.toyworld import sami as world


@pytest.fixture(scope="module")
def model_and_tok():
  tok = world.tokenizer()
  cfg = ModelConfig(model_type="llama", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=(tok.eos_token_id,),
                    pad_token_id=tok.pad_token_id)
  return Decoder(cfg, rngs=nnx.Rngs(0)), tok


def _groups(tok, c, n, seed=0):
  """n groups of c prompts (different lengths) and c responses (different lengths, one empty)."""
  rng = np.random.default_rng(seed)
  out = []
  for q in range(n):
    items = world.sample_items(rng)
    rules = [world.sample_rules(rng) for _ in range(c)]
    prompts = [sampling.prompt_ids(tok, world.prompt(r, items)) for r in rules]
    responses = [tok.encode(" ".join(items[: rng.integers(1, 6)]), add_special_tokens=False) for _ in range(c)]
    if q == 1:
      responses[0] = []  # a response that ended at once (EOS only)
    out.append(batches.make_example(prompts, responses, max_length=200))
  return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("c", [2, 4])
def test_matrix_equals_pairs_one_by_one(model_and_tok, reduction, c):
  model, tok = model_and_tok
  groups = _groups(tok, c, 5, seed=c)
  batched = scoring.score_groups(model, groups, pad_id=tok.pad_token_id, reduction=reduction, batch_size=3)
  alone = scoring.score_pairs_one_by_one(model, groups, reduction=reduction)
  assert batched.shape == (5, c, c)
  np.testing.assert_allclose(batched, alone, atol=2e-5, rtol=2e-5)
  # Rows differ (each constitution scores the same response differently) and the empty response scores 0.
  assert np.abs(batched[0] - batched[0][:1]).max() > 1e-4
  np.testing.assert_allclose(batched[1][:, 0], 0.0)


def test_masks_exclude_prompt_padding_and_eos(model_and_tok):
  _, tok = model_and_tok
  prompts = [[1, 10, 11, 12], [1, 13]]
  responses = [[20, 21, 22], [23]]
  seqs = batches.pair_sequences(prompts, responses, max_length=16)
  ids, mask = seqs[0 * 2 + 1]  # prompt 0 + response 1
  assert list(ids) == [1, 10, 11, 12, 23] and list(mask) == [0, 0, 0, 0, 1]
  batch = batches.collate([{"sequences": seqs, "num_slots": 2}], pad_id=tok.pad_token_id, length_bucket=8)
  assert batch["input_ids"].shape == (1, 4, 8)
  assert batch["loss_mask"].sum() == 2 * (3 + 1)  # each response counted once per constitution, no EOS, no pad
  assert tok.eos_token_id not in batch["input_ids"][batch["loss_mask"] == 1]
  # Responses are cut to the same length under every prompt (room left by the longest prompt).
  seqs = batches.pair_sequences(prompts, [[20, 21, 22, 24], [23]], max_length=6)
  assert [int(m.sum()) for _, m in seqs] == [2, 1, 2, 1]


def test_loss_fn_matches_objective_on_the_matrix(model_and_tok):
  model, tok = model_and_tok
  groups = _groups(tok, 2, 4, seed=7)
  batch = batches.collate(groups, pad_id=tok.pad_token_id)
  graphdef, params = nnx.split(model, nnx.Param)
  loss, metrics = training.make_sami_loss_fn(graphdef, "mean")(params, {k: jnp.asarray(v) for k, v in batch.items()},
                                                              jax.random.key(0))
  L = scoring.score_pairs_one_by_one(model, groups)
  np.testing.assert_allclose(float(loss), float(sami_loss(L)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["mi_bound"]), np.log(2) - float(sami_loss(L)), rtol=1e-4, atol=1e-6)
  assert float(metrics["loss_weight"]) == 4


def test_group_iterator_resumes_at_the_same_batch(model_and_tok):
  _, tok = model_and_tok
  groups = _groups(tok, 2, 6)
  make = lambda: GroupIterator(groups, batches.group_sequences, global_batch_size=2, group_size=4, seed=3, pad_id=0)
  it = make()
  first = [next(it) for _ in range(2)]
  state = it.get_state()
  first += [next(it) for _ in range(2)]  # crosses an epoch boundary
  again = make()
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["input_ids"], first[2]["input_ids"])


def test_constitution_patterns_and_sampling():
  lib = [constitutions.Principle(n, f"do {n}", f"avoid {n}") for n in "abc"]
  assert len(set(constitutions.negation_patterns(3))) == 8
  assert constitutions.negation_patterns(2)[0] == (True, True)
  rng = np.random.default_rng(0)
  for c in (2, 4):
    cs = constitutions.sample_constitutions(lib, rng, num_principles=2, num_constitutions=c)
    assert cs[0].is_positive and len({x.pattern for x in cs}) == c
    assert len({x.principles for x in cs}) == 1
  with pytest.raises(ValueError, match="num_constitutions"):
    constitutions.sample_constitutions(lib, rng, num_principles=2, num_constitutions=5)
  cs = constitutions.sample_constitutions(lib, rng, num_principles=3, num_constitutions=8)
  assert sorted(x.pattern for x in cs) == sorted(constitutions.negation_patterns(3))


def test_paper_constitution_files(shared_data):
  d = shared_data / "sami" / "constitutions_mistral"
  lib = constitutions.load_principles(str(d))
  assert [p.name for p in lib] == ["concise", "comprehensive"]
  assert "brief" in lib[0].positive and "lengthy" in lib[0].negative
  import json
  for path in sorted(d.glob("*.json")):  # every file's pair is a (positive, pattern) pair of the library
    f = json.loads(path.read_text())
    names = [i.split(" ", 1)[1] for i in f["identifiers"]["positive"]]
    signs = tuple(i.startswith("pos") for i in f["identifiers"]["negative"])
    by = {p.name: p for p in lib}
    c = constitutions.Constitution(tuple(by[n] for n in names), signs)
    assert c.text().replace(" ", "") == f["negative"].replace(" ", "")
