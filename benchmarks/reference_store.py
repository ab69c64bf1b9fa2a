"""Reference log-prob store vs a live reference model: build once, reuse, and train, same run.

Tracker issue 8. A DPO / implicit-PRM style run needs `log pi_ref` of every
training token. Two ways, measured on the same data and model in one process:

  live   the reference model's parameters sit in the train state and the
         step runs its forward pass on every batch (`make_train_step(ref_fn=...)`)
  store  `ReferenceStore.build` scores the dataset once and writes it to disk;
         later runs `open` it (fingerprint check), and every batch reads its
         `ref_logp` rows from the memory-mapped shards (`store.attach` +
         `with_reference`), so the step runs no reference pass

Reported (medians; build, open, and the two epochs alternate in one loop):
  - build: fingerprints (SHA-256 of the reference weights, the data) and
    scoring + writing the store (jitted lean forward over the dataset),
    into a fresh directory each time; the first build (compile) apart;
  - reuse: `open_or_build` of an existing store (manifest + fingerprint
    comparison, given the fingerprints), and one epoch of reference
    log-probs read from the store vs one epoch of live reference forwards
    over the same batches (data pipeline included in both);
  - train step: policy forward + backward with the live reference's forward
    in the step vs with stored log-probs in the batch (same loss, checked);
  - memory: bytes of reference parameters the live run holds on the device,
    and the store's bytes on disk.

  python benchmarks/reference_store.py            # 96 records x 64-128 tokens, llama D=256 L=4 V=8192
  python benchmarks/reference_store.py --quick    # smoke test (< 1 min)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import jax.numpy as jnp
import numpy as np
from common import bench_config, load_snapshot, machine_info, markdown_table, paired_timings, summary, write_json
from flax import nnx

MB = 2.0**20


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--records", type=int, default=96)
  p.add_argument("--seq", type=int, default=128, help="tokens per record (and batch length)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--vocab", type=int, default=8192)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--repeats", type=int, default=3, help="repeats of build / open / epoch timings")
  p.add_argument("--steps", type=int, default=6, help="timed train steps per variant")
  p.add_argument("--shard-tokens", type=int, default=1 << 14)
  p.add_argument("--cpus", type=int, default=2, help="pin to this many cores before jax starts (0: no pinning)")
  p.add_argument("--workdir", default=None, help="where stores are written (default: a temp dir)")
  p.add_argument("--quick", action="store_true", help="smoke test: 32 records x 64 tokens, vocab 4096")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.records, args.seq, args.vocab, args.repeats, args.steps = 32, 64, 4096, 2, 3
  return args


def make_records(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
  """Pre-tokenised records (lists, as a JSONL file would hold them): random lengths in [seq/2, seq],
  a prompt of a quarter of the tokens without loss."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    length = int(rng.integers(seq // 2, seq + 1))
    prompt = length // 4
    out.append({"input_ids": rng.integers(3, vocab, size=length).tolist(),
                "loss_mask": [0] * prompt + [1] * (length - prompt)})
  return out


def tokenize(record):
  return {"input_ids": np.asarray(record["input_ids"], np.int32), "loss_mask": np.asarray(record["loss_mask"], np.int32)}


def loss_fn_for(graphdef):
  from pragjax.models.logprobs import batch_token_logprobs

  def loss_fn(params, batch, rng):  # a sequence log-ratio objective (CE-style, label 1)
    del rng
    m = batch["loss_mask"][:, 1:]
    d = jnp.sum((batch_token_logprobs(graphdef, params, batch) - batch["ref_logp"][:, 1:]) * m, axis=1)
    return -jnp.mean(jax.nn.log_sigmoid(0.1 * d)), {}

  return loss_fn


def tree_bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main(argv=None):
  args = parse_args(argv)
  cores = sorted(os.sched_getaffinity(0))
  if 0 < args.cpus < len(cores):
    cores = cores[:args.cpus]
    os.sched_setaffinity(0, cores)
  from pragjax.data.pipeline import make_train_iterator
  from pragjax.models import Decoder
  from pragjax.models.logprobs import batch_token_logprobs
  from pragjax.optim import make_optimizer
  from pragjax.train import init_train_state, make_train_step
  from pragjax.train import reference_store as rs

  info = machine_info()
  info["cores_used"] = cores
  print(f"# reference_store  ({info['date']}, {info['processor']}, {info['cpu_count']} cores, {len(cores)} used,"
        f" jax {info['jax']} {info['jax_backend']})")
  cfg = bench_config(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                     max_position_embeddings=args.seq)
  print(f"config: llama D={args.hidden} L={args.layers} V={args.vocab} float32; {args.records} records of"
        f" {args.seq // 2}-{args.seq} tokens, batch {args.batch} x {args.seq}\n")
  before = load_snapshot()
  records = make_records(args.records, args.seq, args.vocab)
  examples = [tokenize(r) for r in records]
  ref_graphdef, ref_params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(7)), nnx.Param)
  workdir = args.workdir or tempfile.mkdtemp(prefix="refstore_bench_")
  os.makedirs(workdir, exist_ok=True)

  # -- build (fingerprints, then scoring + writing into a fresh directory), and reuse: open an existing store,
  # then one epoch of reference log-probs read from it vs one epoch of live reference forwards. The three
  # alternate in one loop (`paired_timings`), so load changes hit them alike.
  fp = {"model": rs.model_fingerprint(ref_params), "tokenizer": "none",
        "data": rs.data_fingerprint(records, max_length=args.seq)}
  store_dir = os.path.join(workdir, "store")
  t_fp_model, t_fp_data, t_score_write, n_build = [], [], [], [0]

  def build():
    t0 = time.perf_counter()
    rs.model_fingerprint(ref_params)
    t1 = time.perf_counter()
    rs.data_fingerprint(records, max_length=args.seq)
    t2 = time.perf_counter()
    directory = os.path.join(workdir, f"build{n_build[0] % 2}")
    n_build[0] += 1
    shutil.rmtree(directory, ignore_errors=True)
    rs.ReferenceStore.build(directory, ref_graphdef, ref_params, examples, fingerprint=fp, batch_size=args.batch,
                            shard_tokens=args.shard_tokens)
    t_fp_model.append(t1 - t0)
    t_fp_data.append(t2 - t1)
    t_score_write.append(time.perf_counter() - t2)

  t0 = time.perf_counter()
  rs.ReferenceStore.build(store_dir, ref_graphdef, ref_params, examples, fingerprint=fp, batch_size=args.batch,
                          shard_tokens=args.shard_tokens)
  first_build = time.perf_counter() - t0  # compiles the scoring pass: reported apart

  def open_store():
    return rs.ReferenceStore.open_or_build(store_dir, fp, lambda: (_ for _ in ()).throw(AssertionError("rebuilt")))[0]

  store = open_store()

  def iterator(with_store: bool):
    src = store.attach(records) if with_store else records
    fn = rs.with_reference(tokenize) if with_store else tokenize
    return make_train_iterator(src, fn, global_batch_size=args.batch, seq_len=args.seq, seed=0, shuffle=False,
                               num_epochs=1, pad_id=0)

  score = jax.jit(lambda p, b: batch_token_logprobs(ref_graphdef, p, b))

  def epoch_store():
    return sum(b["ref_logp"].size for b in iterator(True))

  def epoch_live():
    n = 0
    for b in iterator(False):
      n += jax.block_until_ready(score(ref_params, {k: b[k] for k in ("input_ids", "attention_mask")})).size
    return n

  timed = paired_timings({"build": build, "open": open_store, "store": epoch_store, "live": epoch_live}, warmup=1,
                         repeats=args.repeats)
  t_fp_model, t_fp_data, t_score_write = t_fp_model[1:], t_fp_data[1:], t_score_write[1:]  # drop the warmup
  t_build, t_open, epochs = timed["build"], timed["open"], {"store": timed["store"], "live": timed["live"]}
  # Same values: stored log-probs = a live forward (the store pads and aligns like input_ids).
  b_store, b_live = next(iter(iterator(True))), next(iter(iterator(False)))
  live_lp = np.asarray(score(ref_params, {k: b_live[k] for k in ("input_ids", "attention_mask")}))
  m = b_store["attention_mask"][:, 1:].astype(bool)
  max_diff = float(np.max(np.abs(b_store["ref_logp"][:, 1:] - live_lp)[m]))

  # -- train steps: live reference in the step vs stored log-probs in the batch ---------------------
  tx = make_optimizer({"name": "adamw", "lr": 1e-4})
  graphdef, state = init_train_state(Decoder(cfg, rngs=nnx.Rngs(0)), tx)
  loss_fn = loss_fn_for(graphdef)
  ref_fn = lambda p, b: {"ref_logp": jnp.pad(batch_token_logprobs(ref_graphdef, p, b), ((0, 0), (1, 0)))}  # noqa: E731
  step_store = make_train_step(loss_fn, tx, donate=False)
  step_live = make_train_step(loss_fn, tx, ref_fn=ref_fn, donate=False)
  s_live = state.replace(ref_params=ref_params)
  batches = {"store": list(iterator(True))[:args.steps], "live": list(iterator(False))[:args.steps]}
  states = {"store": state, "live": s_live}
  steps = {"store": step_store, "live": step_live}
  losses = {"store": [], "live": []}
  t_steps = {"store": [], "live": []}
  for v in ("store", "live"):  # compile
    jax.block_until_ready(steps[v](states[v], batches[v][0]))
  for i in range(args.steps):
    for v in ("store", "live"):
      t0 = time.perf_counter()
      states[v], metrics = steps[v](states[v], batches[v][i])
      losses[v].append(float(jax.block_until_ready(metrics["loss"])))
      t_steps[v].append(time.perf_counter() - t0)
  loss_diff = max(abs(a - b) for a, b in zip(losses["store"], losses["live"]))
  after = load_snapshot()

  # -- output -----------------------------------------------------------------------------------------
  med = lambda xs: statistics.median(xs)  # noqa: E731
  tokens = sum(len(r["input_ids"]) for r in records)
  ep = {v: summary(t) for v, t in epochs.items()}
  live = ep["live"]["median_s"]
  print(f"## build once, reuse per run and per epoch ({args.records} records, {tokens:,} tokens; medians of"
        f" {args.repeats}, the rows alternating in one loop; first build incl. compile: {first_build:.2f} s)\n")
  print(markdown_table(["what", "median s", "/ live epoch"], [
      ["build: model fingerprint (SHA-256 of %.1f MiB of weights)" % (tree_bytes(ref_params) / MB),
       f"{med(t_fp_model):.3f}", ""],
      ["build: data fingerprint (%d records)" % len(records), f"{med(t_fp_data):.3f}", ""],
      ["build: score + write the store", f"{med(t_score_write):.3f}", f"{med(t_score_write) / live:.2f}"],
      ["**build, total**", f"**{med(t_build):.3f}**", f"**{med(t_build) / live:.2f}**"],
      ["reuse: open an existing store (manifest, fingerprint check)", f"{med(t_open):.4f}", f"{med(t_open) / live:.5f}"],
      ["reuse: stored reference log-probs for one epoch (data pipeline included)", f"{ep['store']['median_s']:.3f}",
       f"{ep['store']['median_s'] / live:.4f}"],
      ["live: reference forwards for one epoch (data pipeline included)", f"{live:.3f}", "1"],
  ]))
  st = {v: summary(t) for v, t in t_steps.items()}
  print(f"\n## train step, batch {args.batch} x {args.seq} (median of {args.steps}, alternating)\n")
  print(markdown_table(["variant", "median ms", "min ms", "reference params on device MiB"], [
      ["stored reference log-probs", f"{st['store']['median_s'] * 1e3:.1f}", f"{st['store']['min_s'] * 1e3:.1f}", "0"],
      ["live reference model in the step", f"{st['live']['median_s'] * 1e3:.1f}", f"{st['live']['min_s'] * 1e3:.1f}",
       f"{tree_bytes(ref_params) / MB:.1f}"],
  ]))
  print(f"\nlive/store step time: **{st['live']['median_s'] / st['store']['median_s']:.2f}x**;"
        f" store on disk {dir_bytes(store_dir) / MB:.2f} MiB ({len(store.manifest['shards'])} shards);"
        f" max |stored - live| log-prob {max_diff:.1e}; max |loss store - loss live| over {args.steps} steps"
        f" {loss_diff:.1e}")
  print(f"\nmachine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  write_json(args.out, {
      "benchmark": "reference_store", "machine": info, "args": vars(args), "load": {"before": before, "after": after},
      "build": {"first_s": first_build, "fingerprint_model_s": t_fp_model, "fingerprint_data_s": t_fp_data,
                "score_write_s": t_score_write, "total_s": t_build},
      "open_s": t_open, "epoch_s": epochs, "step_s": t_steps, "losses": losses, "max_logprob_diff": max_diff,
      "max_loss_diff": loss_diff, "ref_param_bytes": tree_bytes(ref_params), "store_bytes": dir_bytes(store_dir),
      "tokens": tokens})
  if not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
