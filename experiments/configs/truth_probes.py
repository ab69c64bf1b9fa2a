"""Truth probes (sAwMIL, Savcisens & Eliassi-Rad 2025): true / false / neither from residual-stream bags.

Variants:
  toy       the built-in `knowledge` model on its own world's true, false and
            neither statements (no files needed; minutes on 2 CPU cores)
  trilemma  ../shared/data/trilemma (city_locations, med_indications) with
            any loadable checkpoint: --config.model.path=/ckpt/...
  ci        `trilemma` on 150 statements per dataset at a fixed C = 1 (tests: a
            tiny random HF model; cross-validation has its own unit tests)
  smollm2   the real built-in SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct) on the trilemma
            data (city_locations, med_indications), every block from 10% depth (3..29 of 30)
  llama8b   7-9B checkpoints (Llama-3-8B, Mistral-7B, Gemma-2-9B, Qwen2.5-7B) on
            the trilemma data, every layer from 10% depth, bfloat16 on one GPU:
            launch/gpu_node.sh truth_probes --config=experiments/configs/truth_probes.py:llama8b \
                --config.model.path=/ckpt/Meta-Llama-3-8B --workdir=/runs/truth_llama8b
  mistral7b, gemma2_9b, qwen2_5_7b   the same settings as llama8b under the
            family's name (the family comes from the checkpoint's config.json;
            Gemma-2 takes the soft-capped attention path by itself). Depth
            sweep: blocks int(0.1 L)..L-1, i.e. 3..31 for Llama-3-8B and
            Mistral-7B (L = 32), 4..41 for Gemma-2-9B (42), 2..27 for
            Qwen2.5-7B (28). Disk: tokens x probed layers x hidden x 2 bytes
            (trilemma, about 1.7e5 tokens: ~40 GB for an 8B model); the probes
            read one layer at a time.

Fields (beyond seed, model.*, mesh.*, runtime.* of common.py):
  data.datasets          comma-separated: knowledge | city_locations | med_indications
  data.per_label         knowledge: true, false and neither statements each
  data.num_entities      knowledge: KB size; must equal the pretraining config's
                         (the shipped model knows `build_kb(data.kb_seed, data.num_entities)`)
  data.kb_seed           knowledge: the KB's seed (the pretraining seed)
  data.trilemma_dir      directory with {dataset}.csv ("" = ../shared/data/trilemma)
  data.max_statements    per dataset, a seeded random subset (0 = all)
  data.chat_template     wrap each statement as one user turn of the tokenizer's template
  data.batch_size        statements per forward pass when collecting activations
  split.test_fraction    share of statements in test (whole entities)
  split.calibration_fraction  share of the remaining statements for conformal calibration
  split.seed             the entity assignment's seed
  probe.layers           comma-separated block indices ("" = every `layer_stride`-th block
                         from `min_depth` of the depth to the last)
  probe.min_depth, probe.layer_stride
  probe.methods          comma-separated: sawmil, mean_diff, svm_last, logreg_last
  probe.C                fixed C (<= 0: cross-validation over probe.C_grid)
  probe.C_grid, probe.n_folds     cross-validation grid and folds (bag mAP, one-SE rule)
  probe.eta              sAwMIL top-eta share (<= 0: share of intra-bag tokens)
  probe.num_known_positives  the last-k rule's k
  probe.min_positive_fraction  the relabelling fallback threshold (5%)
  probe.max_bag_size, probe.max_train_bags, probe.cv_max_bags   caps (0 = none)
  probe.tol              SVM stopping rule: relative duality gap (certified, see pragjax/methods/probes/svm.py)
  probe.solver           dcd | fista | auto (dual coordinate descent on CPU, FISTA on accelerators)
  probe.max_epochs, probe.max_iters   DCD epoch and FISTA step caps
  probe.min_positives    a class with fewer training statements is not probed
  conformal.alpha        significance (coverage target 1 - alpha)
  conformal.mondrian     label-conditional calibration instead of the paper's marginal one
  report.plot            write per-layer PNGs into the workdir
"""

from ml_collections import ConfigDict

from experiments.configs import common

REAL_SCALE = ("llama8b", "mistral7b", "gemma2_9b", "qwen2_5_7b")


def get_config(arg: str = "toy") -> ConfigDict:
  base = common.base_config()
  c = ConfigDict(dict(seed=0, model=common.model_config(builtin="knowledge"), mesh=base.mesh, runtime=base.runtime))
  c.data = ConfigDict(dict(datasets="knowledge", per_label=300, num_entities=160, kb_seed=0, trilemma_dir="",
                           max_statements=0, chat_template=False, batch_size=64))
  c.split = ConfigDict(dict(test_fraction=0.25, calibration_fraction=0.25, seed=0))
  c.probe = ConfigDict(dict(
      layers="", min_depth=0.1, layer_stride=1, methods="sawmil,mean_diff,svm_last,logreg_last", C=-1.0,
      C_grid=(0.05, 0.1, 0.5, 1.0, 10.0), n_folds=3, eta=-1.0, num_known_positives=2, min_positive_fraction=0.05,
      max_bag_size=10, max_train_bags=1800, cv_max_bags=600, tol=1e-4, solver="auto", max_epochs=500,
      max_iters=20_000, min_positives=10))
  c.conformal = ConfigDict(dict(alpha=0.1, mondrian=False))
  c.report = ConfigDict(dict(plot=True))
  if arg == "toy":
    pass
  elif arg == "smollm2":
    c.model = common.model_config(path="builtin:smollm2-135m-instruct", builtin="")
    c.data.update(datasets="city_locations,med_indications", batch_size=32)
  elif arg in ("trilemma", "ci") + REAL_SCALE:
    c.model = common.model_config(path="", builtin="")
    c.data.datasets = "city_locations,med_indications"
    if arg == "ci":
      c.data.update(max_statements=150, batch_size=32)
      c.probe.update(layers="", C=1.0, n_folds=3, cv_max_bags=90)  # fixed C: CV has its own unit tests
      c.report.plot = False
    if arg in REAL_SCALE:
      c.model.update(dtype="bfloat16")
      c.data.batch_size = 32
  else:
    raise ValueError(f"unknown truth_probes variant {arg!r}; expected toy, trilemma, ci, smollm2 or one of "
                     f"{REAL_SCALE}")
  return c
