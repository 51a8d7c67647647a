"""The artifactd service: sources, pipeline, results store, journal, metrics, CLI."""

from engines import __version__

__all__ = ["__version__"]
