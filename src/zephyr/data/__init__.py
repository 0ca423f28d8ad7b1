"""Data stage: readers, cleaning, decontamination, synthetic STEM data, mixtures."""
