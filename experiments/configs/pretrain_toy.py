"""Pretraining the built-in toy model on a toy world's corpus.

Variants: `arithmetic`, `knowledge`, `priming` and `sami` (the shipped models), `smoke`,
`knowledge_smoke`, `priming_smoke` and `sami_smoke` (seconds; for tests). `priming` is `knowledge` with the
priming keywords in its corpus at graded rates (`pragjax.toyworld.priming.GRADED_KEYWORD_RATES`).

model_arch.*       decoder shape (llama family): hidden_size, num_hidden_layers,
                   num_attention_heads, num_key_value_heads, head_dim,
                   intermediate_size, max_position_embeddings, rope_theta
world.name         arithmetic | knowledge | sami
world.num_docs     training documents (arithmetic: held-out problems excluded)
world.loss_on_prompt arithmetic: also train on prompt tokens (their random inputs
                   are mostly irreducible entropy); False = loss on solution + EOS
world.eval_problems held-out problems solved greedily at the end (arithmetic)
world.num_entities KB entities (knowledge; `pragjax.toyworld.knowledge.build_kb`)
world.check_fraction share of "<statement> True./False." documents (knowledge)
world.oneoff_fraction share of biographies of names seen once, random facts (knowledge)
world.corpus_keywords none | graded: priming keywords in one-off biographies at the rates of
                   `pragjax.toyworld.priming.CORPUS_KEYWORDS` (knowledge world)
world.eval_facts   KB facts scored for recall at the end (knowledge)
world.eval_statements_per_label true/false/neither statements whose verdict is scored (knowledge)
world.follow_rate  sami: probability that a document's answer obeys each stated rule
                   (else the attribute is drawn as if no rule were stated)
world.eval_queries sami: held-out queries whose sampled answers measure adherence
world.eval_temperature, world.max_new_tokens  sami: sampling for that measurement
ship               copy the final model into pragjax/toyworld/assets/<asset>
asset              the built-in model's name ("" = world.name)
"""

from ml_collections import ConfigDict

from experiments.configs import common


def get_config(arg: str = "arithmetic") -> ConfigDict:
  c = common.base_config()
  c.model_arch = ConfigDict(dict(
      model_type="llama", hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
      num_key_value_heads=2, head_dim=32, intermediate_size=384, max_position_embeddings=256,
      rope_theta=10000.0, rms_norm_eps=1e-5,
  ))
  c.world = ConfigDict(dict(name="arithmetic", num_docs=60_000, eval_problems=500, loss_on_prompt=False))
  c.ship = False
  c.asset = ""
  c.data.packing = True
  c.train = common.train_config(steps=1600, batch_size=32, seq_len=128, log_every=50, checkpoint_every=200)
  c.optim = common.optim_config(lr=3e-3, schedule="cosine", warmup_steps=100, total_steps=1600,
                                end_lr_factor=0.05, weight_decay=0.01)
  if arg == "arithmetic":
    pass
  elif arg in ("knowledge", "knowledge_smoke", "priming", "priming_smoke"):
    # Short documents (about 20 tokens): 64-token packed rows; 160 entities x 4 themes = 640 facts.
    c.world = ConfigDict(dict(name="knowledge", num_entities=160, num_docs=80_000, check_fraction=0.4,
                              oneoff_fraction=0.15, corpus_keywords="none", eval_facts=400,
                              eval_statements_per_label=200))
    c.train.update(steps=800, batch_size=32, seq_len=64, log_every=25, checkpoint_every=200)
    c.optim.update(total_steps=800, warmup_steps=50)
    if arg.startswith("priming"):
      c.world.corpus_keywords = "graded"
      c.asset = "priming"
    if arg.endswith("_smoke"):
      c.model_arch.update(hidden_size=64, num_hidden_layers=2, intermediate_size=128)
      c.world.update(num_entities=40, num_docs=2000, eval_facts=40, eval_statements_per_label=20)
      c.train.update(steps=30, log_every=10, checkpoint_every=30)
      c.optim.update(total_steps=30, warmup_steps=5)
  elif arg in ("sami", "sami_smoke"):
    # Principles world (pragjax/toyworld/sami.py): documents of about 20 word tokens, packed into 128-token rows.
    c.world = ConfigDict(dict(name="sami", num_docs=40_000, follow_rate=0.5, eval_queries=400,
                              eval_temperature=1.0, max_new_tokens=12))
    # A smaller decoder than the other worlds' (d=64, 3 layers, ~0.16M parameters): minutes on 2 CPU cores.
    c.model_arch.update(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=16, intermediate_size=192)
    c.train.update(steps=1500, batch_size=16, seq_len=128, log_every=50, checkpoint_every=250)
    c.optim.update(total_steps=1500, warmup_steps=50)
    if arg == "sami_smoke":
      c.model_arch.update(hidden_size=64, num_hidden_layers=2, intermediate_size=128)
      c.world.update(num_docs=2000, eval_queries=32)
      c.train.update(steps=30, log_every=10, checkpoint_every=30)
      c.optim.update(total_steps=30, warmup_steps=5)
  elif arg == "smoke":
    c.model_arch.update(hidden_size=64, num_hidden_layers=2, intermediate_size=128)
    c.world.update(num_docs=2000, eval_problems=32)
    c.train.update(steps=60, batch_size=32, log_every=10, checkpoint_every=30)
    c.optim.update(total_steps=60, warmup_steps=5)
  else:
    raise ValueError(f"unknown pretrain_toy variant {arg!r}; expected arithmetic, knowledge, priming, sami, smoke, "
                     "knowledge_smoke, priming_smoke or sami_smoke")
  return c
