"""Truth probes (sAwMIL and baselines, conformal three-way prediction) per layer of a model.

The run behind `python -m experiments.truth_probes` (usage, variants and outputs: its docstring and
`experiments/configs/truth_probes.py`).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data import cache
from pragjax.data.jsonl import write_json
from pragjax.methods.probes import activations, report
from pragjax.train import runner

LABELS = ("true", "false", "neither")
TRILEMMA = ("city_locations", "med_indications")
def knowledge_records(config) -> list[dict]:
  """The knowledge world's statements: {text, label (0 true, 1 false, 2 neither), group (the entity)}."""
  from pragjax.toyworld import knowledge as kw

  kb = kw.build_kb(config.data.kb_seed, config.data.num_entities)
  return [{"text": s.text, "label": LABELS.index(s.label), "group": s.entity}
          for s in kw.statements(kb, config.seed, config.data.per_label)]


def trilemma_dir(config) -> str:
  if config.data.trilemma_dir:
    return config.data.trilemma_dir
  return os.path.join(paths.shared_data_dir(), "trilemma")


def trilemma_records(config, name: str, workdir: str) -> list[dict]:
  """A trilemma CSV through its TFDS builder: true = correct & real_object, false = real_object & not correct,
  neither = not real_object; the group is the statement's entity (`object_1`)."""
  from pragjax.data import tfds_builders

  tfds_builders.build(f"trilemma/{name}", trilemma_dir(config), os.path.join(workdir, "tfds"))
  source = tfds_builders.data_source(f"trilemma/{name}", os.path.join(workdir, "tfds"))
  out = []
  for i in range(len(source)):
    r = source[i]
    label = 2 if not r["real_object"] else (0 if r["correct"] else 1)
    out.append({"text": r["statement"], "label": label, "group": r["object_1"]})
  return out


def load_records(config, name: str, workdir: str) -> list[dict]:
  if name == "knowledge":
    records = knowledge_records(config)
  elif name in TRILEMMA:
    records = trilemma_records(config, name, workdir)
  else:
    raise ValueError(f"unknown dataset {name!r}; available: knowledge, {', '.join(TRILEMMA)}")
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


def collect(loaded, config, name, records, layers, workdir, log) -> activations.BagStore:
  """The dataset's bag store, reused when the whole `model` section, the layers, the template and the statements
  match. The store is streamed to disk and read memory-mapped, so it keeps its own layout (`activations`); its key
  is a `pragjax.data.cache.fingerprint`."""
  key = cache.fingerprint({"model": config.model.to_dict(), "path": loaded.path, "layers": list(layers),
                           "chat_template": bool(config.data.chat_template)}, [r["text"] for r in records])
  out = os.path.join(workdir, "bags", name)
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


def _split(store, records, idx, layer) -> report.Split:
  bags, mask = store.bags(layer, idx)
  return report.Split(bags, mask, np.asarray([records[i]["label"] for i in idx]),
                      np.asarray([records[i]["group"] for i in idx]))


def run(config, workdir: str, log=print) -> dict:
  workdir = runner.prepare_workdir(workdir)
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  names = [n.strip() for n in config.data.datasets.split(",") if n.strip()]
  methods = [m.strip() for m in config.probe.methods.split(",") if m.strip()]
  options = {**config.probe.to_dict(), "seed": config.seed}
  out = {"config": config.to_dict(), "datasets": {}}
  with jax.set_mesh(mesh):
    loaded = runner.load_model(dict(config.model), mesh)
    layers = select_layers(config, loaded.config.num_hidden_layers)
    log(f"model {loaded.path}: {loaded.config.num_hidden_layers} blocks; probing layers {layers}")
    data = {}
    for name in names:
      records = load_records(config, name, workdir)
      store = collect(loaded, config, name, records, layers, workdir, log)
      splits = activations.entity_disjoint_split([r["group"] for r in records], test_fraction=config.split.test_fraction,
                                                 calibration_fraction=config.split.calibration_fraction,
                                                 seed=config.split.seed)
      counts = {s: np.bincount([records[i]["label"] for i in idx], minlength=3).tolist() for s, idx in splits.items()}
      classes = [k for k in range(3) if counts["train"][k] >= config.probe.min_positives and counts["test"][k] > 0]
      absent = [LABELS[k] for k in range(3) if not any(counts[s][k] for s in counts)]
      few = [LABELS[k] for k in range(3) if k not in classes and LABELS[k] not in absent]
      log(f"  {name}: statements per split (true, false, neither) {counts}; probed: "
          f"{', '.join(LABELS[k] for k in classes)}" +
          (f"; absent from the data: {', '.join(absent)}" if absent else "") +
          (f"; too few to probe (< {config.probe.min_positives} train or none in test): {', '.join(few)}"
           if few else ""))
      if len(classes) < 2:
        raise ValueError(f"{name}: only {[LABELS[k] for k in classes]} can be probed (statements per split "
                         f"{counts}); one-vs-all probes need at least two classes")
      if len(classes) == 2:
        log(f"  {name}: two classes only: the two one-vs-all probes are one binary problem seen from both sides; "
            f"the three-way and multiclass sets are over {', '.join(LABELS[k] for k in classes)}")
      data[name] = (records, store, splits, classes)
      out["datasets"][name] = {"counts": counts, "classes": [LABELS[k] for k in classes], "layers": {},
                               "transfer": {}}
    for layer in layers:
      fitted = {}
      for name in names:
        records, store, splits, classes = data[name]
        log(f"layer {layer}, {name}:")
        split_data = {s: _split(store, records, idx, layer) for s, idx in splits.items()}
        res, fitted[name] = report.evaluate_layer(split_data, classes, methods=methods, options=options,
                                                  alpha=config.conformal.alpha, mondrian=config.conformal.mondrian,
                                                  log=log)
        out["datasets"][name]["layers"][layer] = res
      for src in names:  # generalization: probes of `src` on the other datasets' test splits
        for dst in names:
          if dst == src:
            continue
          records, store, splits, classes = data[dst]
          shared = [k for k in classes if k in data[src][3]]
          res = report.transfer(fitted[src], _split(store, records, splits["test"], layer), shared)
          out["datasets"][src]["transfer"].setdefault(dst, {})[layer] = res
  _write(out, config, workdir, methods)
  return out


def _write(out, config, workdir, methods) -> None:
  for name, d in out["datasets"].items():
    classes = [LABELS.index(c) for c in d["classes"]]
    d["table_mcc"] = report.format_layer_table(d["layers"], methods)
    d["table_best"] = report.format_best_table(d["layers"], methods, classes, LABELS)
    if config.report.plot:
      d["plot"] = report.plot_layers(d["layers"], methods, classes, LABELS, os.path.join(workdir, f"{name}_layers.png"),
                                     title=f"{name}: probes per layer")
    for dst, per_layer in d["transfer"].items():
      d.setdefault("table_transfer", {})[dst] = report.format_layer_table(per_layer, methods)
  write_json(os.path.join(workdir, "results.json"), out, indent=1, default=_json_default)


def _json_default(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  return str(x)


def print_report(out: dict, alpha: float) -> None:
  for name, d in out["datasets"].items():
    print(f"\n## {name}: mean one-vs-all MCC on the test split ({', '.join(d['classes'])}; layer = block output)\n")
    print(d["table_mcc"])
    print(f"\n## {name}: each method at its best layer (conformal target coverage {1 - alpha:.2f})\n")
    print(d["table_best"])
    for dst, table in d.get("table_transfer", {}).items():
      print(f"\n## trained on {name}, tested on {dst} (mean one-vs-all MCC)\n")
      print(table)
    if "plot" in d:
      print(f"\nplot: {d['plot']}")


def print_summary(out: dict, config) -> None:
  """What `python -m experiments.truth_probes` prints at the end of a run."""
  print_report(out, config.conformal.alpha)
