"""ignore_topk overhead on a full train step, and the approx mode's error.

Overhead: the same jitted, donated SFT train step
(`make_train_step(make_sft_loss_fn(graphdef), tx)`) with
`tx = optax.chain(optax.adamw(1e-4), ignore_topk(f, mode=...))` for
f = 0 (the baseline: `ignore_topk(0.0)` is the identity, so every variant has
the same optimizer state and one state is threaded through all of them),
and f = 0.08 in modes exact and approx (scope "tensor"; `--global` adds
scope "global" exact). The variants alternate within one timing loop
(`common.paired_timings`); reported: median seconds per step, overhead =
median(variant) / median(baseline) - 1, and the median of per-round ratios.

Models:
  toy    the built-in knowledge model (`pragjax/toyworld/assets/knowledge`,
         llama D=128, L=4, V=560, 0.9 M params), batch 4 x 64 (the priming
         injection batch)
  100m   llama D=768, L=12, 12/12 heads, I=2048, V=16000, untied, float32,
         random init (110 M params), batch 2 x 128

Error of the approx mode: on the AdamW update of step 3 of each model (a
fresh random batch per step, lr 1e-4), for f in {0.08, 0.04} and sample
sizes {16384, 65536}: per tensor larger than the sample, the relative error of the number of zeroed
entries against k = round(f * size), and the Jaccard overlap of the zeroed
sets (approx vs exact); next to it the predicted standard deviation
`approx_relative_error(f, sample_size)`.

  nice -n 10 python benchmarks/ignore_topk.py --out benchmarks/results/ignore_topk.json
  python benchmarks/ignore_topk.py --quick        # toy only, few repeats
"""

from __future__ import annotations

import argparse
import statistics

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import load_snapshot, machine_info, markdown_table, paired_timings, summary, write_json

FRACTION = 0.08


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", nargs="+", default=["toy", "100m"], choices=["toy", "100m"])
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=0, help="0: 30 for toy, 7 for 100m")
  p.add_argument("--sample-size", type=int, default=65536)
  p.add_argument("--global", dest="global_scope", action="store_true", help="also scope='global' exact")
  p.add_argument("--no-error", action="store_true", help="skip the approx-vs-exact error measurement")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.models, args.repeats, args.warmup = ["toy"], 5, 1
  return args


def toy_model():
  from pragjax.models import load_hf
  from pragjax.train.runner import builtin_model_path

  model, cfg = load_hf(builtin_model_path("knowledge"))
  return model, cfg, (4, 64)


def model_100m():
  from flax import nnx

  from pragjax.models import Decoder, ModelConfig

  cfg = ModelConfig(model_type="llama", vocab_size=16000, hidden_size=768, intermediate_size=2048,
                    num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12, head_dim=64,
                    max_position_embeddings=512, tie_word_embeddings=False)
  return Decoder(cfg, rngs=nnx.Rngs(0)), cfg, (2, 128)


def make_batch(b: int, t: int, vocab: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(b, t), dtype=np.int32)
  ones = np.ones((b, t), np.int32)
  return {"input_ids": ids, "attention_mask": ones, "loss_mask": ones.copy()}


def variants(args) -> dict:
  from pragjax.optim import ignore_topk

  kw = dict(sample_size=args.sample_size)
  v = {
      "baseline": ignore_topk(0.0),
      "exact": ignore_topk(FRACTION, mode="exact", **kw),
      "approx": ignore_topk(FRACTION, mode="approx", **kw),
  }
  if args.global_scope:
    v["global-exact"] = ignore_topk(FRACTION, scope="global", mode="exact", **kw)
  return v


def bench_overhead(model, batch: dict, args, repeats: int) -> dict:
  from pragjax.methods.sft.loss import make_sft_loss_fn
  from pragjax.train import init_train_state, make_train_step

  txs = {k: optax.chain(optax.adamw(1e-4), t) for k, t in variants(args).items()}
  graphdef, state = init_train_state(model, txs["baseline"])
  loss_fn = make_sft_loss_fn(graphdef)
  steps = {k: make_train_step(loss_fn, tx) for k, tx in txs.items()}
  jbatch = jax.device_put(batch)
  holder = {"state": jax.tree.map(jnp.copy, state)}
  del state

  def runner(step):
    def run():
      holder["state"], m = step(holder["state"], jbatch)
      return jax.block_until_ready(m["loss"])
    return run

  runs = {k: runner(s) for k, s in steps.items()}
  load0 = load_snapshot()
  times = paired_timings(runs, warmup=args.warmup, repeats=repeats)
  load1 = load_snapshot()
  base = times["baseline"]
  stats = {k: summary(v) for k, v in times.items()}
  for k, s in stats.items():
    s["overhead_of_medians"] = s["median_s"] / stats["baseline"]["median_s"] - 1
    s["overhead_paired_median"] = statistics.median(a / b for a, b in zip(times[k], base)) - 1
  return {"times": times, "stats": stats, "load_before": load0, "load_after": load1}


def adam_update(model, batch: dict, steps: int = 3):
  """The AdamW update (lr 1e-4) of step `steps`, a fresh random batch (of
  `batch`'s shape) per step. (With one batch repeated, gradients are
  constant, m_hat / sqrt(v_hat) rounds to +-1 and most magnitudes tie at
  lr: approx then zeroes whole tie blocks.)"""
  from flax import nnx

  from pragjax.methods.sft.loss import make_sft_loss_fn

  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = make_sft_loss_fn(graphdef)
  tx = optax.adamw(1e-4)
  grad = jax.jit(jax.grad(lambda p, bt: loss_fn(p, bt, None)[0]))
  opt = tx.init(params)
  b, t = batch["input_ids"].shape
  vocab = int(batch["input_ids"].max()) + 1
  for i in range(steps):
    updates, opt = jax.jit(tx.update)(grad(params, make_batch(b, t, vocab, seed=100 + i)), opt, params)
    params = optax.apply_updates(params, updates)
  return updates


def approx_error(updates, fractions=(0.08, 0.04), sample_sizes=(16384, 65536)) -> list[dict]:
  from pragjax.optim import num_pruned, topk_masks
  from pragjax.optim.ignore_topk import approx_relative_error

  leaves = jax.tree.leaves(updates)
  rows = []
  for f in fractions:
    exact = jax.tree.leaves(jax.jit(lambda u: topk_masks(u, f))(updates))
    for m in sample_sizes:
      approx = jax.tree.leaves(jax.jit(lambda u: topk_masks(u, f, mode="approx", sample_size=m))(updates))
      rel, jac, zeroed, target = [], [], 0, 0
      for x, e, a in zip(leaves, exact, approx):
        e, a = np.asarray(e), np.asarray(a)
        k = num_pruned(f, x.size)
        zeroed += int(a.sum())
        target += k
        if x.size <= m or k == 0:
          continue
        rel.append((int(a.sum()) - k) / k)
        jac.append(int((e & a).sum()) / max(int((e | a).sum()), 1))
      rows.append({
          "fraction": f, "sample_size": m, "tensors_sampled": len(rel),
          "predicted_sd": approx_relative_error(f, m),
          "median_abs_rel_err": float(np.median(np.abs(rel))) if rel else 0.0,
          "max_abs_rel_err": float(np.max(np.abs(rel))) if rel else 0.0,
          "total_rel_err": (zeroed - target) / target,
          "min_jaccard": float(np.min(jac)) if jac else 1.0,
          "median_jaccard": float(np.median(jac)) if jac else 1.0,
      })
  return rows


def main(argv=None) -> None:
  args = parse_args(argv)
  info = machine_info()
  out = {"machine": info, "fraction": FRACTION, "sample_size": args.sample_size, "models": {}}
  print(f"# ignore_topk ({info['date']}, {info['processor']}, {info['cpu_count']} cores, jax {info['jax']}"
        f" {info['jax_backend']}); fraction {FRACTION}, AdamW lr 1e-4, sample_size {args.sample_size}\n")
  for name in args.models:
    model, cfg, (b, t) = toy_model() if name == "toy" else model_100m()
    from flax import nnx
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    n_tensors = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    batch = make_batch(b, t, cfg.vocab_size)
    repeats = args.repeats or (30 if name == "toy" else 7)
    r = {"params": int(n_params), "tensors": n_tensors, "batch": [b, t], "repeats": repeats}
    if not args.no_error:
      r["approx_error"] = approx_error(adam_update(model, batch))
    r.update(bench_overhead(model, batch, args, repeats))
    out["models"][name] = r
    s = r["stats"]
    print(f"## {name}: {n_params / 1e6:.1f} M params, {n_tensors} tensors, batch {b} x {t}, median of {repeats}"
          f" (load {r['load_before']['load1']:.1f} -> {r['load_after']['load1']:.1f})\n")
    rows = [[k, f"{v['median_s'] * 1e3:.1f} [{v['min_s'] * 1e3:.1f}]", f"{v['median_s'] / s['baseline']['median_s']:.3f}",
             f"{100 * v['overhead_of_medians']:+.1f}%", f"{100 * v['overhead_paired_median']:+.1f}%",
             ("" if k in ("baseline", "exact", "global-exact") else
              ("PASS" if v["overhead_of_medians"] <= 0.15 else "MISS") + " (<= 15%)")]
            for k, v in s.items()]
    print(markdown_table(["variant", "ms/step [min]", "ratio", "overhead (medians)", "overhead (paired)", "target"],
                         rows))
    if "approx_error" in r:
      print("\napprox vs exact (AdamW update of step 3, fresh batches):\n")
      print(markdown_table(
          ["fraction", "sample", "tensors sampled", "predicted sd", "median |rel err|", "max |rel err|",
           "total rel err", "min Jaccard", "median Jaccard"],
          [[e["fraction"], e["sample_size"], e["tensors_sampled"], f"{100 * e['predicted_sd']:.2f}%",
            f"{100 * e['median_abs_rel_err']:.2f}%", f"{100 * e['max_abs_rel_err']:.2f}%",
            f"{100 * e['total_rel_err']:+.2f}%", f"{e['min_jaccard']:.4f}", f"{e['median_jaccard']:.4f}"]
           for e in r["approx_error"]]))
    print()
    del model
  write_json(args.out, out)


if __name__ == "__main__":
  main()
