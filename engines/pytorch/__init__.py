"""The models as torch modules: architectures, weights loading and the torch backend.

May import engines.runtime; imported by training, evaluation and engines.select (lazily).
"""
