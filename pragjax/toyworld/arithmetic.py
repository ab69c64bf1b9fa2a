"""The arithmetic-chains world: step-by-step integer arithmetic with exactly checkable steps.

A problem gives a few input variables and a chain of operations; the solution
evaluates the chain one operation per line, showing the substituted operands
and the result, then states the answer after a fixed marker:

  prompt:    "q=3,f=5;x=q+f;m=x*2;k=m-f;k?\\n"
  solution:  "x=3+5=8\\nm=8*2=16\\nk=16-5=11\\n#11\\n"

Format (one character is one token under `tokenizer()`):
- Prompt: the inputs `name=value` joined by ",", then ";", then the operations
  `target=left<op>right` joined by ";", then ";", the queried variable, "?",
  "\\n". Operands are variable names or integer constants.
- Solution: one step per line (`STEP_SEPARATOR`). Step i is
  `target=<left value><op><right value>=<result>` for operation i; the last
  line is the answer line `#<answer>` (`ANSWER_MARKER`). Numbers are written
  in canonical decimal (no sign, no leading zeros).
- Variable names are distinct lowercase letters drawn at random; operations
  are `+`, `-`, `*`; inputs are drawn in 0..max_input (default 50).
- The chain is a chain: operation i > 0 uses the result of operation i - 1 as
  one operand (either side), and the queried variable is the last target, so
  every step lies on the path to the answer. The other operand is another
  defined variable or a constant (1..max_constant; 2..max_constant for `*`).
- Range: every value (inputs, constants, every intermediate result, the
  answer) lies in 0..max_value (default 99). There is no modular arithmetic:
  the sampler only picks operations whose exact result stays in range.

Steps and correctness. `split_steps(solution)` gives the lines, answer line
last, so a gold solution of k operations has k + 1 steps. A step is correct
iff it parses, names the target of the operation at its index, its operands
equal the values the *gold* chain gives that operation's operands, its
operator is the operation's, and its result is the exact result. (With the
canonical number format this is string equality with the gold line.) The
answer step is correct iff it is `#<gold answer>`. Anchoring to the gold chain
means a step that faithfully reuses an earlier wrong value is incorrect; the
first error is the same under this rule and under a purely local one, because
every step before it matches the gold chain. A missing step, an extra step
after the answer line, and an unparseable line are errors at their index.

Held-out split. The problem space is partitioned by a stable hash (blake2b) of
the problem's canonical prompt (variables renamed a, b, c, ... in order of
definition): one bucket in `HELDOUT_BUCKETS` is held out. `corpus` and
`training_problems` reject held-out problems and `heldout_problems` only
accepts them, so no held-out problem, even renamed, can appear in any training
corpus whatever the seeds. `heldout_problems` also draws from its own seed
stream and returns distinct problems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import string
from typing import NamedTuple, Sequence

import numpy as np

from pragjax.models.tokenizer import Tokenizer
from pragjax.toyworld.tokenizer import char_tokenizer

STEP_SEPARATOR = "\n"
ANSWER_MARKER = "#"
OPS = ("+", "-", "*")
VARIABLE_NAMES = string.ascii_lowercase
ALPHABET = "\n" + ANSWER_MARKER + "*+,-;=?" + string.digits + VARIABLE_NAMES
HELDOUT_BUCKETS = 10
HELDOUT_STREAM = 0x48454C44  # Mixed into heldout_problems' seed so its stream differs from corpus seeds.

DEFAULT_NUM_STEPS = (2, 4)
DEFAULT_NUM_INPUTS = (2, 3)
DEFAULT_MAX_VALUE = 99
DEFAULT_MAX_INPUT = 50  # Inputs at most half the range leave room for `*` (about 24% of steps, vs 15% at 99).
DEFAULT_MAX_CONSTANT = 9

_NUMBER = r"(0|[1-9][0-9]*)"
_STEP_RE = re.compile(rf"([a-z])={_NUMBER}([-+*]){_NUMBER}={_NUMBER}")
_ANSWER_RE = re.compile(rf"{re.escape(ANSWER_MARKER)}(-?{_NUMBER})")

Operand = str | int  # A variable name or an integer constant.


@dataclasses.dataclass(frozen=True)
class Operation:
  """`target = left <op> right`; operands are variable names or integer constants."""
  target: str
  op: str
  left: Operand
  right: Operand


class Step(NamedTuple):
  """A parsed solution line `target=left<op>right=result` (operands as numbers)."""
  target: str
  left: int
  op: str
  right: int
  result: int


@dataclasses.dataclass(frozen=True)
class Problem:
  """One arithmetic chain: its structure and its texts. Build it with `build_problem`.

  Attributes:
    inputs: (name, value) of the given variables, in prompt order.
    operations: the chain, in order; the last target is the queried variable.
    results: the value of each operation's target.
    prompt: the prompt text, ending in "\\n".
    gold_steps: the gold solution lines without separators, answer line last
      (len(operations) + 1 of them).
    answer: the value of the queried variable.
  """
  inputs: tuple[tuple[str, int], ...]
  operations: tuple[Operation, ...]
  results: tuple[int, ...]
  prompt: str
  gold_steps: tuple[str, ...]
  answer: int

  @property
  def values(self) -> dict[str, int]:
    """Every variable's value, inputs then targets."""
    return {**dict(self.inputs), **{o.target: r for o, r in zip(self.operations, self.results)}}

  @property
  def solution(self) -> str:
    """The gold solution text: every gold step followed by `STEP_SEPARATOR`."""
    return "".join(s + STEP_SEPARATOR for s in self.gold_steps)

  @property
  def text(self) -> str:
    """The pretraining document: prompt + gold solution (EOS is added at tokenization, not here)."""
    return self.prompt + self.solution


def apply_op(op: str, left: int, right: int) -> int:
  """The exact integer result of `left <op> right`."""
  if op == "+":
    return left + right
  if op == "-":
    return left - right
  if op == "*":
    return left * right
  raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def _operand_value(operand: Operand, values: dict[str, int]) -> int:
  return values[operand] if isinstance(operand, str) else operand


def _format_operation(o: Operation) -> str:
  return f"{o.target}={o.left}{o.op}{o.right}"


def render_prompt(inputs: Sequence[tuple[str, int]], operations: Sequence[Operation]) -> str:
  """The prompt text of a chain, e.g. "q=3,f=5;x=q+f;k=x*2;k?\\n"."""
  given = ",".join(f"{name}={value}" for name, value in inputs)
  chain = ";".join(_format_operation(o) for o in operations)
  return f"{given};{chain};{operations[-1].target}?{STEP_SEPARATOR}"


def format_step(step: Step) -> str:
  """A solution line, e.g. "x=3+5=8"."""
  return f"{step.target}={step.left}{step.op}{step.right}={step.result}"


def format_answer(answer: int) -> str:
  """The answer line, e.g. "#11"."""
  return f"{ANSWER_MARKER}{answer}"


def _check_value(what: str, value, max_value: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= max_value:
    raise ValueError(f"{what} is {value!r}; values must be integers in 0..{max_value}")


def build_problem(inputs: Sequence[tuple[str, int]], operations: Sequence[Operation], *,
                  max_value: int = DEFAULT_MAX_VALUE) -> Problem:
  """Validates a chain and computes its values and texts.

  Raises ValueError if a name is not a single lowercase letter or is defined
  twice, an operand is undefined when used, an operator is unknown, or any
  value (input, constant, result) falls outside 0..max_value.
  """
  if not inputs or not operations:
    raise ValueError(f"a problem needs at least one input and one operation, got {len(inputs)} and "
                     f"{len(operations)}")
  values: dict[str, int] = {}

  def define(name: str, value: int) -> None:
    if not (isinstance(name, str) and len(name) == 1 and name in VARIABLE_NAMES):
      raise ValueError(f"variable name {name!r} is not a single lowercase letter")
    if name in values:
      raise ValueError(f"variable {name!r} is defined twice")
    _check_value(f"value of {name!r}", value, max_value)
    values[name] = int(value)

  for name, value in inputs:
    define(name, value)
  results = []
  for i, o in enumerate(operations):
    if o.op not in OPS:
      raise ValueError(f"operation {i} ({o}): unknown operator {o.op!r}; expected one of {OPS}")
    for operand in (o.left, o.right):
      if isinstance(operand, str):
        if operand not in values:
          raise ValueError(f"operation {i} ({_format_operation(o)}): {operand!r} is not defined before it")
      else:
        _check_value(f"operation {i} ({_format_operation(o)}): constant", operand, max_value)
    result = apply_op(o.op, _operand_value(o.left, values), _operand_value(o.right, values))
    define(o.target, result)
    results.append(result)
  inputs = tuple((name, int(value)) for name, value in inputs)
  operations = tuple(operations)
  steps = [format_step(Step(o.target, _operand_value(o.left, values), o.op, _operand_value(o.right, values), r))
           for o, r in zip(operations, results)]
  return Problem(inputs=inputs, operations=operations, results=tuple(results),
                 prompt=render_prompt(inputs, operations), gold_steps=(*steps, format_answer(results[-1])),
                 answer=results[-1])


def _check_range(name: str, bounds: tuple[int, int], low: int) -> tuple[int, int]:
  lo, hi = bounds
  if not low <= lo <= hi:
    raise ValueError(f"{name}={bounds!r} must be (lo, hi) with {low} <= lo <= hi")
  return lo, hi


def _sample_operation(rng: np.random.Generator, target: str, chain: str, values: dict[str, int], *,
                      max_value: int, max_constant: int) -> Operation:
  """An operation on `chain` (either side) and another variable or a constant, with its result in range.

  The operator is drawn first, then the kind of partner (variable or
  constant), then uniformly among the in-range choices; a draw with no
  in-range choice falls through to the next, and `chain - 1` or `chain + 1`
  always exists, so this never fails.
  """
  partners = {"variable": [n for n in values if n != chain]}
  for op_index in rng.permutation(len(OPS)):
    op = OPS[op_index]
    partners["constant"] = list(range(2 if op == "*" else 1, max_constant + 1))
    for kind in ("variable", "constant") if rng.random() < 0.5 else ("constant", "variable"):
      choices = [(left, right) for p in partners[kind] for left, right in ((chain, p), (p, chain))
                 if 0 <= apply_op(op, _operand_value(left, values), _operand_value(right, values)) <= max_value]
      if choices:
        left, right = choices[rng.integers(len(choices))]
        return Operation(target, op, left, right)
  raise AssertionError(f"no in-range operation on {chain}={values[chain]} (max_value={max_value})")


def sample_problem(rng: np.random.Generator, *, num_steps: tuple[int, int] = DEFAULT_NUM_STEPS,
                   num_inputs: tuple[int, int] = DEFAULT_NUM_INPUTS, max_value: int = DEFAULT_MAX_VALUE,
                   max_input: int = DEFAULT_MAX_INPUT, max_constant: int = DEFAULT_MAX_CONSTANT) -> Problem:
  """A random chain: `num_inputs` inputs uniform in 0..max_input, then `num_steps` operations (bounds inclusive).

  The first operation uses a random input; each later one uses the previous
  result. Every value stays in 0..max_value (see the module docstring).
  """
  lo_steps, hi_steps = _check_range("num_steps", num_steps, 1)
  lo_inputs, hi_inputs = _check_range("num_inputs", num_inputs, 1)
  if hi_steps + hi_inputs > len(VARIABLE_NAMES):
    raise ValueError(f"num_steps={num_steps} and num_inputs={num_inputs} can need more than "
                     f"{len(VARIABLE_NAMES)} variable names")
  if max_value < 1 or not 1 <= max_constant <= max_value or not 0 <= max_input <= max_value:
    raise ValueError(f"need max_value >= 1, 1 <= max_constant <= max_value and 0 <= max_input <= max_value, got "
                     f"max_value={max_value}, max_constant={max_constant}, max_input={max_input}")
  n_inputs = int(rng.integers(lo_inputs, hi_inputs + 1))
  n_steps = int(rng.integers(lo_steps, hi_steps + 1))
  names = [VARIABLE_NAMES[i] for i in rng.permutation(len(VARIABLE_NAMES))[:n_inputs + n_steps]]
  values = {name: int(rng.integers(0, max_input + 1)) for name in names[:n_inputs]}
  inputs = list(values.items())
  chain = names[int(rng.integers(n_inputs))]
  operations = []
  for target in names[n_inputs:]:
    o = _sample_operation(rng, target, chain, values, max_value=max_value, max_constant=max_constant)
    values[target] = apply_op(o.op, _operand_value(o.left, values), _operand_value(o.right, values))
    operations.append(o)
    chain = target
  return build_problem(inputs, operations, max_value=max_value)


def split_steps(solution_text: str) -> list[str]:
  """The solution's steps, without separators: the text split on `STEP_SEPARATOR`.

  A final separator ends the last step rather than starting an empty one;
  text after the last separator (an unfinished line) is a step; "" has none.
  """
  steps = solution_text.split(STEP_SEPARATOR)
  return steps[:-1] if steps[-1] == "" else steps


def parse_step(step_text: str) -> Step | None:
  """The `Step` of a line `target=left<op>right=result` in canonical format, or None."""
  match = _STEP_RE.fullmatch(step_text)
  if match is None:
    return None
  target, left, op, right, result = match.groups()
  return Step(target, int(left), op, int(right), int(result))


def parse_answer(step_text: str) -> int | None:
  """The integer of an answer line `#<integer>` (canonical decimal, optional "-"), or None."""
  match = _ANSWER_RE.fullmatch(step_text)
  return None if match is None else int(match.group(1))


def gold_step(problem: Problem, step_index: int) -> Step:
  """The gold `Step` of operation `step_index`."""
  o = problem.operations[step_index]
  values = problem.values
  return Step(o.target, _operand_value(o.left, values), o.op, _operand_value(o.right, values),
              problem.results[step_index])


def verify_step(problem: Problem, step_index: int, step_text: str, previous_steps: Sequence[str]) -> bool:
  """Whether step `step_index` of a solution is correct (see the module docstring for the rule).

  Correctness is anchored to the gold chain, so it does not depend on the
  content of `previous_steps`; they are taken for the interface of a step
  judge and must number exactly `step_index` (ValueError otherwise). Steps
  0..k-1 are the k operations, step k the answer line; any later step is
  an extra step and never correct.
  """
  if isinstance(step_index, bool) or not isinstance(step_index, (int, np.integer)) or step_index < 0:
    raise ValueError(f"step_index must be a non-negative integer, got {step_index!r}")
  if len(previous_steps) != step_index:
    raise ValueError(f"step {step_index} needs the {step_index} steps before it, got {len(previous_steps)}")
  n_ops = len(problem.operations)
  if step_index < n_ops:
    return parse_step(step_text) == gold_step(problem, step_index)
  if step_index == n_ops:
    return parse_answer(step_text) == problem.answer
  return False


def first_error(problem: Problem, solution_text: str) -> int:
  """Index of the first incorrect step of `solution_text`, or -1 if every step and the answer are correct.

  A missing step is an error at its index (a solution with only the first j
  gold steps gives j); a step after the answer line is an error at its index.
  """
  steps = split_steps(solution_text)
  for i, step in enumerate(steps):
    if not verify_step(problem, i, step, steps[:i]):
      return i
  return -1 if len(steps) == len(problem.gold_steps) else len(steps)


def extract_answer(solution_text: str) -> int | None:
  """The answer of the first line that starts with `ANSWER_MARKER`; None if there is none or it is malformed."""
  for step in split_steps(solution_text):
    if step.startswith(ANSWER_MARKER):
      return parse_answer(step)
  return None


def is_correct(problem: Problem, solution_text: str) -> bool:
  """Outcome label: the extracted answer equals the gold answer (the steps are not checked)."""
  return extract_answer(solution_text) == problem.answer


def canonical_prompt(problem: Problem) -> str:
  """The prompt with variables renamed a, b, c, ... in order of definition (equal for renamed problems)."""
  names = [name for name, _ in problem.inputs] + [o.target for o in problem.operations]
  return problem.prompt.translate(str.maketrans(dict(zip(names, VARIABLE_NAMES))))


def is_heldout(problem: Problem) -> bool:
  """Whether the problem lies in the held-out part of the problem space (about 1 in `HELDOUT_BUCKETS`)."""
  digest = hashlib.blake2b(canonical_prompt(problem).encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") % HELDOUT_BUCKETS == 0


def _max_draws(n: int) -> int:
  """Draws allowed for `n` accepted problems: 20 times the expected count for held-out ones, plus slack."""
  return 20 * HELDOUT_BUCKETS * n + 1000


def training_problems(rng: np.random.Generator, n: int, **problem_kwargs) -> list[Problem]:
  """`n` problems from `sample_problem(rng, **problem_kwargs)`, held-out ones rejected (repeats allowed)."""
  problems = []
  for _ in range(_max_draws(n)):
    if len(problems) == n:
      break
    problem = sample_problem(rng, **problem_kwargs)
    if not is_heldout(problem):
      problems.append(problem)
  if len(problems) < n:
    raise RuntimeError(f"only {len(problems)} of {n} training problems after {_max_draws(n)} draws; "
                       f"the problem space of {problem_kwargs} is too small")
  return problems


def corpus(rng: np.random.Generator, n: int, **problem_kwargs) -> list[str]:
  """`n` pretraining documents (prompt + gold solution) of training problems; no EOS in the text."""
  return [p.text for p in training_problems(rng, n, **problem_kwargs)]


def heldout_problems(seed: int, n: int, **problem_kwargs) -> list[Problem]:
  """`n` distinct held-out problems (distinct up to renaming) from seed stream `(HELDOUT_STREAM, seed)`.

  They can never be in a training corpus: see "Held-out split" in the module docstring.
  """
  rng = np.random.default_rng([HELDOUT_STREAM, seed])
  problems, seen = [], set()
  for _ in range(_max_draws(n)):
    if len(problems) == n:
      break
    problem = sample_problem(rng, **problem_kwargs)
    key = canonical_prompt(problem)
    if key not in seen and is_heldout(problem):
      seen.add(key)
      problems.append(problem)
  if len(problems) < n:
    raise RuntimeError(f"only {len(problems)} of {n} distinct held-out problems after {_max_draws(n)} draws; "
                       f"the problem space of {problem_kwargs} is too small")
  return problems


def unigram_entropy(token_ids_list: Sequence[Sequence[int]]) -> float:
  """Entropy in nats per token of the corpus' token frequencies (all sequences pooled).

  A model's mean next-token loss on the same tokens should fall below this
  once it learns more than token frequencies. Pass the tokens the loss is
  taken on (typically without BOS, with EOS).
  """
  arrays = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in token_ids_list]
  ids = np.concatenate(arrays) if arrays else np.zeros((0,), np.int64)
  if ids.size == 0:
    raise ValueError("unigram_entropy needs at least one token")
  if ids.min() < 0:
    raise ValueError(f"token ids must be non-negative, got {ids.min()}")
  counts = np.bincount(ids)
  p = counts[counts > 0] / ids.size
  return float(-(p * np.log(p)).sum())


def tokenizer() -> Tokenizer:
  """The world's character-level tokenizer: `char_tokenizer(ALPHABET)`."""
  return char_tokenizer(ALPHABET)
