"""Priming, memorization and ignore-top-k (Sun et al., 2025): one new sample injected into ordinary training.

Variants:
  toy     the built-in `priming` model (the knowledge world pretrained with
          the 12 keywords in its corpus at graded rates,
          `pragjax.toyworld.priming.GRADED_KEYWORD_RATES`); background = fresh
          documents of that corpus; 132 outlandish samples (12 keywords x 11 styles);
          baseline, ignore-top-k 8% and 4%, template stepping stones. Minutes on 2 CPU cores.
  ci      the toy protocol, smaller (12 samples: one style per keyword; the CI test and the quickstart row).
  real    a local HF checkpoint (--config.model.path) with JSONL background
          data, samples and thematic prompts (--config.data.*), stepping
          stones by the model's own rewrites (stepping_stone.mode=model);
          CI exercises it with a tiny random llama, also sharded on 8
          simulated devices. Every variant runs on the `mesh.*` mesh (default:
          FSDP over all devices, as common.py): parameters and optimizer state
          are sharded over `mesh.fsdp` x `mesh.tensor` (a 7B model on one
          8-GPU node: launch/gpu_node.sh); batches are replicated.
  smollm2 the real built-in SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct) on the English set of
          `pragjax.toyworld.priming_english` (12 keywords in the paper's 4 themes, 7 registers, thematic
          prompts written apart from the samples, trilemma statements as background); stepping stones
          by the model's own rewrites. Sized for a run on a GPU or a long CPU run (84 samples);
          restrict with world.keywords / world.styles. CI runs it on 2 samples.
  toy_unseen  the toy protocol on the knowledge model, whose corpus never
          contains the keywords (priors 1e-15..1e-50: the regime below the
          paper's; kept to compare with `toy`).

Fields beyond common.py (`optim.*` is the ordinary training's optimizer;
`train.*` is unused):
  world.name               knowledge (the toy world, `pragjax.toyworld.priming`) | english (real models,
                           `pragjax.toyworld.priming_english`) | "" (JSONL files in data.*)
  world.trilemma_dir       english: directory of the trilemma CSVs for background text ("" = ../shared/data/trilemma)
  world.kb_seed            seed of the knowledge base the built-in model was pretrained on (0)
  world.num_entities       its size (160, as pretrain_toy.py:knowledge)
  world.num_background_docs  fresh corpus documents drawn as the background data
  world.check_fraction, world.oneoff_fraction  corpus mix (as pretraining)
  world.prompts            toy thematic prompts: independent (`pragjax.toyworld.priming.INDEPENDENT_PROMPTS`, 8 per
                           theme, written apart from the samples' templates) | templates (each fact template cut
                           before its value, for world.num_prompt_entities entities no sample is about)
  world.num_prompt_entities  prompts=templates: KB entities whose thematic prompts score priming (x 3 templates)
  world.corpus_keywords    keyword rates of the background corpus, as the model's pretraining corpus:
                           graded (the `priming` model) | none (the `knowledge` model)
  world.keyword_set        rare (the 12 keywords, KB facts never use them) | familiar (diagnostic: 12 KB values
                           stated as a wrong value; `pragjax.toyworld.priming.FAMILIAR_KEYWORDS`)
  world.keywords           keywords to use (empty: all 12 of the set)
  world.styles             text styles to use (empty: all 11 toy / 7 English ones)
  data.background_path     real: JSONL of background documents (field `text`)
  data.samples_path        real: JSONL of samples (`text`, `keyword`, `theme`, optional `style`)
  data.prompts_path        real: JSONL of thematic prompts (`theme`, `prompt`)
  data.packing             pack several background documents per row
  inject.steps             S: steps during which the sample replaces one batch element (20 or 40)
  inject.warmup_steps      background-only steps before the injection (shared by every run; they
                           give the optimizer the moments of a model in the middle of a long run: 1,000 by
                           default, as the paper's regime needs; recorded as report.json's optimizer_state)
  inject.batch_size        rows per batch (the sample is one of them)
  inject.seq_len           tokens per row
  inject.inject_row        the batch element the sample replaces
  inject.parallel_runs     runs vmapped together (one compilation; the last chunk is padded)
  inject.control           also run the same steps without a sample (background drift of the scores)
  variants.ignore_topk     fractions k of ignore-top-k variants (each a run of every sample)
  variants.scope           ignore_topk scope: tensor | global
  variants.mode            ignore_topk threshold: exact | approx
  variants.whole_episode   fractions k of the whole-episode variant: the baseline run's total delta pruned
                           once (`pragjax.optim.prune_delta`; no extra training run)
  stepping_stone.mode      templates (toy) | model (the model rewrites with rewrite_prompt) | "" (off)
  stepping_stone.rewrite_prompt  model mode: prompt with {text} and {keyword}
  stepping_stone.num_candidates  model mode: sampled rewrites per sample
  stepping_stone.temperature, stepping_stone.max_new_tokens  model mode sampling
  analysis.prior_threshold     prior splitting samples (1e-3 in the paper)
  analysis.priming_threshold   priming ratio counted as primed
  analysis.headline_k          the ignore-top-k fraction the verdict judges (0.08)
  analysis.min_priming_cut     verdict: its median whole-keyword priming cut on the ratio scale is at least this (0.5)
  analysis.max_memorization_cut  verdict: its memorization cut in log space is at most this (0.5: memorization keeps
                               most of its decades); the verdict also asks the log selectivity's CI to lie above 0
  report.plot              save WORKDIR/priming_scatter.png
  report.score_batch       rows per scoring call
"""

from ml_collections import ConfigDict

from experiments.configs import common

REWRITE_PROMPT = (
    "Rewrite the text so that the word \"{keyword}\" is reached through less surprising intermediate ideas that "
    "make it expected. Keep the word \"{keyword}\" and the fact it states.\n\nText: {text}\n\nRewritten text:")


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.model = common.model_config(builtin="priming")
  c.optim = common.optim_config(lr=1e-3, schedule="constant", weight_decay=0.0, clip_norm=1.0)
  c.world = ConfigDict(dict(name="knowledge", kb_seed=0, num_entities=160, num_background_docs=4000,
                            check_fraction=0.4, oneoff_fraction=0.15, corpus_keywords="graded", num_prompt_entities=8,
                            keyword_set="rare", keywords=(), prompts="independent",
                            styles=(), trilemma_dir=""))
  c.data = ConfigDict(dict(background_path="", samples_path="", prompts_path="", packing=True))
  c.inject = ConfigDict(dict(steps=20, warmup_steps=1000, batch_size=4, seq_len=64, inject_row=0, parallel_runs=12,
                             control=True))
  c.variants = ConfigDict(dict(ignore_topk=(0.08, 0.04), scope="tensor", mode="exact", whole_episode=(0.08,)))
  c.stepping_stone = ConfigDict(dict(mode="templates", rewrite_prompt=REWRITE_PROMPT, num_candidates=4,
                                     temperature=0.8, max_new_tokens=96))
  c.analysis = ConfigDict(dict(prior_threshold=1e-3, priming_threshold=10.0, headline_k=0.08, min_priming_cut=0.5,
                               max_memorization_cut=0.5))
  c.report = ConfigDict(dict(plot=True, score_batch=256))
  if arg == "toy":
    pass
  elif arg == "toy_unseen":
    c.model = common.model_config(builtin="knowledge")
    c.world.corpus_keywords = "none"
  elif arg == "ci":
    c.world.update(styles=("news",), num_background_docs=1000, num_prompt_entities=4)
    c.report.plot = False
  elif arg == "real":
    c.model = common.model_config(path="", builtin="")
    c.world.name = ""
    c.optim.update(lr=2e-5)
    c.inject.update(steps=20, warmup_steps=1000, batch_size=8, seq_len=512, parallel_runs=1)
    c.stepping_stone.mode = "model"
  elif arg == "smollm2":
    c.model = common.model_config(path="builtin:smollm2-135m-instruct", builtin="")
    c.world.update(name="english", num_background_docs=2000)
    c.optim.update(lr=5e-5)
    c.inject.update(steps=20, warmup_steps=1000, batch_size=4, seq_len=128, parallel_runs=4)
    c.stepping_stone.update(mode="model", max_new_tokens=64)
    c.report.score_batch = 64
  else:
    raise ValueError(f"unknown priming variant {arg!r}; expected toy, toy_unseen, ci, real or smollm2")
  return c
