"""Frames with ground truth: the synthetic generator, the independent renderers used as the
cross-domain yardstick, and loading a labelled dataset from disk.

May import engines.runtime (and below); never training, evaluation or a backend.
"""
