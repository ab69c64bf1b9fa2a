"""SAMI (Franken et al., 2024): principle following by maximising the mutual information between constitutions
and responses, iterated.

Variants:
  toy          the built-in `sami` model on the principles world (pragjax/toyworld/sami.py): 3 iterations,
               2 principles per constitution, C = 2, programmatic judge. Minutes on 2 CPU cores.
  ci           the toy pipeline, smaller (the CI test and the quickstart row).
  tiny         a local HF checkpoint (--config.model.path) on queries from --config.data.queries_path with
               the paper's constitution files (--config.sami.constitutions_dir) and the log-probability judge;
               the CI exercises it with a tiny random Mistral.
  mistral7b    Mistral-7B on one 8-GPU node (fsdp=8): RMSprop lr 5e-7, 2 principles, C = 2, 3 iterations.
  mixtral8x7b  Mixtral-8x7B on one 8-GPU node (fsdp=8), same hyperparameters.
  mistral7b_v5p64, mixtral8x7b_v5p64   the same on a TPU v5p-64 slice (32 chips = 32 JAX devices: fsdp=32).

Fields beyond common.py:
  world.name              "sami" (toy world; queries and principles from pragjax/toyworld/sami.py) | "" (files)
  sami.iterations         SAMI iterations N (each: sample, train one pass, evaluate)
  sami.init_from          "previous" (iteration K trains K-1's model, the paper) | "base" (always the base model)
  sami.num_principles     principles per constitution (k)
  sami.num_constitutions  constitutions per query (C, 2..2^k; distinct negation patterns)
  sami.include_positive   the first constitution of every query is the all-positive one
  sami.constitutions_dir  directory of the paper's constitution files (*.json with positive, negative,
                          identifiers); "" = the toy world's principles
  sami.prompt_template    prompt with {constitution} and {query}; the response follows it directly
  sami.line_format        one constitution line ({i} = 1-based index, {text}); lines joined by newlines
  sami.reduction          token reduction of L[i, j]: "mean" (per-token mean, the paper) | "sum"
  sami.temperature, sami.top_p   sampling (top_p 0 = off; temperature 0 = greedy, as the authors sample)
  sami.filter             training groups kept: none | distinct (no two constitutions with the same response) |
                          paper (distinct and every response well formed: the toy world's parse, for files a
                          non-empty response), as the authors keep only well-formed, distinct pairs
  sami.val_queries        validation queries scored at every iteration (toy: held-out queries after the test
                          ones; files: the training split's tail, not trained on); 0 = none
  sami.select_by          the reported iteration: the one (>= 1) with the highest validation win_rate | mi_bound
                          ("" = none); the test row of that iteration is the result
  sami.max_new_tokens     longest sampled response (tokens; EOS excluded from scoring)
  sami.sample_batch       prompts per generate call
  sami.score_batch        queries per C x C scoring forward (held-out MI bound)
  sami.pad_multiple       sampled prompts and scored sequences are padded to a multiple of this (fewer compiled
                          shapes; training batches use train.length_bucket)
  sami.max_length         prompt + response tokens kept per scored sequence (responses are cut)
  sami.train_queries      toy: training queries per iteration (files: 0 = every training query)
  sami.heldout_queries    held-out queries for the MI bound and the win rate (files: 0 = every held-out query)
  data.queries_path       files variant: queries (JSONL, JSON list or JSON object of columns)
  data.query_field        the field holding a query ("question" in the paper's response files)
  data.heldout_buckets    files variant: a query is held out when its hash is 0 mod this
  judge.kind              "programmatic" (toy world only) | "logprob" (a local LM compares A and B)
  judge.model             logprob judge checkpoint ("" = the base model, config.model)
  judge.template          judge prompt with {constitution}, {query}, {response_a}, {response_b}
  judge.answers           the two answers whose log-probabilities are compared (A first)
  judge.tie_margin        |log p(A) - log p(B)| at most this is a tie (0.5)
  judge.batch_size, judge.max_length   comparisons per forward, prompt tokens kept
  train.epochs            passes over the iteration's groups when train.steps is 0
  train.length_bucket     pad each batch to its longest sequence rounded up to this
  train.batch_size        queries per step (each is C*C sequences)
  train.steps             optimizer steps per iteration (0 = train.epochs passes); toy and ci: 2 steps of half
                          the training queries each, as the paper's iterations
  report.plot             write WORKDIR/sami.png (win rate, MI bound, length per iteration)
"""

from ml_collections import ConfigDict

from experiments.configs import common

TOY_TEMPLATE = "rules:\n{constitution}\ntopics: {query}\nanswer: "
REAL_TEMPLATE = ("Below is a post from Reddit and principles that a good summary of it follows.\n\n"
                 "Principles:\n{constitution}\n\n{query}\n\nA summary of the post that follows the principles:")
JUDGE_TEMPLATE = ("Principles for a summary:\n{constitution}\n\n{query}\n\nSummary A: {response_a}\n\n"
                  "Summary B: {response_b}\n\nWhich summary follows the principles better, A or B?\nAnswer:")


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.model = common.model_config(builtin="sami")
  c.world = ConfigDict(dict(name="sami"))
  c.sami = ConfigDict(dict(
      iterations=3, init_from="previous", num_principles=2, num_constitutions=2, include_positive=True,
      constitutions_dir="", prompt_template=TOY_TEMPLATE, line_format="{i}. {text}", reduction="mean",
      temperature=1.0, top_p=0.0, max_new_tokens=12, sample_batch=256, score_batch=32, max_length=48,
      pad_multiple=16, filter="paper", val_queries=0, select_by="",
      train_queries=512, heldout_queries=200))
  c.data.update(queries_path="", query_field="query", heldout_buckets=10)
  c.judge = ConfigDict(dict(kind="programmatic", model="", template=JUDGE_TEMPLATE, answers=(" A", " B"),
                            tie_margin=0.0, batch_size=8, max_length=2048))
  c.report = ConfigDict(dict(plot=True))
  c.train = common.train_config(steps=0, batch_size=16, seq_len=0, log_every=8, checkpoint_every=16,
                                keep_checkpoints=1, progress=True, export_hf=True)
  c.train.epochs = 1
  c.train.length_bucket = 8
  c.optim = common.optim_config(name="rmsprop", lr=3e-4, decay=0.99, schedule="constant", clip_norm=1.0)
  if arg in ("toy", "ci"):
    # The authors' protocol: greedy responses, well-formed distinct pairs only, about 2 optimizer steps per
    # iteration; the reported iteration is chosen on validation queries.
    c.sami.update(temperature=0.0, filter="paper", val_queries=100, select_by="win_rate")
    c.train.update(batch_size=256, steps=2)
  if arg == "toy":
    pass
  elif arg == "ci":
    c.sami.update(iterations=2, train_queries=128, heldout_queries=64, val_queries=32, sample_batch=128)
    c.train.update(batch_size=64, steps=2, log_every=1, progress=False)
    c.report.plot = False
  elif arg in ("tiny", "mistral7b", "mixtral8x7b", "mistral7b_v5p64", "mixtral8x7b_v5p64"):
    c.model = common.model_config(path="", builtin="")
    c.world.name = ""
    c.sami.update(prompt_template=REAL_TEMPLATE, train_queries=0, heldout_queries=0, max_new_tokens=128,
                  max_length=1024, temperature=0.0, sample_batch=64, score_batch=4, pad_multiple=64, val_queries=64,
                  select_by="win_rate")
    c.data.update(query_field="question")
    c.train.length_bucket = 64
    c.judge.kind = "logprob"
    # The paper: RMSprop, lr 5e-7, one pass per iteration, 3 iterations, no KL term, no reference.
    c.optim = common.optim_config(name="rmsprop", lr=5e-7, decay=0.99, schedule="constant", clip_norm=1.0)
    if arg == "tiny":
      # A random tiny model: sampled (greedy responses of two constitutions are often equal), unfiltered.
      c.sami.update(iterations=2, max_new_tokens=12, max_length=256, sample_batch=8, score_batch=2, pad_multiple=128,
                    temperature=1.0, filter="none", val_queries=2)
      c.train.length_bucket = 128
      c.train.update(batch_size=8, log_every=1, checkpoint_every=1, progress=False)
      c.judge.update(batch_size=2, max_length=512)
      c.optim.lr = 1e-3
      c.report.plot = True
    else:
      c.model.update(dtype="bfloat16", param_dtype="float32")
      c.train.update(batch_size=32, accum_steps=4, log_every=5, checkpoint_every=20, keep_checkpoints=2)
      c.mesh.update(data=1, fsdp=32 if arg.endswith("_v5p64") else 8, tensor=1)
      if arg.startswith("mixtral"):
        c.train.accum_steps = 8
  else:
    raise ValueError(f"unknown sami variant {arg!r}; expected toy, ci, tiny, mistral7b, mixtral8x7b, "
                     f"mistral7b_v5p64 or mixtral8x7b_v5p64")
  return c
