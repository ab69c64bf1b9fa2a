"""Implicit-PRM scoring throughput: pragjax (one jitted policy + reference pass) vs transformers (PyTorch CPU).

Both sides do the same work on the same weights (two models of the benchmark
config, policy and reference, written with `save_hf` and read back by
`from_pretrained`): forward both models on a right-padded batch of
solutions, float32 log-softmax, token log-ratios on response tokens, the
cumulative reward at every step end, single and accumulative step rewards,
and min/sum/last/mean over the valid steps. Tokens/s counts the real tokens
of the batch once per scoring pass (each goes through policy and reference).
The pragjax and PyTorch calls alternate within one timing loop. Target:
pragjax / best PyTorch attention >= 1.5.

  python benchmarks/prm_scoring.py [--quick] [--out benchmarks/results/prm_scoring.json]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import (
  bench_config,
  build_pair,
  load_snapshot,
  machine_info,
  markdown_table,
  paired_timings,
  speedups,
  summary,
  verdict,
  write_json,
)
from flax import nnx


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512])
  p.add_argument("--steps", type=int, default=12, help="steps per solution (step ends drawn in the response)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--attn", nargs="+", default=["sdpa", "eager"])
  p.add_argument("--beta", type=float, default=0.05)
  p.add_argument("--target", type=float, default=1.5)
  p.add_argument("--quick", action="store_true", help="smoke test: 2x64, 1 warmup, 3 repeats")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.seq_lens, args.warmup, args.repeats = 2, [64], 1, 3
  return args


def make_batch(batch: int, seq: int, steps: int, vocab: int, seed: int = 0) -> dict:
  """Right-padded solutions: prompt 1/8 of the row, response to a random length in [T/2, T], sorted step ends."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(batch, seq), dtype=np.int32)
  mask = np.zeros((batch, seq), np.int32)
  resp = np.zeros((batch, seq), np.int32)
  ends = np.zeros((batch, steps), np.int32)
  smask = np.zeros((batch, steps), np.int32)
  for b in range(batch):
    n, start = int(rng.integers(seq // 2, seq + 1)), seq // 8
    mask[b, :n], resp[b, start:n] = 1, 1
    ids[b, n:] = 0
    k = int(rng.integers(1, steps + 1))
    ends[b, :k] = np.sort(rng.choice(np.arange(start, n), size=k, replace=False))
    ends[b, k - 1] = n - 1
    smask[b, :k] = 1
  return {"input_ids": ids, "attention_mask": mask, "response_mask": resp, "step_end": ends, "step_mask": smask}


def torch_scorer(policy, ref, beta: float):
  """The same computation in PyTorch: returns the same dict of tensors as `pragjax.methods.prm.implicit.score`."""
  import torch

  def logp(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    return torch.nn.functional.pad(lp, (1, 0))

  def aggregate(x, m):
    big = torch.where(m, x, torch.full_like(x, float("inf")))
    any_valid = m.any(-1)
    count = m.sum(-1).clamp(min=1)
    last = torch.where(m, torch.arange(x.shape[-1])[None], torch.zeros_like(m, dtype=torch.long)).max(-1).values
    return {"min": torch.where(any_valid, big.min(-1).values, torch.zeros_like(any_valid, dtype=x.dtype)),
            "sum": (x * m).sum(-1), "mean": (x * m).sum(-1) / count,
            "last": torch.where(any_valid, x.gather(-1, last[:, None])[:, 0], torch.zeros_like(any_valid,
                                                                                                dtype=x.dtype))}

  def score(t):
    ids, mask = t["input_ids"], t["attention_mask"]
    resp, ends, m = t["response_mask"].bool(), t["step_end"], t["step_mask"].bool()
    r = torch.where(resp, beta * (logp(policy, ids, mask) - logp(ref, ids, mask)), torch.zeros(()))
    q = torch.cumsum(r, -1)
    acc = torch.where(m, q.gather(-1, ends), torch.zeros(()))
    k = torch.arange(m.shape[-1])[None].expand_as(m)
    last_valid = torch.cummax(torch.where(m, k, torch.full_like(k, -1)), dim=-1).values
    prev_idx = torch.nn.functional.pad(last_valid, (1, 0), value=-1)[:, :-1]
    prev = torch.where(prev_idx >= 0, acc.gather(-1, prev_idx.clamp(min=0)), torch.zeros(()))
    out = {"token_rewards": r, "outcome": r.sum(-1), "accumulative": acc,
           "single": torch.where(m, acc - prev, torch.zeros(()))}
    for mode in ("single", "accumulative"):
      for how, v in aggregate(out[mode], m).items():
        out[f"{mode}_{how}"] = v
    return out

  return score


def bench_shape(scorer, params, peers, batch, seq, cfg, args) -> dict:
  import torch

  data = make_batch(batch, seq, args.steps, cfg.vocab_size)
  jdata = jax.device_put(data)
  tdata = {k: torch.from_numpy(v).long() for k, v in data.items()}
  fns = {"pragjax": lambda: jax.block_until_ready(scorer(params[0], params[1], jdata))}
  for impl, score in peers.items():
    fns[f"torch-{impl}"] = lambda score=score: score(tdata)
  times = paired_timings(fns, warmup=args.warmup, repeats=args.repeats)
  tokens = int(data["attention_mask"].sum())
  stats = {k: summary(v) for k, v in times.items()}
  for s in stats.values():
    s["tokens_per_s"] = tokens / s["median_s"]
  peer = min(peers, key=lambda i: stats[f"torch-{i}"]["median_s"])
  sp = speedups(times["pragjax"], times[f"torch-{peer}"])
  ours, theirs = jax.device_get(fns["pragjax"]()), peers[peer](tdata)
  diff = max(float(np.max(np.abs(np.asarray(ours[k]) - theirs[k].numpy()))) for k in ("single", "accumulative",
                                                                                       "single_min", "outcome"))
  return {"batch": batch, "seq": seq, "tokens": tokens, "stats": stats, "times": times, "peer": f"torch-{peer}",
          "ratio": sp["of_medians"], "speedups": sp, "verdict": verdict(sp["of_medians"], args.target),
          "max_abs_step_reward_diff": diff}


def main(argv=None):
  args = parse_args(argv)
  from pragjax.methods.prm import implicit

  cfg = bench_config()
  policy, policy_peers = build_pair(cfg, args.attn, seed=0)
  ref, ref_peers = build_pair(cfg, args.attn, seed=1)
  scorer = implicit.make_scorer(nnx.graphdef(policy), args.beta)
  params = (nnx.state(policy, nnx.Param), nnx.state(ref, nnx.Param))
  peers = {impl: torch_scorer(policy_peers[impl], ref_peers[impl], args.beta) for impl in args.attn}
  info = machine_info()
  print(f"# prm_scoring  ({info['date']}, {info['processor']}, {info['cpu_count']} cores,"
        f" jax {info['jax']} {info['jax_backend']}, torch {info['torch']} x{info['torch_threads']} threads)")
  print(f"config: llama D={cfg.hidden_size} L={cfg.num_hidden_layers} V={cfg.vocab_size} float32, policy + "
        f"reference, up to {args.steps} steps; warmup {args.warmup}, median of {args.repeats}\n")
  before = load_snapshot()
  results = [bench_shape(scorer, params, peers, args.batch, t, cfg, args) for t in args.seq_lens]
  after = load_snapshot()
  rows = []
  for r in results:
    s, sp = r["stats"], r["speedups"]
    ms = lambda k: f"{s[k]['median_s'] * 1e3:.1f} [{s[k]['min_s'] * 1e3:.1f}]"
    row = [f"{r['batch']}x{r['seq']}", r["tokens"], s["pragjax"]["tokens_per_s"], ms("pragjax")]
    for impl in args.attn:
      row += [s[f"torch-{impl}"]["tokens_per_s"], ms(f"torch-{impl}")]
    row += [r["peer"], f"**{sp['of_medians']:.2f}x**", f"{sp['paired_median']:.2f}x", f"{sp['of_mins']:.2f}x",
            f"{r['verdict']} (>= {args.target}x)", f"{r['max_abs_step_reward_diff']:.1e}"]
    rows.append(row)
  headers = ["B x T", "real tokens", "pragjax tok/s", "pragjax ms [min]"]
  for impl in args.attn:
    headers += [f"torch-{impl} tok/s", f"torch-{impl} ms [min]"]
  headers += ["peer", "pragjax/peer (medians)", "paired", "mins", "target", "max |d step reward|"]
  print(markdown_table(headers, rows))
  print(f"\ntok/s from medians (real tokens, each through policy and reference); 'paired' = median of per-round "
        f"ratios; 'mins' = ratio of best times.\nmachine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  write_json(args.out, {"benchmark": "prm_scoring", "machine": info, "args": vars(args),
                        "load": {"before": before, "after": after}, "results": results})


if __name__ == "__main__":
  main()
