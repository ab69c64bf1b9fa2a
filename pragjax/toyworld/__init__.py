"""Synthetic toy worlds with exactly known ground truth, and their character-level tokenizer.

`arithmetic`: arithmetic chains with step-local, checkable solutions (process
rewards, best-of-N, first-error detection).
"""

from pragjax.toyworld import arithmetic
from pragjax.toyworld.arithmetic import (
    ALPHABET,
    ANSWER_MARKER,
    STEP_SEPARATOR,
    Operation,
    Problem,
    Step,
    build_problem,
    corpus,
    extract_answer,
    first_error,
    heldout_problems,
    is_correct,
    is_heldout,
    sample_problem,
    split_steps,
    training_problems,
    unigram_entropy,
    verify_step,
)
from pragjax.toyworld.tokenizer import char_tokenizer, char_vocab

__all__ = [
    "ALPHABET", "ANSWER_MARKER", "STEP_SEPARATOR", "Operation", "Problem", "Step", "arithmetic",
    "build_problem", "char_tokenizer", "char_vocab", "corpus", "extract_answer", "first_error",
    "heldout_problems", "is_correct", "is_heldout", "sample_problem", "split_steps", "training_problems",
    "unigram_entropy", "verify_step",
]
