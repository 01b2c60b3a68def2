"""Measures, one module per kind, each callable on any network's outputs or weights.

They know nothing of the engine, the store or the claims: `activations` (the ddmlp paper's class
means, cosine similarity and outlier ratio), and one module per other paper's measure.
"""
