"""One package per method or family of papers.

Each holds what is specific to its method: data transforms and collation, its
sampling and scoring, its toy-world evaluation and its recipe (`recipe.py`:
the `Method` value the runner trains, and `run(config, workdir)`). Losses live
in `pragjax.objectives`; the loop, the train step and the runner in
`pragjax.train`; method-agnostic evaluation in `pragjax.eval`.
"""
