"""Frames with ground truth: five synthetic renderers, one package each (``render_halo`` is the
default; the others are the cross-domain yardstick), what they share and the dataset writer
(``synth``), and loading a labelled dataset from disk (``dataset``).

May import engines.runtime (and below); never training, evaluation or a backend.
"""
