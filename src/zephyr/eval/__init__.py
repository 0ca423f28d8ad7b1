"""Evaluation stage: lm-eval-exact tasks, a fast scoring engine, and the comparison report."""
