"""A third synthetic renderer: procedural brightfield frames of adherent cells, in intensity space.

The image is composed directly as multiplicative intensity layers, with no phase, no Laplacian
and no wave optics::

    counts = camera( blur( illumination * cells * artifacts ) )

- illumination: a smooth field per frame (tilt, vignetting, uneven lamp, sometimes the dark or
  bright shading of a well edge / meniscus);
- cells: a transmission factor near 1 built from procedural textures written here from numpy:
  smooth value noise (separable smoothstep interpolation done as two small matrix products),
  Worley/Voronoi fields on a jittered grid (confluent monolayers, epithelial islands), polygon
  stamps (spread fibroblasts with tapering processes, sparse cells), disc stamps (mitotic and
  dead cells), thresholded noise (granules, vacuoles) and a colorimetric stain in some frames;
- artifacts: one transmission factor per artifact, drawn in micrometres with its own shape code;
- blur: a Gaussian, a disc or an Airy-like point spread function;
- camera: Poisson-Gaussian noise with a per-frame photon count (SNR from ~6 to ~140), and
  sometimes row banding, a mild vertical smear or JPEG-like 8x8 block quantisation.

How it differs from the halo renderer (engines/data/render_halo): that one renders cells as
phase objects seen through ``1 + k * laplacian(phase)``; here there is no optical path at all,
cells are painted as intensity textures (membranes, nuclei, granules, stain), and the camera
model, the shapes and the sizes are all drawn by separately written code. A model chosen on
one can be checked on the other.

Mask rule: an artifact's footprint is where its own factor differs from 1 by more than
``FOOTPRINT_FRACTION`` of its peak difference (holes filled for solid kinds). Footprints are
labelled 1..n in drawing order, later wins; an artifact whose footprint inside the frame is
under ``MIN_FOOTPRINT_PX`` is not drawn at all.

Speed: 0.26 s per 1080 x 1080 frame on one core (mean of 40 frames, BLAS/OpenMP pinned to one
thread, on a 2-core machine shared with a training job); the slowest of the 40 took 0.37 s.

Where it lives: ``textures`` (the procedural noise and shapes everything is drawn with),
``optics`` (illumination, point spread, camera), ``look`` (what one frame's cells look like),
``tiling`` (confluent and epithelial sheets), ``cells`` (the clean scene), ``artifacts`` (one
function per kind) and ``frame`` (compositing, the mask and ``make_frame``).
"""

from engines.data.render_monolayer.frame import MIN_FOOTPRINT_PX, make_frame

__all__ = ["MIN_FOOTPRINT_PX", "make_frame"]
