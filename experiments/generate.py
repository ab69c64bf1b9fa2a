"""Generates completions from the command line: see a model talk in one command.

  python -m experiments.generate --model=builtin:smollm2-135m-instruct --chat \
      --prompt="What is the capital of France?"
  python -m experiments.generate --model=/ckpt/Llama-3.1-8B-Instruct --input=prompts.jsonl \
      --output=out.jsonl --temperature=0.7 --top_p=0.9 --num_samples=4

`--model` is an HF checkpoint directory, a `.gguf` file or `builtin:NAME`.
Input JSONL rows are `{"prompt": str}` or `{"messages": [...]}` (chat rows
always use the chat template). Output JSONL rows are the input row plus
`completions` (a list of `--num_samples` strings) and `lengths` (generated
tokens each). Prints each completion and the decode speed: generated tokens
per second of the whole call and of the decode loop after compilation.
"""

import json
import sys
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "builtin:smollm2-135m-instruct", "HF directory, .gguf file or builtin:NAME")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "a prompt (repeat the flag for several)")
_INPUT = flags.DEFINE_string("input", "", "JSONL of {prompt} or {messages} rows")
_OUTPUT = flags.DEFINE_string("output", "", "write completions here as JSONL (default: print only)")
_CHAT = flags.DEFINE_bool("chat", False, "wrap each plain prompt as a user turn and apply the chat template")
_SYSTEM = flags.DEFINE_string("system", "", "system message for --chat prompts ('' = the template's default)")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "tokens generated per completion")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy")
_TOP_K = flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0 = off)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1 = off)")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "completions per prompt")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_BATCH = flags.DEFINE_integer("batch_size", 8, "prompts per generate call")
_DTYPE = flags.DEFINE_string("dtype", "", "compute dtype ('' = the parameters')")


def read_rows(prompts, input_path: str) -> list[dict]:
  """Flag prompts then JSONL rows, each `{prompt}` or `{messages}`; errors name file and line."""
  rows = [{"prompt": p} for p in prompts]
  if input_path:
    with open(input_path, encoding="utf-8") as f:
      for i, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{input_path}, line {i}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not (isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)):
          raise ValueError(f"{input_path}, line {i}: expected an object with a string 'prompt' or a list 'messages'")
        rows.append(row)
  if not rows:
    raise ValueError("nothing to generate from: pass --prompt=... or --input=FILE.jsonl")
  return rows


def render(row: dict, tokenizer, chat: bool, system: str = "") -> str:
  """The prompt text of one row (chat template for `messages` rows and under `chat`)."""
  if "messages" in row:
    return tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True)
  if chat:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": row["prompt"]}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
  return row["prompt"]


def generate_rows(loaded, rows, *, chat=False, system="", max_new_tokens=64, temperature=0.0, top_k=0, top_p=1.0,
                  num_samples=1, seed=0, batch_size=8):
  """Adds `completions` and `lengths` to each row; returns (rows, stats)."""
  import jax
  import numpy as np

  from pragjax.models import generate

  tok, cfg = loaded.tokenizer, loaded.config
  eos = tuple(sorted({*cfg.eos_token_id, *([tok.eos_token_id] if tok.eos_token_id is not None else [])}))
  texts = [render(r, tok, chat, system) for r in rows]
  templated = [chat or "messages" in r for r in rows]  # a template writes its own special tokens
  rng = jax.random.key(seed)
  out, gen_tokens, t_all, t_first = [], 0, 0.0, None
  for start in range(0, len(texts), batch_size):
    chunk = texts[start:start + batch_size]
    ids, mask = tok.encode_batch(chunk, padding_side="left",
                                 add_special_tokens=not any(templated[start:start + batch_size]))
    rng, key = jax.random.split(rng)
    t0 = time.perf_counter()
    res = generate(loaded.model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                   top_k=top_k or None, top_p=top_p if top_p < 1.0 else None, eos_token_ids=eos,
                   num_samples=num_samples, rng=key, pad_token_id=tok.pad_token_id)
    tokens, lengths = np.asarray(res.tokens), np.asarray(res.lengths)
    dt = time.perf_counter() - t0
    t_first = dt if t_first is None else t_first
    t_all += dt
    gen_tokens += int(lengths.sum())
    out.extend(zip(tok.decode_batch(tokens, lengths=lengths), lengths.tolist()))
  for i, row in enumerate(rows):
    pairs = out[i * num_samples:(i + 1) * num_samples]
    row["completions"] = [p[0] for p in pairs]
    row["lengths"] = [int(p[1]) for p in pairs]
  return rows, dict(generated_tokens=gen_tokens, seconds=t_all, tokens_per_s=gen_tokens / max(t_all, 1e-9),
                    first_call_seconds=t_first)


def main(argv):
  del argv
  from pragjax.train import runner

  runner.quiet_logging()
  rows = read_rows(_PROMPT.value, _INPUT.value)
  t0 = time.perf_counter()
  loaded = runner.load_model(dict(path=_MODEL.value, dtype=_DTYPE.value))
  load_s = time.perf_counter() - t0
  rows, stats = generate_rows(
      loaded, rows, chat=_CHAT.value, system=_SYSTEM.value, max_new_tokens=_MAX_NEW.value,
      temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, num_samples=_NUM_SAMPLES.value,
      seed=_SEED.value, batch_size=_BATCH.value)
  for row in rows:
    head = row.get("prompt") or row["messages"][-1].get("content", "")
    for c in row["completions"]:
      print(f">>> {head}\n{c}\n")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  print(f"model loaded in {load_s:.1f} s; {stats['generated_tokens']} tokens in {stats['seconds']:.2f} s "
        f"({stats['tokens_per_s']:.1f} tokens/s, first call incl. compilation {stats['first_call_seconds']:.2f} s)")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
