"""Multiple-choice and pairwise evaluation of a model by option likelihood: the run over configured tasks
(`recipe`); the scoring itself is method-agnostic (`pragjax.eval.mcqa`)."""
