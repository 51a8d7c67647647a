"""The halo renderer, the default: round cells with halos, brightfield as transport of intensity.

A frame is rendered in three layers, each built from small patches (never a full-frame
operation per object):

- optical path ``phase``: cells (near-transparent, irregular, with a nucleus and texture) and the
  refractive part of some artifacts. Brightfield shows a slightly defocused phase object as
  ``1 + k * laplacian(phase)`` (transport of intensity), which gives the bright rim just outside
  and the dark rim just inside every cell edge.
- ``absorbance``: what dims or brightens the light (artifacts, a little of every cell).
- illumination, gain, offset and camera noise, drawn per frame.

The mask is each artifact's visible footprint, labelled 1..n in drawing order (later wins).
Sizes are drawn in micrometres and converted with the frame's pixel size.

Where it lives: ``patches`` (one object in its bounding box, the canvas they are drawn on, the
shape helpers), ``artifacts`` (one function per kind), ``cells``, ``optics`` (defocus,
illumination, camera) and ``frame`` (``make_frame`` and the object table).
"""

from engines.data.render_halo.frame import make_frame

__all__ = ["make_frame"]
