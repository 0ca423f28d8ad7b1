"""Zephyr: turn a small pre-trained language model into a STEM tutor, and prove what each step did."""

__version__ = "0.1.0"
