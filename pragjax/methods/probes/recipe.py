"""Truth probes (sAwMIL and baselines, conformal three-way prediction) per layer of a model.

The run behind `python -m experiments.truth_probes` (usage, variants and outputs: its docstring and
`experiments/configs/truth_probes.py`).
"""

from __future__ import annotations

import csv
import os
import time

import jax
import numpy as np

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data import cache
from pragjax.data.errors import DataError
from pragjax.data.jsonl import write_json
from pragjax.eval.tables import markdown_table
from pragjax.methods.probes import activations, metrics, report
from pragjax.train import runner

LABELS = ("true", "false", "neither")
TRILEMMA = ("city_locations", "med_indications")
TRILEMMA_COLUMNS = ("statement", "object_1", "correct", "real_object")  # what the loader reads (+ `negation`)
SYNTHETIC_SUFFIX = "_synthetic"


def knowledge_records(config) -> list[dict]:
  """The knowledge world's statements: {text, label (0 true, 1 false, 2 neither), group (the entity), negated,
  source}; `data.toy_negation_fraction` / `data.toy_trailing_fraction` give the forms whose deciding token is
  not last (`pragjax.toyworld.knowledge.statements`)."""
  from pragjax.toyworld import knowledge as kw

  kb = kw.build_kb(config.data.kb_seed, config.data.num_entities)
  items = kw.statements(kb, config.seed, config.data.per_label,
                        negation_fraction=float(config.data.get("toy_negation_fraction", 0.0)),
                        trailing_fraction=float(config.data.get("toy_trailing_fraction", 0.0)))
  return [{"text": s.text, "label": LABELS.index(s.label), "group": s.entity, "negated": s.negated,
           "form": ("negated" if s.negated else "affirmative") + (" + clause" if s.clause else ""),
           "source": "kb" if s.label != "neither" else "unseen"} for s in items]


def trilemma_dir(config) -> str:
  if config.data.trilemma_dir:
    return config.data.trilemma_dir
  return os.path.join(paths.shared_data_dir(), "trilemma")


def dataset_name(entry: str) -> str:
  """The name a `data.datasets` entry goes by (bag store folder, tables): itself, or a CSV path's stem."""
  entry = entry.strip()
  if entry == "knowledge" or entry in TRILEMMA:
    return entry
  return os.path.splitext(os.path.basename(entry))[0]


def _synthetic_overrides(config) -> dict[str, str]:
  """`data.synthetic_paths`: comma-separated DATASET=PATH (PATH "none": no synthetic file)."""
  out = {}
  for item in str(config.data.get("synthetic_paths", "") or "").split(","):
    if not item.strip():
      continue
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"data.synthetic_paths entry {item!r} must read DATASET=PATH (PATH 'none' for no file)")
    out[key.strip()] = value.strip()
  return out


def trilemma_files(config, entry: str) -> tuple[str, str | None]:
  """(real CSV, synthetic CSV or None) of a `data.datasets` entry: a shipped name (files in
  `data.trilemma_dir`) or a path to a CSV in the trilemma format. The synthetic file is `<stem>_synthetic.csv`
  beside the real one when present, unless `data.synthetic_paths` names another (or 'none')."""
  entry = entry.strip()
  name = dataset_name(entry)
  if entry in TRILEMMA:
    real = os.path.join(trilemma_dir(config), f"{entry}.csv")
  elif entry.endswith(".csv") or os.sep in entry:
    real = entry
  else:
    raise ValueError(f"unknown dataset {entry!r}; expected knowledge, {', '.join(TRILEMMA)} or a path to a CSV in "
                     f"the trilemma format ({', '.join(TRILEMMA_COLUMNS)}, ...)")
  if not os.path.isfile(real):
    raise DataError(f"{real}: not found (dataset {entry!r})")
  overrides = _synthetic_overrides(config)
  if name in overrides or entry in overrides:
    synthetic = overrides.get(entry, overrides.get(name))
    if synthetic.lower() in ("", "none"):
      return real, None
    if not os.path.isfile(synthetic):
      raise DataError(f"{synthetic}: not found (data.synthetic_paths for {name!r})")
    return real, synthetic
  beside = os.path.join(os.path.dirname(real), os.path.splitext(os.path.basename(real))[0] + SYNTHETIC_SUFFIX + ".csv")
  return real, beside if os.path.isfile(beside) else None


def _bool_cell(value: str, path: str, line: int, column: str) -> bool:
  lowered = (value or "").strip().lower()
  if lowered not in ("true", "false"):
    raise DataError(f"{path}, line {line}, column {column!r}: expected TRUE/FALSE (any case), got {value!r}")
  return lowered == "true"


def read_trilemma_csv(path: str, source: str = "real") -> list[dict]:
  """Statements of one CSV in the trilemma format: true = `correct` & `real_object`, false = `real_object` &
  not `correct`, neither = not `real_object`; the group is the statement's entity (`object_1`); `negated` from
  the optional `negation` column. Extra columns are ignored; a malformed row raises DataError naming the
  file, the line and the column."""
  out = []
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or ())
    missing = [c for c in TRILEMMA_COLUMNS if c not in header]
    if missing:
      raise DataError(f"{path}, line 1: missing column(s) {missing} (header: {header}); the trilemma format needs "
                      f"{', '.join(TRILEMMA_COLUMNS)}")
    for row in reader:
      line = reader.line_num
      if None in row or any(row[c] is None for c in header):  # DictReader: extra cells under None, missing = None
        width = sum(row[c] is not None for c in header) + len(row.get(None) or ())
        raise DataError(f"{path}, line {line}: expected {len(header)} columns as in the header, got {width}")
      for c in ("statement", "object_1"):
        if not row[c].strip():
          raise DataError(f"{path}, line {line}, column {c!r}: empty")
      correct = _bool_cell(row["correct"], path, line, "correct")
      real = _bool_cell(row["real_object"], path, line, "real_object")
      negated = _bool_cell(row["negation"], path, line, "negation") if "negation" in header else False
      out.append({"text": row["statement"], "label": 2 if not real else (0 if correct else 1),
                  "group": row["object_1"].strip(), "negated": negated, "source": source})
  if not out:
    raise DataError(f"{path}: no statements")
  return out


def trilemma_records(config, entry: str) -> list[dict]:
  """A real CSV plus its synthetic ("neither") CSV when there is one (`trilemma_files`)."""
  real, synthetic = trilemma_files(config, entry)
  records = read_trilemma_csv(real, "real")
  if synthetic is not None:
    records += read_trilemma_csv(synthetic, "synthetic")
  return records


def load_records(config, name: str, workdir: str | None = None) -> list[dict]:
  """The statements of one `data.datasets` entry (knowledge, a shipped trilemma name or a CSV path), at most
  `data.max_statements` of them (a seeded random subset)."""
  del workdir  # CSVs are read directly (the synthetic files' columns differ from the TFDS builder's).
  records = knowledge_records(config) if name == "knowledge" else trilemma_records(config, name)
  if config.data.max_statements and len(records) > config.data.max_statements:
    keep = np.sort(np.random.default_rng([config.seed, 7]).permutation(len(records))[:config.data.max_statements])
    records = [records[i] for i in keep]
  return records


def select_layers(config, num_layers: int) -> list[int]:
  """`probe.layers`, or every `layer_stride`-th block from `min_depth` of the depth to the last."""
  if config.probe.layers:
    layers = [int(x) for x in str(config.probe.layers).split(",") if x.strip()]
  else:
    start = int(config.probe.min_depth * num_layers)
    layers = list(range(start, num_layers, config.probe.layer_stride))
    if layers[-1] != num_layers - 1:
      layers.append(num_layers - 1)
  bad = [l for l in layers if not 0 <= l < num_layers]
  if bad:
    raise ValueError(f"probe.layers {bad} outside 0..{num_layers - 1}")
  return layers


def bags_dir(config, workdir: str) -> str:
  """Where the activation bags live: `probe.bags_dir`, else WORKDIR/bags. The store is memory-mapped, so it must
  be a local directory; a workdir on an object store needs `probe.bags_dir` set."""
  directory = config.probe.get("bags_dir", "") or ""
  if not directory:
    if paths.is_uri(workdir):
      raise ValueError(f"the activation bags are a local memory-mapped store; workdir {workdir} is not local: set "
                       f"--config.probe.bags_dir to a local directory")
    directory = os.path.join(workdir, "bags")
  if paths.is_uri(directory):
    raise ValueError(f"--config.probe.bags_dir={directory}: must be a local directory (the bags are memory-mapped)")
  return str(paths.resolve(directory))


def collect(loaded, config, name, records, layers, workdir, log) -> activations.BagStore:
  """The dataset's bag store, reused when the whole `model` section, the layers, the template and the statements
  match. The store is streamed to disk and read memory-mapped, so it keeps its own layout (`activations`); its key
  is a `pragjax.data.cache.fingerprint`."""
  key = cache.fingerprint({"model": config.model.to_dict(), "path": loaded.path, "layers": list(layers),
                           "chat_template": bool(config.data.chat_template)}, [r["text"] for r in records])
  out = os.path.join(bags_dir(config, workdir), name)
  try:
    store = activations.BagStore(out)
    if store.meta.get("key") == key:
      log(f"  {name}: reusing {out}")
      return store
  except activations.BagStoreError:
    pass
  t0 = time.time()
  store = activations.collect_bags(loaded.model, loaded.tokenizer, [r["text"] for r in records], layers, out,
                                   batch_size=config.data.batch_size, chat_template=config.data.chat_template,
                                   meta={"key": key, "model": loaded.path, "dataset": name})
  log(f"  {name}: {store.num_bags} statements, {int(store.lengths.sum())} tokens, {len(layers)} layers "
      f"collected in {time.time() - t0:.0f}s")
  return store


def make_splits(groups, split, seed: int) -> dict[str, np.ndarray]:
  """Statement indices of train / validation / calibration / test, every entity in one split only.

  Test takes `split.test_fraction` of the statements, calibration `split.calibration_fraction` of the rest
  (`activations.entity_disjoint_split`, seed `seed`), and validation `split.validation_fraction` of what is
  left (its own stream); the remainder is train. Validation only chooses layers; calibration only
  calibrates the conformal sets; test is only scored.
  """
  vf = float(split.validation_fraction)
  if not 0.0 < vf < 1.0:
    raise ValueError(f"split.validation_fraction must lie in (0, 1) (layers are chosen on it), got {vf}")
  groups = np.asarray([str(g) for g in groups])
  sp = activations.entity_disjoint_split(groups, test_fraction=split.test_fraction,
                                         calibration_fraction=split.calibration_fraction, seed=seed)
  train = sp["train"]
  inner = activations.entity_disjoint_split(groups[train], test_fraction=vf, calibration_fraction=0.0,
                                            seed=(seed + 1) * 7_919 + 0x56)
  return {"train": train[inner["train"]], "validation": train[inner["test"]], "calibration": sp["calibration"],
          "test": sp["test"]}


def _form(record: dict) -> str:
  return record.get("form") or ("negated" if record.get("negated") else "affirmative")


def _by_form(records, splits, tests, best, classes) -> dict:
  """Mean one-vs-all MCC on test statements of each form (affirmative, negated, ...), per method at its
  validation-chosen layer, mean over re-splits."""
  forms = sorted({_form(r) for r in records})
  out = {}
  for m, layer in best.items():
    out[m] = {}
    for form in forms:
      values = []
      for sp, t in zip(splits, tests):
        keep = np.asarray([_form(records[i]) == form for i in sp["test"]])
        if keep.sum() >= 2:
          values.append(metrics.ova_means(t["labels"][keep], t["scores"][layer][m][keep], classes)[0])
      out[m][form] = {"mcc_mean": float(np.mean(values)) if values else float("nan"),
                      "statements": int(np.mean([np.sum([_form(records[i]) == form for i in sp["test"]])
                                                 for sp in splits]))}
  return out


def run(config, workdir: str, log=print) -> dict:
  """The whole protocol -> results (also in WORKDIR/results.json).

  1. Every dataset's bags are collected once (`collect`, all of `probe.layers`).
  2. `split.num_resplits` entity-disjoint re-splits per dataset (`make_splits`, seeds `split.seed + r`):
     train / validation / calibration / test.
  3. Per layer and re-split, every method of `probe.methods` is fitted one-vs-all on train, scored on
     validation (which chooses layers), calibrated on calibration and scored on test
     (`report.evaluate_layer`); the probes of each dataset are also scored on the other datasets' test splits
     of the same re-split (transfer).
  4. Per dataset: results aggregated over re-splits with intervals (`report.aggregate_layers`), each
     method's layer chosen on validation (`report.best_layers`), the acceptance hypothesis
     (`report.verdict`, re-split x entity cluster bootstrap), test MCC by statement form at the chosen
     layers, transfer at the source's chosen layer (`report.transfer_at_best`), and the test scores in
     WORKDIR/scores/<dataset>.npz.

  results["datasets"][name]: counts (re-split 0) and counts_per_resplit, forms, classes, layers (aggregated:
  every number a mean over re-splits, `spread` holding the per-re-split values and intervals), best_layers,
  verdict, by_form, resplits (each re-split's own per-layer results and transfer), transfer / transfer_best,
  tables; results["verdict"]: per dataset and overall `met` (True / False / None = undecidable).
  """
  t_start = time.time()
  workdir = runner.prepare_workdir(workdir)
  bags_dir(config, workdir)  # a workdir on an object store needs a local bags directory: say so before loading
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  entries = [n.strip() for n in config.data.datasets.split(",") if n.strip()]
  names = [dataset_name(e) for e in entries]
  if len(set(names)) != len(names):
    raise ValueError(f"data.datasets {entries}: two entries share the name {names} (a CSV's stem); rename one")
  methods = [m.strip() for m in config.probe.methods.split(",") if m.strip()]
  options = {**config.probe.to_dict(), "seed": config.seed}
  num_resplits = int(config.split.num_resplits)
  if num_resplits < 1:
    raise ValueError(f"split.num_resplits must be >= 1, got {num_resplits}")
  agg = dict(level=float(config.report.ci_level), num_samples=int(config.report.bootstrap_samples), seed=config.seed)
  out = {"config": config.to_dict(), "datasets": {}, "timing": {"collect_s": {}, "probe_s_per_layer": {}}}
  with jax.set_mesh(mesh):
    loaded = runner.load_model(dict(config.model), mesh)
    layers = select_layers(config, loaded.config.num_hidden_layers)
    log(f"model {loaded.path}: {loaded.config.num_hidden_layers} blocks; probing layers {layers}; "
        f"{num_resplits} entity-disjoint re-split(s)")
    data = {}
    for entry, name in zip(entries, names):
      records = load_records(config, entry, workdir)
      t0 = time.time()
      store = collect(loaded, config, name, records, layers, workdir, log)
      out["timing"]["collect_s"][name] = time.time() - t0
      groups = [r["group"] for r in records]
      splits = [make_splits(groups, config.split, int(config.split.seed) + r) for r in range(num_resplits)]
      counts = [{s: np.bincount([records[i]["label"] for i in idx], minlength=3).tolist() for s, idx in sp.items()}
                for sp in splits]
      classes = [k for k in range(3) if all(c["train"][k] >= config.probe.min_positives and c["validation"][k] > 0
                                            and c["test"][k] > 0 for c in counts)]
      absent = [LABELS[k] for k in range(3) if not any(r["label"] == k for r in records)]
      few = [LABELS[k] for k in range(3) if k not in classes and LABELS[k] not in absent]
      forms = {f: sum(_form(r) == f for r in records) for f in sorted({_form(r) for r in records})}
      log(f"  {name}: {len(records)} statements ({', '.join(f'{v} {k}' for k, v in forms.items())}); per split "
          f"(true, false, neither), re-split 0: {counts[0]}; probed: {', '.join(LABELS[k] for k in classes)}" +
          (f"; absent from the data: {', '.join(absent)}" if absent else "") +
          (f"; too few to probe (< {config.probe.min_positives} train, or none in validation or test, in some "
           f"re-split): "
           f"{', '.join(few)}" if few else ""))
      if len(classes) < 2:
        raise ValueError(f"{name}: only {[LABELS[k] for k in classes]} can be probed (statements per split "
                         f"{counts[0]}); one-vs-all probes need at least two classes")
      if len(classes) == 2:
        log(f"  {name}: two classes only: the two one-vs-all probes are one binary problem seen from both sides; "
            f"the three-way and multiclass sets are over {', '.join(LABELS[k] for k in classes)}")
      labels = np.asarray([r["label"] for r in records])
      tests = [{"index": sp["test"], "labels": labels[sp["test"]], "groups": np.asarray(groups)[sp["test"]],
                "scores": {}} for sp in splits]
      data[name] = (records, store, splits, classes, labels, np.asarray(groups), tests)
      out["datasets"][name] = {"counts": counts[0], "counts_per_resplit": counts, "forms": forms,
                               "classes": [LABELS[k] for k in classes], "source": entry}
    per_resplit = {n: [{} for _ in range(num_resplits)] for n in names}
    transfer = {(s, d): [{} for _ in range(num_resplits)] for s in names for d in names if s != d}
    for layer in layers:
      t0 = time.time()
      for r in range(num_resplits):
        fitted = {}
        for name in names:
          records, store, splits, classes, labels, groups, tests = data[name]
          split_data = {s: report.Split(*store.bags(layer, idx), labels[idx], groups[idx])
                        for s, idx in splits[r].items()}
          log(f"layer {layer}, re-split {r}, {name}:")
          keep = {}
          res, fitted[name] = report.evaluate_layer(
              split_data, classes, methods=methods, options=options, alpha=config.conformal.alpha,
              mondrian=config.conformal.mondrian, resplit_repeats=int(config.conformal.resplit_repeats),
              keep_scores=keep, log=log)
          per_resplit[name][r][layer] = res
          tests[r]["scores"][layer] = keep
        for (src, dst), per in transfer.items():  # generalisation: probes of `src` on `dst`'s test split
          _, store, splits, classes, labels, groups, _ = data[dst]
          idx = splits[r]["test"]
          shared = [k for k in classes if k in data[src][3]]
          per[r][layer] = report.transfer(fitted[src], report.Split(*store.bags(layer, idx), labels[idx], groups[idx]),
                                          shared)
      out["timing"]["probe_s_per_layer"][layer] = time.time() - t0
  for name in names:
    records, _, splits, classes, _, _, tests = data[name]
    d = out["datasets"][name]
    d["layers"] = report.aggregate_layers(per_resplit[name], methods, **agg)
    d["best_layers"] = report.best_layers(d["layers"], methods)
    d["verdict"] = report.verdict(d["layers"], tests, methods, classes, reference="sawmil",
                                  target_coverage=1.0 - config.conformal.alpha,
                                  coverage_tolerance=float(config.report.coverage_tolerance), **agg)
    d["by_form"] = _by_form(records, splits, tests, d["best_layers"], classes)
    d["resplits"] = [{"layers": per_resplit[name][r],
                      "transfer": {dst: transfer[(name, dst)][r] for dst in names if dst != name}}
                     for r in range(num_resplits)]
    _save_scores(workdir, name, tests, methods)
  for name in names:
    d = out["datasets"][name]
    d["transfer"], d["transfer_best"] = {}, {}
    for dst in names:
      if dst != name:
        d["transfer"][dst] = report.aggregate_layers(transfer[(name, dst)], methods, **agg)
        d["transfer_best"][dst] = report.transfer_at_best(d["layers"], d["transfer"][dst],
                                                          out["datasets"][dst]["layers"], methods)
  out["verdict"] = {"per_dataset": {n: out["datasets"][n]["verdict"]["met"] for n in names}}
  out["verdict"]["met"] = report.all_met(list(out["verdict"]["per_dataset"].values()))
  out["timing"]["total_s"] = time.time() - t_start
  _write(out, config, workdir, methods)
  return out


def _save_scores(workdir: str, name: str, tests, methods) -> None:
  """WORKDIR/scores/<dataset>.npz: per re-split r its test statements (`r{r}_index`: row in the dataset's
  statements, the bag store's order), their labels (`r{r}_labels`, 0 true, 1 false, 2 neither) and entities
  (`r{r}_groups`), and every method's test scores per layer (`r{r}_l{layer}_{method}`: [n, K], one column per
  probed class, >= 0 = that class), enough to recompute any test metric or interval."""
  arrays = {}
  for r, t in enumerate(tests):
    arrays[f"r{r}_index"], arrays[f"r{r}_labels"] = t["index"], t["labels"]
    arrays[f"r{r}_groups"] = t["groups"].astype(str)
    for layer, per in t["scores"].items():
      for m in methods:
        arrays[f"r{r}_l{layer}_{m}"] = per[m]
  if jax.process_index() == 0:
    paths.save_npz(paths.join(workdir, "scores", f"{name}.npz"), **arrays)


def _write(out, config, workdir, methods) -> None:
  for name, d in out["datasets"].items():
    classes = [LABELS.index(c) for c in d["classes"]]
    d["table_mcc"] = report.format_layer_table(d["layers"], methods, best=d["best_layers"])
    d["table_validation"] = report.format_layer_table(d["layers"], methods, key="validation_mcc_mean",
                                                      best=d["best_layers"])
    d["table_best"] = report.format_best_table(d["layers"], methods, classes, LABELS)
    d["table_verdict"] = report.format_verdict(d["verdict"])
    d["table_forms"] = markdown_table(
        [[report.METHOD_NAMES.get(m, m), str(d["best_layers"][m])] + [v["mcc_mean"] for v in per.values()]
         for m, per in d["by_form"].items()],
        ["method", "layer"] + [f"{f} ({v['statements']} test)" for f, v in next(iter(d["by_form"].values())).items()],
        formats={f"{f} ({v['statements']} test)": ".3f" for f, v in next(iter(d["by_form"].values())).items()})
    if config.report.plot:
      d["plot"] = report.plot_layers(d["layers"], methods, classes, LABELS, paths.join(workdir, f"{name}_layers.png"),
                                     title=f"{name}: probes per layer", target_coverage=1 - config.conformal.alpha,
                                     coverage_tolerance=float(config.report.coverage_tolerance))
    for dst, per_layer in d["transfer"].items():
      d.setdefault("table_transfer", {})[dst] = report.format_layer_table(per_layer, methods)
      d.setdefault("table_transfer_best", {})[dst] = report.format_transfer_table(d["transfer_best"][dst])
  write_json(paths.join(workdir, "results.json"), out, indent=1, default=_json_default)


def _json_default(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  return str(x)


def print_report(out: dict, alpha: float) -> None:
  for name, d in out["datasets"].items():
    n = len(d.get("counts_per_resplit", [d["counts"]]))
    interval = f" [95% interval over {n} re-splits]" if n > 1 else ""
    print(f"\n## {name}: test mean one-vs-all MCC per layer{interval} ({', '.join(d['classes'])}; layer = block "
          f"output; bold = the layer chosen on the validation split)\n")
    print(d["table_mcc"])
    print(f"\n## {name}: validation mean one-vs-all MCC per layer (what chooses the layer)\n")
    print(d["table_validation"])
    print(f"\n## {name}: each method at its validation-chosen layer (conformal target coverage {1 - alpha:.2f})\n")
    print(d["table_best"])
    print(f"\n## {name}: acceptance hypothesis\n")
    print(d["table_verdict"])
    print(f"\n## {name}: test mean one-vs-all MCC by statement form, at the chosen layers\n")
    print(d["table_forms"])
    for dst, table in d.get("table_transfer_best", {}).items():
      print(f"\n## trained on {name}, tested on {dst}, at the layer chosen on {name}'s validation split\n")
      print(table)
    if "plot" in d:
      print(f"\nplot: {d['plot']}")
  v = out.get("verdict")
  if v:
    print(f"\nverdict (both parts of the hypothesis, every dataset): {report.verdict_word(v['met'])} "
          f"({', '.join(f'{k}: {report.verdict_word(m)}' for k, m in v['per_dataset'].items())})")


def print_summary(out: dict, config) -> None:
  """What `python -m experiments.truth_probes` prints at the end of a run."""
  print_report(out, config.conformal.alpha)
