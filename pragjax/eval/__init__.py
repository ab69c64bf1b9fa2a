"""Evaluation: toy-world solvers, best-of-N, ProcessBench, judges."""
