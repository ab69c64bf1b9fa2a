"""Solutions -> token ids, response mask and step ends, found by tokenizing prefixes.

A solution is a prompt and a response made of steps. Tokenization follows
generation: the prompt part is the chat template's rendering of the user turn
with the generation prompt when the tokenizer has a template (else BOS +
prompt), the response is tokenized alone after it, and EOS (the end-of-turn
token of chat models) ends it. Training (`pragjax.methods.prm.data`) and scoring use
this same function, so a response has the same ids in both.

Step ends. Step k ends at character `char_ends[k]` of the response (its
separator included). Its last token is found by tokenizing the response
prefix `response[:char_ends[k]]` alone: if those ids are a prefix of the
whole response's ids, the step ends at the last of them; if the tokenizer
merged characters across the boundary (the prefix's last ids differ), the step
ends at the last token the two tokenizations share (the merged token then
belongs to the next step) and the solution's `boundary_merges` counts it.
Token counts are never guessed. With `add_eos`, the last step ends at EOS,
so that the sum of single-step rewards equals the outcome reward.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pragjax.data.collate import prompt_response_ids_and_mask
from pragjax.data.errors import DataError

__all__ = ["EncodedSolution", "join_steps", "split_response", "prompt_and_response_ids", "encode_solution",
           "encode_steps", "collate_solutions"]


@dataclasses.dataclass(frozen=True)
class EncodedSolution:
  """input_ids, response_mask: `[L]` int32 (1 on response tokens, EOS included); step_end: `[K]` int32
  indices into input_ids of each step's last token (steps cut off by `max_length` are dropped);
  num_steps: steps before truncation; boundary_merges: steps whose prefix tokenization differed."""
  input_ids: np.ndarray
  response_mask: np.ndarray
  step_end: np.ndarray
  num_steps: int
  boundary_merges: int


def join_steps(steps: Sequence[str], separator: str = "\n\n", trailing_separator: bool = False
               ) -> tuple[str, list[int]]:
  """`separator.join(steps)` (plus a final separator if `trailing_separator`) and each step's end.

  Step k's end is the character offset just after its separator (after the
  step itself for the last step, unless `trailing_separator`).
  """
  if isinstance(steps, str):
    raise DataError("steps must be a sequence of strings, got one string")
  text, ends = "", []
  for k, step in enumerate(steps):
    if not isinstance(step, str):
      raise DataError(f"step {k} must be a string, got {type(step).__name__}")
    text += step
    if k < len(steps) - 1 or trailing_separator:
      text += separator
    ends.append(len(text))
  return text, ends


def split_response(response: str, separator: str = "\n\n") -> list[int]:
  """Step ends of a generated response: just after each separator, and at the end if text follows the last one.

  Matches `pragjax.toyworld.arithmetic.split_steps` for its separator: "a\\nb\\n" -> [2, 4]; "a\\nb" -> [2, 3].
  """
  if not separator:
    raise DataError("separator must be a non-empty string")
  ends, start = [], 0
  while True:
    i = response.find(separator, start)
    if i < 0:
      break
    start = i + len(separator)
    ends.append(start)
  if start < len(response):
    ends.append(len(response))
  return ends


def _use_template(tokenizer, chat_template: bool | None) -> bool:
  if chat_template is None:
    return tokenizer.chat_template is not None
  if chat_template and tokenizer.chat_template is None:
    raise DataError(f"chat_template=True but the tokenizer from {tokenizer.source!r} has no chat template")
  return bool(chat_template)


def _encode_text(tokenizer, text: str) -> list[int]:
  return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def prompt_and_response_ids(tokenizer, prompt: str, response: str, *, chat_template: bool | None = None,
                            add_eos: bool = True) -> tuple[list[int], list[int]]:
  """(prompt ids, response ids) as at generation time; see the module docstring."""
  if _use_template(tokenizer, chat_template):
    try:
      p_ids = list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True))
    except Exception as e:  # jinja2 errors
      raise DataError(f"chat template failed on the prompt {prompt[:40]!r} ({type(e).__name__}: {e})") from e
    r_ids = _encode_text(tokenizer, response)
    if add_eos:
      if tokenizer.eos_token_id is None:
        raise DataError(f"tokenizer from {tokenizer.source!r} has no EOS token to end responses")
      r_ids.append(tokenizer.eos_token_id)
    return p_ids, r_ids
  ids, mask = prompt_response_ids_and_mask(prompt, response, tokenizer)  # [BOS] prompt response EOS
  n_prompt = len(mask) - sum(mask)
  p_ids, r_ids = list(ids[:n_prompt]), list(ids[n_prompt:])
  return p_ids, (r_ids if add_eos else r_ids[:-1])


def _step_token_ends(tokenizer, response: str, response_ids: list[int], char_ends: Sequence[int]
                     ) -> tuple[list[int], int]:
  """Index (within the response ids) of each step's last token, and the number of boundary merges."""
  ends, merges, prev = [], 0, -1
  for k, c in enumerate(char_ends):
    if not 0 <= c <= len(response) or (k and c < char_ends[k - 1]):
      raise DataError(f"step ends must be non-decreasing offsets in 0..{len(response)}, got {list(char_ends)}")
    prefix = _encode_text(tokenizer, response[:c])
    n = len(prefix)
    if response_ids[:n] != prefix:
      merges += 1
      n = next(i for i, (a, b) in enumerate(zip(prefix, response_ids)) if a != b)
    end = n - 1
    ends.append(max(end, prev) if end >= 0 else end)
    prev = ends[-1]
  return ends, merges


def encode_solution(tokenizer, prompt: str, response: str, char_ends: Sequence[int], *,
                    chat_template: bool | None = None, add_eos: bool = True,
                    max_length: int | None = None) -> EncodedSolution:
  """Tokenizes one solution and finds its step ends by tokenizing response prefixes.

  Args:
    tokenizer: a `pragjax.models.tokenizer.Tokenizer`.
    prompt, response: texts; `char_ends[k]` is the end offset of step k in `response`
      (`join_steps` / `split_response` make them).
    chat_template: None = use the tokenizer's template when it has one.
    add_eos: end the response with EOS (the last step then ends at EOS).
    max_length: keep the first `max_length` tokens; steps ending past it are dropped.
  """
  p_ids, r_ids = prompt_and_response_ids(tokenizer, prompt, response, chat_template=chat_template, add_eos=add_eos)
  text_ids = r_ids[:-1] if add_eos else r_ids
  ends, merges = _step_token_ends(tokenizer, response, text_ids, char_ends)
  if add_eos and ends:
    ends[-1] = len(r_ids) - 1
  ids = np.asarray(p_ids + r_ids, np.int32)
  mask = np.asarray([0] * len(p_ids) + [1] * len(r_ids), np.int32)
  step_end = np.asarray([len(p_ids) + e for e in ends], np.int32).reshape(-1)
  if max_length is not None:
    ids, mask = ids[:max_length], mask[:max_length]
    step_end = step_end[step_end < max_length]
  return EncodedSolution(ids, mask, step_end, len(char_ends), merges)


def encode_steps(tokenizer, prompt: str, steps: Sequence[str], *, separator: str = "\n\n",
                 trailing_separator: bool = False, **kwargs) -> EncodedSolution:
  """`encode_solution` of a solution given as a list of steps joined by `separator`."""
  response, ends = join_steps(steps, separator, trailing_separator)
  return encode_solution(tokenizer, prompt, response, ends, **kwargs)


def _round_up(n: int, multiple: int) -> int:
  return -(-max(n, 1) // multiple) * multiple


def collate_solutions(solutions: Sequence[EncodedSolution], pad_id: int, *, pad_to_multiple_of: int = 32,
                      steps_multiple_of: int = 8, seq_len: int | None = None,
                      num_steps: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded scoring batch: `input_ids`, `attention_mask`, `response_mask` `[B, T]` int32 and
  `step_end`, `step_mask` `[B, K]` int32. T and K are rounded up (fewer recompilations) unless given."""
  t = seq_len or _round_up(max((len(s.input_ids) for s in solutions), default=1), pad_to_multiple_of)
  k = num_steps or _round_up(max((len(s.step_end) for s in solutions), default=1), steps_multiple_of)
  b = len(solutions)
  out = {"input_ids": np.full((b, t), pad_id, np.int32), "attention_mask": np.zeros((b, t), np.int32),
         "response_mask": np.zeros((b, t), np.int32), "step_end": np.zeros((b, k), np.int32),
         "step_mask": np.zeros((b, k), np.int32)}
  for i, s in enumerate(solutions):
    n, m = len(s.input_ids), len(s.step_end)
    if n > t or m > k:
      raise DataError(f"solution {i} has {n} tokens and {m} steps, more than the batch's {t} and {k}")
    out["input_ids"][i, :n] = s.input_ids
    out["attention_mask"][i, :n] = 1
    out["response_mask"][i, :n] = s.response_mask
    out["step_end"][i, :m] = s.step_end
    out["step_mask"][i, :m] = 1
  return out
