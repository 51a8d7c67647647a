"""The artifactd service, in the order a frame travels: sources/ -> decode/ -> pipeline/ ->
results/ -> sinks/ (and web/), run by service.py; ops/ and tools/ beside them. Below them all,
config.py, frames.py, plates.py, threads.py, endpoints.py are the shared vocabulary. Which
package may import which is checked by the [tool.importlinter] contracts in pyproject.toml."""

from engines import __version__

__all__ = ["__version__"]
