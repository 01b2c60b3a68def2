"""Reproducibility benchmark for four papers on how deep networks learn noisy labels."""

__version__ = "0.1.0"
