"""Accelerator checks of issue 18 that `train_step.py --gpu-1b` does not cover, in one process.

  python benchmarks/device_checks.py --out results.json          # on the GPU (benchmarks/device.sh runs it)
  JAX_PLATFORMS=cpu python benchmarks/device_checks.py --quick    # CPU smoke test (small shapes, no cuDNN)

Sections, each printed as a table and kept in the JSON (a section that fails records its error and the
others still run):

1. `attention`: cuDNN fused attention vs XLA attention (`pragjax.models.attention.attention`,
   `implementation="cudnn"` vs `"xla"`) on bf16 causal GQA inputs: max |out| difference and max |grad|
   difference of a scalar loss for q, k and v, against the float32 XLA result as the reference for both.
   Also the logits of a 4-layer llama with `attention_impl="cudnn"` vs `"xla"`.
2. `generation`: greedy decode tokens/s of a SmolLM2-135M-shaped model (30 blocks, d=576, 9/3 heads,
   vocab 49,152; random weights, bf16), batch x (prompt -> new tokens); first call (compile) separately.
3. `smollm2_train`: the AdamW SFT train step of the same shape (bf16 compute, f32 params), tokens/s and
   MFU against `device_peak_flops("bfloat16")`, with `attention_impl` cudnn (xla when cudnn fails).

Medians over `--repeats`; the device kind and JAX version head the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

if "--quick" not in sys.argv:
  os.environ.setdefault("JAX_PLATFORMS", "")  # let jax pick the accelerator (common defaults it to cpu)

import common  # noqa: F401,E402  (sets sys.path first)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import bench_config, markdown_table, paired_timings, summary, write_json  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--attn-shape", default="4,2048,16,8,128", help="B,T,N,K,H of the attention parity check")
  p.add_argument("--gen-batch", type=int, default=32)
  p.add_argument("--gen-prompt", type=int, default=128)
  p.add_argument("--gen-new", type=int, default=256)
  p.add_argument("--train-batch", type=int, default=16)
  p.add_argument("--train-seq", type=int, default=2048)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--sections", default="attention,generation,smollm2_train")
  p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny shapes, 2 repeats")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.attn_shape, args.repeats = "1,64,4,2,32", 2
    args.gen_batch, args.gen_prompt, args.gen_new = 2, 8, 8
    args.train_batch, args.train_seq = 2, 64
  return args


def smollm2_config(*, quick: bool, attention_impl=None, dtype="bfloat16", param_dtype="bfloat16"):
  """SmolLM2-135M's shape (random weights); `quick`: 2 blocks and a 4,096 vocab."""
  return bench_config(
      dtype=dtype, param_dtype=param_dtype, hidden_size=576, num_hidden_layers=2 if quick else 30,
      num_attention_heads=9, num_key_value_heads=3, head_dim=64, intermediate=1536,
      vocab_size=4096 if quick else 49152, max_position_embeddings=8192, rope_theta=100000.0,
      tie_word_embeddings=True, attention_impl=attention_impl)


def _err(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


# -- 1. attention parity ---------------------------------------------------------------------------------


def check_attention(args) -> dict:
  from pragjax.models.attention import attention, make_attention_mask

  b, t, n, k, h = (int(x) for x in args.attn_shape.split(","))
  keys = jax.random.split(jax.random.key(0), 4)
  q, kk, v = (jax.random.normal(keys[i], (b, t, heads, h), jnp.float32) for i, heads in enumerate((n, k, k)))
  ct = jax.random.normal(keys[3], (b, t, n, h), jnp.float32)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  mask = make_attention_mask(pos, pos, jnp.ones((b, t), bool))
  scale = h ** -0.5

  def run(impl, dtype):
    def loss(q, kk, v):
      o = attention(q.astype(dtype), kk.astype(dtype), v.astype(dtype), mask, scale=scale, implementation=impl)
      return jnp.sum(o.astype(jnp.float32) * ct), o
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, kk, v)
    return np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads]

  ref_out, ref_grads = run("xla", jnp.float32)
  rows, out = [], {"shape": [b, t, n, k, h]}
  impls = ["xla"] + ([] if jax.default_backend() == "cpu" else ["cudnn"])
  for impl in impls:
    try:
      o, g = run(impl, jnp.bfloat16)
      r = {"out": float(np.max(np.abs(o - ref_out))),
           **{f"grad_{name}": float(np.max(np.abs(gi - ri))) for name, gi, ri in zip("qkv", g, ref_grads)}}
    except Exception as e:  # noqa: BLE001  (cuDNN may not support this shape or mask)
      r = {"error": _err(e)}
    out[impl] = r
    rows.append([f"{impl} bf16"] + ([f"{r[c]:.2e}" for c in ("out", "grad_q", "grad_k", "grad_v")]
                                    if "error" not in r else [r["error"], "", "", ""]))
  if "cudnn" in out and "error" not in out["cudnn"] and "error" not in out["xla"]:
    o_c, _ = run("cudnn", jnp.bfloat16)
    o_x, _ = run("xla", jnp.bfloat16)
    out["cudnn_vs_xla_bf16_out"] = float(np.max(np.abs(o_c - o_x)))
  print(f"\n## attention parity (B,T,N,K,H = {b},{t},{n},{k},{h}; causal; reference: xla float32)\n")
  print(markdown_table(["kernel", "max abs out - ref", "max abs dq - ref", "max abs dk - ref", "max abs dv - ref"], rows))
  if "cudnn_vs_xla_bf16_out" in out:
    print(f"cuDNN vs XLA, both bf16: max |out| difference {out['cudnn_vs_xla_bf16_out']:.2e}")

  from flax import nnx

  from pragjax.models import Decoder

  ids = jax.random.randint(jax.random.key(1), (2, 256 if not args.quick else 32), 0, 4096)
  logits = {}
  for impl in impls:
    cfg = bench_config(dtype="bfloat16", param_dtype="float32", attention_impl=None if impl == "xla" else impl)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    try:
      logits[impl] = np.asarray(jax.jit(lambda m, x: m(x))(model, ids), np.float32)
    except Exception as e:  # noqa: BLE001
      out[f"model_{impl}_error"] = _err(e)
  if "cudnn" in logits:
    out["model_logits_cudnn_vs_xla"] = float(np.max(np.abs(logits["cudnn"] - logits["xla"])))
    print(f"4-layer llama logits, attention_impl cudnn vs xla (bf16): max |diff| "
          f"{out['model_logits_cudnn_vs_xla']:.2e} (logit scale {np.abs(logits['xla']).max():.1f})")
  return out


# -- 2. generation -------------------------------------------------------------------------------------


def check_generation(args) -> dict:
  from flax import nnx

  from pragjax.models import Decoder, generate

  cfg = smollm2_config(quick=args.quick)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  ids = jax.random.randint(jax.random.key(2), (args.gen_batch, args.gen_prompt), 0, cfg.vocab_size)
  mask = jnp.ones_like(ids)
  fn = lambda: jax.block_until_ready(generate(model, ids, mask, max_new_tokens=args.gen_new).tokens)
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  s = summary(paired_timings({"gen": fn}, warmup=0, repeats=args.repeats)["gen"])
  tps = args.gen_batch * args.gen_new / s["median_s"]
  print("\n## greedy generation, SmolLM2-135M shape (random weights, bf16)\n")
  print(markdown_table(["B", "prompt", "new", "new tok/s", "ms/token (step)", "median s", "first call s"],
                       [[args.gen_batch, args.gen_prompt, args.gen_new, f"{tps:,.0f}",
                         f"{s['median_s'] / args.gen_new * 1e3:.2f}", f"{s['median_s']:.3f}", f"{first:.1f}"]]))
  return {"batch": args.gen_batch, "prompt": args.gen_prompt, "new": args.gen_new, "stats": s,
          "tokens_per_s": tps, "first_call_s": first}


# -- 3. SmolLM2 train step ------------------------------------------------------------------------------


def check_smollm2_train(args) -> dict:
  from flax import nnx
  from train_step import make_batch, pragjax_runner

  from pragjax.models import Decoder
  from pragjax.train.flops import device_peak_flops, train_flops_per_token

  out = {}
  for impl in (["xla"] if jax.default_backend() == "cpu" else ["cudnn", "xla"]):
    cfg = smollm2_config(quick=args.quick, attention_impl=None if impl == "xla" else impl, param_dtype="float32")
    try:
      model = Decoder(cfg, rngs=nnx.Rngs(0))
      run = pragjax_runner(model, make_batch(args.train_batch, args.train_seq, cfg.vocab_size), lean=True,
                           lr=1e-4, chunk_size=2048)
      del model
      first = [float(run()) for _ in range(2)]
      s = summary(paired_timings({"step": run}, warmup=1, repeats=args.repeats)["step"])
    except Exception as e:  # noqa: BLE001
      out[impl] = {"error": _err(e)}
      continue
    tps = args.train_batch * args.train_seq / s["median_s"]
    fpt, peak = train_flops_per_token(cfg, args.train_seq), device_peak_flops("bfloat16")
    out[impl] = {"stats": s, "tokens_per_s": tps, "mfu": tps * fpt / peak, "first_losses": first,
                 "flops_per_token": fpt, "peak_flops": peak}
    if impl == "cudnn":
      break  # xla only as the fallback
  rows = [[k, f"{v['tokens_per_s']:,.0f}", f"{v['stats']['median_s'] * 1e3:.1f}", f"{100 * v['mfu']:.1f}%",
           f"{v['first_losses'][0]:.4f} -> {v['first_losses'][1]:.4f}"] if "error" not in v else [k, v["error"], "", "", ""]
          for k, v in out.items()]
  print(f"\n## SmolLM2-135M-shaped train step (AdamW, lean loss; bf16 compute, f32 params; "
        f"{args.train_batch} x {args.train_seq})\n")
  print(markdown_table(["attention", "tok/s", "ms/step", "MFU", "loss step 1 -> 2"], rows))
  return out


SECTIONS = {"attention": check_attention, "generation": check_generation, "smollm2_train": check_smollm2_train}


def main(argv=None):
  args = parse_args(argv)
  dev = jax.devices()[0]
  print(f"# device_checks  (jax {jax.__version__}, backend {jax.default_backend()}, {dev.device_kind}, "
        f"{jax.device_count()} device(s))")
  results = {"benchmark": "device_checks", "device": dev.device_kind, "backend": jax.default_backend(),
             "jax": jax.__version__, "args": vars(args)}
  for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
    t0 = time.perf_counter()
    try:
      results[name] = SECTIONS[name](args)
    except Exception as e:  # noqa: BLE001  (one failing section must not hide the others)
      traceback.print_exc()
      results[name] = {"error": _err(e)}
      print(f"\n## {name}: FAILED ({results[name]['error']})")
    results[name + "_s"] = time.perf_counter() - t0
    write_json(args.out, results)  # after every section: a cut run keeps what it measured


if __name__ == "__main__":
  main()
