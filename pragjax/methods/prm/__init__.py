"""Process reward models: implicit-PRM scoring (`implicit`), solution tokenization with step ends
(`steps`), outcome/pair training data (`data`) and training wiring (`training`, imported on demand)."""

from pragjax.methods.prm.implicit import AGGREGATIONS, MODES, aggregate, make_scorer, step_rewards, token_rewards

__all__ = ["AGGREGATIONS", "MODES", "aggregate", "make_scorer", "step_rewards", "token_rewards"]
