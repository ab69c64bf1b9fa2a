"""Priming and ignore-top-k: inject one surprising sample into ordinary training, measure priming and memorization.

The run behind `python -m experiments.priming` (usage, variants and outputs: its docstring and
`experiments/configs/priming.py`).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data import cache
from pragjax.data.jsonl import read_jsonl, write_json
from pragjax.eval import batching
from pragjax.eval.tables import markdown_table
from pragjax.methods.priming import injection
from pragjax.methods.priming import scores as scores
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.optim import make_optimizer
from pragjax.toyworld import knowledge as kw
from pragjax.toyworld import priming as pw
from pragjax.train import checks, runner
from pragjax.train.state import init_train_state, state_shardings

# ---------------------------------------------------------------------------------------------- worlds


def toy_world(config) -> tuple[list[pw.Sample], dict[str, list[str]], list[str]]:
  """(samples, thematic prompts per theme, background documents) of the knowledge world."""
  w = config.world
  kb = kw.build_kb(w.kb_seed, w.num_entities)
  prompt_entities, sample_entities = pw.split_entities(kb, config.seed, w.num_prompt_entities)
  samples = pw.outlandish_samples(kb, sample_entities, config.seed, keywords=tuple(w.keywords),
                                  styles=tuple(w.styles), keyword_set=w.keyword_set)
  if w.get("prompts", "independent") == "independent":
    prompts = {t.name: list(pw.INDEPENDENT_PROMPTS[t.name]) for t in kw.THEMES}
  elif w.prompts == "templates":
    prompts = {t.name: pw.thematic_prompts(t.name, prompt_entities) for t in kw.THEMES}
  else:
    raise ValueError(f"config.world.prompts={w.prompts!r}; expected 'independent' or 'templates'")
  docs = kw.corpus(kb, np.random.default_rng([0x42474B, config.seed]), w.num_background_docs,
                   check_fraction=w.check_fraction, oneoff_fraction=w.oneoff_fraction,
                   keyword_rates=pw.corpus_keyword_rates(w.corpus_keywords))
  return samples, prompts, docs


def english_world(config) -> tuple[list[pw.Sample], dict[str, list[str]], list[str]]:
  """The English set for real models (`pragjax.toyworld.priming_english`): outlandish facts in several registers,
  independent thematic prompts, and trilemma statements as background documents."""
  from pragjax.toyworld import priming_english as pe

  w = config.world
  trilemma = w.get("trilemma_dir", "") or os.path.join(paths.shared_data_dir(), "trilemma")
  samples = pe.outlandish_samples(tuple(w.keywords), tuple(w.styles), seed=config.seed)
  docs = pe.background_documents(trilemma, num_docs=w.num_background_docs, seed=config.seed)
  return samples, pe.thematic_prompts(), docs


def _field(record: dict, name: str, where: str) -> str:
  if not isinstance(record.get(name), str):
    raise ValueError(f"{where}: missing string field {name!r} (present: {sorted(record)})")
  return record[name]


def file_world(config) -> tuple[list[pw.Sample], dict[str, list[str]], list[str]]:
  """The same from `data.samples_path`, `data.prompts_path` and `data.background_path` (JSONL)."""
  d = config.data
  for key in ("samples_path", "prompts_path", "background_path"):
    if not d[key]:
      raise ValueError(f"config.data.{key} is empty (world.name is '', so the data come from JSONL files)")
  samples = []
  for i, r in enumerate(read_jsonl(d.samples_path)):
    where = f"{d.samples_path}, record {i}"
    s = pw.Sample(_field(r, "text", where), _field(r, "keyword", where), _field(r, "theme", where),
                  str(r.get("style", "")), "", -1)
    pw.context_before(s.text, s.keyword)  # the keyword must occur after a space
    samples.append(s)
  prompts: dict[str, list[str]] = {}
  for i, r in enumerate(read_jsonl(d.prompts_path)):
    where = f"{d.prompts_path}, record {i}"
    prompts.setdefault(_field(r, "theme", where), []).append(_field(r, "prompt", where))
  missing = sorted({s.theme for s in samples} - set(prompts))
  if missing:
    raise ValueError(f"{d.prompts_path}: no thematic prompts for theme(s) {missing} used in {d.samples_path}")
  docs = [_field(r, "text", f"{d.background_path}, record {i}") for i, r in enumerate(read_jsonl(d.background_path))]
  return samples, prompts, docs


# --------------------------------------------------------------------------------------------- scoring


def score_inputs(tok, samples, prompts: dict[str, list[str]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per sample, its theme's prompts then its own context, each followed by its keyword.

  Returns (`keyword_batch` arrays `[N, R, T]` with R = 1 + the most prompts of
  any theme, padded by repeating the first prompt; a `[N, R]` mask of real
  prompt rows (the last column, the own context, is 0)).
  """
  r = 1 + max(len(p) for p in prompts.values())
  contexts, keys, valid = [], [], np.zeros((len(samples), r), bool)
  for n, s in enumerate(samples):
    p = prompts[s.theme]
    valid[n, :len(p)] = True
    contexts += list(p) + [p[0]] * (r - 1 - len(p)) + [s.context]
    keys += [s.keyword] * r
  batch = scores.keyword_batch(tok, contexts, keys)
  return {k: v.reshape(len(samples), r, -1) for k, v in batch.items()}, valid


def context_inputs(tok, samples) -> dict[str, np.ndarray]:
  """Each sample's own context followed by its keyword, as `[N, 1, T]` `keyword_batch` arrays."""
  batch = scores.keyword_batch(tok, [s.context for s in samples], [s.keyword for s in samples])
  return {k: v[:, None] for k, v in batch.items()}


def score_all(fn, params, inputs: dict[str, np.ndarray], batch: int) -> np.ndarray:
  """`fn(params, rows)` over `[N, R, T]` inputs in flattened chunks of `batch` rows -> `[N, R, ...]` float64
  (`[N, R, 2]` for `scores.keyword_scores_fn`: whole keyword, first token).

  Chunks come from `pragjax.eval.batching.map_batches`: the last one is filled
  with zero rows, and each is sharded over the current mesh's batch axes.
  """
  n, r, t = inputs["input_ids"].shape
  flat = {k: v.reshape(n * r, t) for k, v in inputs.items()}
  out = batching.map_batches(lambda chunk: fn(params, chunk), flat, batch_size=batch)
  out = np.asarray(out, np.float64)
  return out.reshape(n, r, *out.shape[1:])


def _summarize(logp_after: np.ndarray, logp_before: np.ndarray, valid: np.ndarray, suffix: str) -> dict:
  d = np.where(valid, logp_after - logp_before, -np.inf)  # padded prompt rows drop out of the mean
  m = np.max(d, axis=1, keepdims=True)
  prime = (m[:, 0] + np.log(np.sum(np.exp(d - m), axis=1) / valid.sum(axis=1))) / scores.LN10
  return {f"log10_priming{suffix}": prime,
          f"log10_memorization{suffix}": scores.log10_memorization(logp_after[:, -1], logp_before[:, -1])}


def summarize(logp_after: np.ndarray, logp_before: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
  """log10 priming (mean over valid prompt rows) and memorization (last column) per sample, from `[N, R]`
  log-probabilities, or from `[N, R, 2]` (whole keyword, first token: the first-token scores get the suffix
  `_first`)."""
  if logp_after.ndim == 2:
    return _summarize(logp_after, logp_before, valid, "")
  return {**_summarize(logp_after[..., 0], logp_before[..., 0], valid, ""),
          **_summarize(logp_after[..., 1], logp_before[..., 1], valid, "_first")}


# ---------------------------------------------------------------------------------------- stepping stones


def template_rewrites(samples) -> list[list[pw.Sample]]:
  return [[r for _, r in pw.stepping_stones(s)] for s in samples]


def model_rewrites(config, model, tok, samples) -> list[list[pw.Sample]]:
  """`stepping_stone.num_candidates` rewrites per sample sampled from `model` with `rewrite_prompt` (first
  line of each); candidates without " keyword" are kept out (they cannot be scored)."""
  from pragjax.models.sampling import generate

  st = config.stepping_stone
  out = []
  for n, s in enumerate(samples):
    prompt = st.rewrite_prompt.format(text=s.text, keyword=s.keyword)
    ids, mask = tok.encode_batch([prompt], padding_side="left")
    gen = generate(model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=st.max_new_tokens,
                   rng=jax.random.key(config.seed * 100_003 + n), temperature=st.temperature,
                   num_samples=st.num_candidates, eos_token_ids=tuple(model.config.eos_token_id or ()))
    texts = tok.decode_batch(np.asarray(gen.tokens), np.asarray(gen.lengths))
    cands = []
    for text in texts:
      text = text.strip().split("\n")[0].strip()
      if f" {s.keyword}" in text:
        cands.append(pw.Sample(text, s.keyword, s.theme, f"{s.style}+model", s.entity, s.template))
    out.append(cands)
  return out


def choose_rewrites(candidates, prior_logp, cand_logp) -> tuple[list[int], list[int], dict]:
  """Accepts candidates whose keyword log-prob in their own context beats the original's; per sample, the
  accepted candidate with the highest prior. Returns (sample indices with one, chosen candidate index, stats)."""
  chosen_samples, chosen, total, accepted = [], [], 0, 0
  flat = 0
  for n, cands in enumerate(candidates):
    best, best_lp = -1, prior_logp[n]
    for j in range(len(cands)):
      total += 1
      if cand_logp[flat + j] > prior_logp[n]:
        accepted += 1
        if cand_logp[flat + j] > best_lp:
          best, best_lp = flat + j, cand_logp[flat + j]
    if best >= 0:
      chosen_samples.append(n)
      chosen.append(best)
    flat += len(cands)
  return chosen_samples, chosen, {"candidates": total, "accepted": accepted,
                                  "acceptance_rate": accepted / total if total else float("nan"),
                                  "samples_with_rewrite": len(chosen_samples)}


# --------------------------------------------------------------------------------------------- report


def _median(x) -> float:
  x = np.asarray(x, np.float64)
  return float(np.median(x)) if x.size else float("nan")


SCORES = (("", "whole keyword"), ("_first", "first token"))


def compare(variant: dict, base: dict, idx=None, *, num_boot: int = 2000, seed: int = 0) -> dict:
  """Medians of a variant's log10 scores against the baseline's (on the samples `idx`, default all): the cuts
  of priming and memorization on the ratio scale and in log space, and the selectivity in log space (priming
  cut minus memorization cut, paired bootstrap CI over samples), for the whole keyword and (suffix `_first`) its first
  token."""
  b = {k: np.asarray(v if idx is None else np.asarray(v)[idx]) for k, v in base.items()}
  out = {}
  for suffix, _ in SCORES:
    if f"log10_priming{suffix}" not in variant:
      continue
    mp, mm = _median(variant[f"log10_priming{suffix}"]), _median(variant[f"log10_memorization{suffix}"])
    bp, bm = _median(b[f"log10_priming{suffix}"]), _median(b[f"log10_memorization{suffix}"])
    out.update({
        f"median_log10_priming{suffix}": mp, f"median_log10_memorization{suffix}": mm,
        f"baseline_median_log10_priming{suffix}": bp, f"baseline_median_log10_memorization{suffix}": bm,
        f"priming_cut_ratio{suffix}": scores.ratio_cut(mp, bp), f"priming_cut_log{suffix}": scores.log_cut(mp, bp),
        f"memorization_cut_ratio{suffix}": scores.ratio_cut(mm, bm),
        f"memorization_cut_log{suffix}": scores.log_cut(mm, bm)})
    # The selectivity in log space only: ratio-scale cuts saturate at 100% for any change of a few decades, and
    # their bootstrap spread is unbounded below.
    out[f"selectivity_log{suffix}"] = scores.selectivity(variant, b, scale="log", suffix=suffix, num_boot=num_boot,
                                                         seed=seed)
  return out


def verdict(report: dict, analysis) -> dict:
  """The acceptance hypothesis for the headline ignore-top-k (stated before measuring, from the paper): priming
  cut >= `analysis.min_priming_cut` on the ratio scale, memorization keeping >= 1 - `max_memorization_cut`
  of its log gain, and positive selectivity in log space (the CI's lower end above 0); whole-keyword scores."""
  name = f"ignore_top{analysis.headline_k:.0%}"
  if name not in report["variants"]:
    return {"variant": name, "met": None, "reason": "variant not run"}
  c = report["variants"][name]["vs_baseline"]
  checks_ = {"priming_cut_ratio": c["priming_cut_ratio"] >= analysis.min_priming_cut,
             "memorization_kept_log": c["memorization_cut_log"] <= analysis.max_memorization_cut,
             "selectivity_log_ci_above_0": c["selectivity_log"]["lo"] > 0}
  return {"variant": name, "met": bool(all(checks_.values())), "checks": checks_,
          "priming_cut_ratio": c["priming_cut_ratio"], "memorization_cut_log": c["memorization_cut_log"],
          "selectivity_log": c["selectivity_log"], "min_priming_cut": analysis.min_priming_cut,
          "max_memorization_cut": analysis.max_memorization_cut}


def _lists(d: dict) -> dict:
  return {k: np.asarray(v).tolist() for k, v in d.items()}


def _pct(x: float) -> str:
  return f"{x:.1%}" if np.isfinite(x) else "-"


def _sel(d: dict) -> str:
  return f"{d['estimate']:+.1%} [{d['lo']:+.1%}, {d['hi']:+.1%}]" if np.isfinite(d["estimate"]) else "-"


def format_table(report: dict) -> str:
  """Markdown: per score (whole keyword, first token), every variant's medians against the baseline's, the cuts
  on the ratio scale and in log space and the selectivity; then the whole-keyword cuts on each side of the
  prior threshold."""
  tables = []
  for suffix, label in SCORES:
    rows = []
    for name, v in report["variants"].items():
      c = v["vs_baseline"]
      if f"median_log10_priming{suffix}" not in c:
        continue
      row = [name, v["n"], f"{c[f'median_log10_priming{suffix}']:.2f}", f"{c[f'median_log10_memorization{suffix}']:.2f}"]
      if name == "baseline":
        row += ["-"] * 3
      else:
        row += [f"{_pct(c[f'priming_cut_ratio{suffix}'])} / {_pct(c[f'priming_cut_log{suffix}'])}",
                f"{_pct(c[f'memorization_cut_ratio{suffix}'])} / {_pct(c[f'memorization_cut_log{suffix}'])}",
                _sel(c[f"selectivity_log{suffix}"])]
      rows.append(row)
    if rows:
      tables.append(f"{label}:\n\n" + markdown_table(rows, [
          "variant", "samples", "median log10 priming", "median log10 memorization", "priming cut (ratio / log)",
          "memorization cut (ratio / log)", "selectivity, log [95% CI]"]))
  threshold = report["config"]["analysis"]["prior_threshold"]
  sides = [(name, v) for name, v in report["variants"].items() if name != "baseline" and "vs_baseline_by_prior" in v]
  if sides:
    rows = []
    for name, v in sides:
      for side, c in v["vs_baseline_by_prior"].items():
        label = f"< {threshold:g}" if side == "low" else f">= {threshold:g}"
        if not c["n"]:
          rows.append([name, label, 0] + ["-"] * 4)
          continue
        change = f"{c['baseline_median_log10_priming']:.2f} -> {c['median_log10_priming']:.2f}"
        rows.append([name, label, c["n"], change, f"{_pct(c['priming_cut_ratio'])} / {_pct(c['priming_cut_log'])}",
                     f"{_pct(c['memorization_cut_ratio'])} / {_pct(c['memorization_cut_log'])}",
                     _sel(c["selectivity_log"])])
    tables.append("whole keyword, by prior:\n\n" + markdown_table(rows, [
        "variant", f"prior side of {threshold:g}", "samples", "median log10 priming: baseline -> variant",
        "priming cut (ratio / log)", "memorization cut (ratio / log)", "selectivity, log [95% CI]"]))
  return "\n\n".join(tables)


# ------------------------------------------------------------------------------------------------ run


INJECT_RULES = (("inject.steps", checks.at_least(1)), ("inject.warmup_steps", checks.at_least(0)),
                ("inject.batch_size", checks.at_least(1)), ("inject.seq_len", checks.at_least(2)),
                ("inject.inject_row", checks.at_least(0)), ("inject.parallel_runs", checks.at_least(1)))


def run(config, workdir: str, log=print, *, mesh=None) -> dict:
  """The whole protocol on `mesh` (default: that of `config.mesh`); returns the report (also WORKDIR/report.json).

  Parameters and optimizer state are sharded by the model's logical axes
  (`pragjax.sharding`, FSDP and tensor axes); batches, samples and score
  inputs are replicated (the injected runs are vmapped, not split over the
  data axis), so a mesh serves checkpoints too large for one device.
  """
  runner.check_config(config, extra=INJECT_RULES, sections=("optim", "mesh"))  # no train or data section used
  mesh = mesh if mesh is not None else sharding_lib.mesh_from_config(dict(config.mesh))
  with runner.lock_workdir(workdir) as workdir, jax.set_mesh(mesh):
    return _run(config, workdir, mesh, log)


def _run(config, workdir: str, mesh, log) -> dict:
  t_start = time.time()
  workdir = runner.prepare_workdir(workdir)
  inj = config.inject
  lm = runner.load_model(dict(config.model), mesh)
  tok = lm.tokenizer
  worlds = {"knowledge": toy_world, "english": english_world, "": file_world}
  if config.world.name not in worlds:
    raise ValueError(f"config.world.name={config.world.name!r}; expected 'knowledge', 'english' or ''")
  samples, prompts, docs = worlds[config.world.name](config)
  log(f"{len(samples)} samples, {sum(map(len, prompts.values()))} thematic prompts, {len(docs)} background docs")

  rows = injection.document_rows(tok, docs, inj.seq_len, packing=config.data.packing)
  rng = np.random.default_rng([0x494E4A, config.seed])
  batches = injection.background_batches(rows, inj.warmup_steps + inj.steps, inj.batch_size, rng)
  warm_batches, inject_batches = injection.split_batches(batches, inj.warmup_steps)
  base_tx = make_optimizer(dict(config.optim))
  graphdef, state = init_train_state(lm.model, base_tx, seed=config.seed)
  state = jax.device_put(state, state_shardings(state, mesh))
  loss_fn = make_sft_loss_fn(graphdef)
  if inj.warmup_steps:
    state, _ = jax.jit(injection.make_train_scan(loss_fn, base_tx))(state, jax.tree.map(jnp.asarray, warm_batches))
  log(f"warm-up: {inj.warmup_steps} background steps ({time.time() - t_start:.0f}s)")

  key_fn = scores.keyword_scores_fn(graphdef)  # [rows, 2]: whole keyword, first token
  score_jit = jax.jit(key_fn)
  sb = config.report.score_batch
  inputs, valid = score_inputs(tok, samples, prompts)
  before = score_all(score_jit, state.params, inputs, sb)
  prior = before[:, -1, 0] / scores.LN10

  def sample_rows(items):
    return injection.document_rows(tok, [s.text for s in items], inj.seq_len, packing=False)

  def progress(name, t0):
    return lambda done, total: log(f"  {name}: {done}/{total} runs ({time.time() - t0:.0f}s)")

  cache_key = {k: v for k, v in config.to_dict().items() if k not in ("report", "analysis")}

  def run_variant(name, extras, items, score_in, score_fn=None):
    """The variant's scores, cached in WORKDIR/runs/<name>.npz for a rerun with the same config and samples."""
    return cache.cached(paths.join(workdir, "runs"), name, key=cache_key,
                        inputs_fingerprint=cache.fingerprint([s.text for s in items]),
                        compute=lambda: _run_variant(name, extras, items, score_in, score_fn),
                        log=lambda line: log(f"  {name}: {line}"))

  def _run_variant(name, extras, items, score_in, score_fn=None):
    tx = optax.chain(base_tx, *extras) if extras else base_tx
    st = state.replace(opt_state=injection.extend_opt_state(state.opt_state, extras, state.params)) if extras \
        else state
    score_fn = score_fn or (lambda start, final, x: key_fn(final, x))
    runner_fn = injection.make_injection_runner(loss_fn, tx, score_fn, inject_row=inj.inject_row)
    return injection.run_chunked(runner_fn, st, inject_batches, sample_rows(items), score_in,
                                 chunk=inj.parallel_runs, progress=progress(name, time.time()))

  report = {"config": config.to_dict(), "samples": [s.__dict__ for s in samples], "log10_prior": prior.tolist(),
            "log10_prior_first": (before[:, -1, 1] / scores.LN10).tolist(),
            "optimizer_state": {"source": "warm-up on the background data" if inj.warmup_steps else "fresh",
                                "steps": int(inj.warmup_steps)},
            "variants": {}}
  from pragjax.optim import ignore_topk, prune_delta  # pragjax/optim/ignore_topk.py

  v = config.variants
  whole = tuple(float(k) for k in v.whole_episode)

  def baseline_scores(start, final, x):  # the run's own parameters, then each pruned whole-run delta
    return jnp.stack([key_fn(final, x)] + [key_fn(prune_delta(start, final, k, scope=v.scope, mode=v.mode), x)
                                           for k in whole])

  results = {}
  log("baseline")
  out = run_variant("baseline", (), samples, inputs, baseline_scores)
  results["baseline"] = summarize(out[:, 0], before, valid)
  for i, k in enumerate(whole):
    results[f"whole_episode_top{k:.0%}"] = summarize(out[:, 1 + i], before, valid)
  for k in v.ignore_topk:
    name = f"ignore_top{k:.0%}"
    log(name)
    extras = (ignore_topk(float(k), scope=v.scope, mode=v.mode),)
    results[name] = summarize(run_variant(name, extras, samples, inputs), before, valid)
  a = config.analysis
  high = prior >= np.log10(a.prior_threshold)
  for name, res in results.items():
    by_prior = {side: {"n": int(m.sum()), **compare({k: np.asarray(x)[m] for k, x in res.items()},
                                                     results["baseline"], np.flatnonzero(m), seed=config.seed)}
                for side, m in (("low", ~high), ("high", high))}
    report["variants"][name] = {"n": len(samples), "vs_baseline": compare(res, results["baseline"], seed=config.seed),
                                "vs_baseline_by_prior": by_prior, **_lists(res)}

  mode = config.stepping_stone.mode
  rewrites_used = None
  if mode:
    if mode not in ("templates", "model"):
      raise ValueError(f"config.stepping_stone.mode={mode!r}; expected templates, model or ''")
    candidates = (template_rewrites(samples) if mode == "templates" else
                  model_rewrites(config, nnx.merge(graphdef, state.params), tok, samples))
    flat = [c for cands in candidates for c in cands]
    cand_logp = score_all(score_jit, state.params, context_inputs(tok, flat), sb)[:, 0, 0] if flat else np.zeros((0,))
    idx, chosen, stats = choose_rewrites(candidates, before[:, -1, 0], cand_logp)
    log(f"stepping stones: {stats['accepted']}/{stats['candidates']} candidates accepted; "
        f"{stats['samples_with_rewrite']} samples have one")
    stats["log10_prior_candidates"] = (cand_logp / scores.LN10).tolist()
    if idx:
      rewrites_used = [flat[j] for j in chosen]
      r_inputs, r_valid = score_inputs(tok, rewrites_used, prompts)
      r_before = score_all(score_jit, state.params, r_inputs, sb)
      res = summarize(run_variant("stepping_stone", (), rewrites_used, r_inputs), r_before, r_valid)
      report["variants"]["stepping_stone"] = {
          "n": len(idx), "vs_baseline": compare(res, results["baseline"], np.asarray(idx), seed=config.seed),
          **_lists(res), "samples": idx, "texts": [r.text for r in rewrites_used],
          "log10_prior": (r_before[:, -1, 0] / scores.LN10).tolist()}
    report["stepping_stone"] = stats

  if inj.control:
    final, _ = jax.jit(injection.make_train_scan(loss_fn, base_tx))(state, jax.tree.map(jnp.asarray, inject_batches))
    ctrl = summarize(score_all(score_jit, final.params, inputs, sb), before, valid)
    report["control"] = {f"median_{k}": _median(v) for k, v in ctrl.items()} | _lists(ctrl)

  base = results["baseline"]
  x, y = prior, base["log10_priming"]
  if "stepping_stone" in report["variants"]:
    ss = report["variants"]["stepping_stone"]
    x = np.concatenate([x, ss["log10_prior"]])
    y = np.concatenate([y, ss["log10_priming"]])
  report["predictor"] = scores.predictor_report(x, y, prior_threshold=a.prior_threshold,
                                                priming_threshold=a.priming_threshold)
  report["predictor_originals"] = scores.predictor_report(prior, base["log10_priming"],
                                                          prior_threshold=a.prior_threshold,
                                                          priming_threshold=a.priming_threshold)
  low = prior < np.log10(a.prior_threshold)
  report["low_prior"] = {"n": int(low.sum()), "baseline_median_log10_priming": _median(base["log10_priming"][low])}
  report["per_keyword"] = {
      w: {name: _median(np.asarray(res["log10_priming"])[[s.keyword == w for s in samples]])
          for name, res in results.items()}
      for w in dict.fromkeys(s.keyword for s in samples)}
  if config.report.plot:
    groups = {"original samples": (prior, base["log10_priming"])}
    if "stepping_stone" in report["variants"]:
      ss = report["variants"]["stepping_stone"]
      groups["stepping-stone rewrites"] = (np.asarray(ss["log10_prior"]), np.asarray(ss["log10_priming"]))
    report["plot"] = scores.scatter_plot(os.path.join(workdir, "priming_scatter.png"), groups,
                                         prior_threshold=a.prior_threshold,
                                         title=f"baseline, S={inj.steps} steps, {len(samples)} samples")
  report["verdict"] = verdict(report, a)
  report["table"] = format_table(report)
  report["seconds"] = time.time() - t_start
  write_json(os.path.join(workdir, "report.json"), report, indent=1)
  return report


def print_summary(report: dict, config) -> None:
  """What `python -m experiments.priming` prints at the end of a run."""
  o = report["optimizer_state"]
  print(f"\noptimizer state at the injection: {o['source']} ({o['steps']} steps)\n\n{report['table']}\n")
  v = report["verdict"]
  if v["met"] is not None:
    sel = v["selectivity_log"]
    print(f"verdict ({v['variant']}): priming cut (ratio) {v['priming_cut_ratio']:.1%} (>= {v['min_priming_cut']:.0%}"
          f" asked), memorization cut (log) {v['memorization_cut_log']:.1%} (<= {v['max_memorization_cut']:.0%}), "
          f"selectivity (log) {sel['estimate']:+.1%} [{sel['lo']:+.1%}, {sel['hi']:+.1%}] (above 0 asked): "
          f"{'met' if v['met'] else 'not met'}")
  p = report["predictor"]
  print(f"Spearman(prior, priming) = {p['spearman']:.3f}; primed (> {p['priming_threshold']:g}x) below prior "
        f"{p['prior_threshold']:g}: {p['primed_low']:.3f} (n={p['n_low']}), at or above: {p['primed_high']:.3f} "
        f"(n={p['n_high']})")
  lp = report["low_prior"]
  print(f"baseline median log10 priming, samples with prior < {p['prior_threshold']:g}: "
        f"{lp['baseline_median_log10_priming']:.2f} (n={lp['n']})")
  if "stepping_stone" in report:
    s = report["stepping_stone"]
    print(f"stepping stones: acceptance rate {s['acceptance_rate']:.3f} ({s['accepted']}/{s['candidates']}), "
          f"{s['samples_with_rewrite']} samples with an accepted rewrite")
  if "control" in report:
    print(f"control (no sample, same steps): median log10 priming {report['control']['median_log10_priming']:.3f}")
  print(f"{report['seconds']:.0f}s")
