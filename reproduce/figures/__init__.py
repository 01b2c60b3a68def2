"""Figures that redraw the papers' figures from our results: one module per paper.

Each figure takes the combined Dataset of a paper and tier (dims run, epoch, replica, ...) and
returns a matplotlib Figure (no pyplot, so nothing depends on a display).
"""
