"""Models and their runtimes: synthetic data, training, evaluation, export, inference backends.

`engines` never imports `daemon`.
"""

__version__ = "0.1.0"
