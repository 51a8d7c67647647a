"""The particle renderer: brightfield frames as the shadows of clouds of particles.

A sixth, independently written renderer, used only to judge models: nothing trains on it and no
threshold is chosen on it. Its idea of how a brightfield image forms:

- Everything in the well (cells, dust, fibres, crystals) is a cloud of small particles, each
  with an absorbance (stain, opaque matter) and a scattering strength (refractile matter), and
  each cloud lies at a depth. Particles are splatted onto the pixel grid and summed per depth
  layer: the cell plane, a plane 3 to 15 um above it (floating bubbles and clumps) and
  the optics (dirt on a lens or the condenser, far out of focus).
- Each layer is imaged as a shadowgraph: absorbed light and light scattered out of the
  objective's aperture are lost, spread over a disc whose radius grows with the layer's defocus
  (the geometric shadow of an out-of-focus particle is a disc, not a Gaussian). Light scattered
  at small angles is kept but lands displaced, on an annulus of radius ``z * tan(angle)``: a
  refractile particle out of focus is a dark core inside a bright ring. Layers multiply.
- How it differs from the other five: no phase map, no Laplacian, no wave field, no height
  field and no ray map. Contrast comes from particle counts (granular, stippled cells whose
  texture is the particles themselves), from disc-shaped shadows and annular halos.
- Cells are star-shaped outlines (random Fourier contours: round, spread, spindle, polygonal
  sheets) filled with particles whose density rises towards the nucleus; nuclei with nucleoli,
  granules, vacuoles (regions with no particles), dark stained cells (absorbing particles),
  rounded dead and mitotic cells. One field shows one look, drawn from the plate seed.
- Illumination: an off-centre Koehler falloff, a tilt, sometimes the meniscus at a well edge;
  the camera: Poisson shot noise, read noise, row banding, hot pixels, 12 to 16 bits in uint16,
  or uint8 with a gamma.

The mask rule: an artifact's footprint is where its own particles are (its splatted density
above a fifth of a single particle's peak, holes filled); for dirt on the optics, where its
shadow is at least half as deep as at its centre. Artifacts are drawn in order and labelled
1..n; a later one overwrites an earlier one; labels left under MIN_FOOTPRINT_PX pixels are
dropped and the rest relabelled consecutively.

Where it lives: ``clouds`` (particle clouds and their splatting), ``cells`` (the plate's look
and the cells of a field), ``artifacts`` (one function per kind), ``optics`` (layers to light,
illumination, camera) and ``frame`` (``make_frame``).
"""

from engines.data.render_particle.frame import MIN_FOOTPRINT_PX, make_frame

__all__ = ["MIN_FOOTPRINT_PX", "make_frame"]
