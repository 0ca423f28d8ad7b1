"""Quantization stage: int8/int4 variants and their honest comparison."""
