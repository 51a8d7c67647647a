"""The caustic renderer: brightfield frames from geometric optics (ray displacement and caustics).

A fifth, independently written renderer, used only to measure how fast a model adapts to images
it has never seen. Its idea of how a brightfield image forms:

- The specimen is an optical path map ``phi(x, y)`` (um of path difference) plus an absorbance
  map. Each light ray crossing it is bent by the gradient of ``phi``; seen at a defocus distance
  ``z`` it lands displaced by ``d = z * grad(phi)``. Rays that bunch up make light, rays that
  spread out make shadow: the intensity is the inverse Jacobian of the ray mapping,
  ``I = 1 / |det(Id + z * Hessian(phi))|``, times the absorption ``exp(-a)``. Where the mapping
  folds (``det -> 0``) the intensity is a caustic; it saturates smoothly instead of diverging.
  Rays bent further than the objective's acceptance angle are lost, so steep things (a bubble's
  meniscus, the flank of a heap of cells) go dark whatever the focus. The image is then
  resampled at the displaced positions (first-order inverse of the ray map, shift capped at a few
  pixels) and blurred a little by the condenser's finite aperture.
- How it differs from a linear Laplacian (transport-of-intensity, "halo") model: that model is
  ``1 + k * laplacian(phi)``, symmetric in bright and dark and linear in the phase. Here the
  response is ``1 / det``, so it is strongly asymmetric (focusing makes narrow, very bright cores,
  defocusing makes broad, moderate shadows), it depends on both Hessian eigenvalues (a ridge and a
  dome of the same Laplacian look different), it saturates at folds, and it has an aperture
  cut-off on the slope itself, which a Laplacian model has no notion of.
- Each phase layer has its own defocus: cells, clumps, crystals and scratches lie in the cell
  plane (``z`` drawn per frame, either sign: over- or under-focus); a bubble floats higher and
  has its own ``z``, chosen so that it acts as a lens with a bright centre. Out-of-focus dirt is
  not imaged at all: it is a soft shadow multiplied onto the result.
- Cells are level sets of smooth anisotropic Gaussian random fields: per frame a coverage
  (sparse to confluent), a cell size (20-150 um), an elongation and direction (streams), thin
  lamellae at the outline rising to a plateau, nuclei from a second level set inside the bodies,
  cell-cell junctions in confluent sheets, granules (small positive phase bumps) and vacuoles
  (negative ones), and in some frames a granular stain (absorbance 0.2-0.8 over the bodies).
- Illumination is uneven (tilt, vignetting, low-frequency ripple, sometimes a well edge); the
  camera is a scientific CMOS: Poisson shot noise, read noise, pixel gain and offset
  non-uniformity, column offsets, 16- or 12-bit output in uint16, or uint8 with a gamma.

The mask rule: each artifact's footprint is the region where the artifact itself is (the opaque
or refracting body; for out-of-focus dirt, where its shadow is at least half as deep as at its
centre). Artifacts are drawn one after another and labelled 1..n in drawing order; a later one
overwrites an earlier one where they overlap. An artifact whose footprint inside the frame is
under MIN_FOOTPRINT_PX pixels is not drawn; after all are drawn, a label left with fewer than
MIN_FOOTPRINT_PX pixels (mostly covered by later ones) is dropped from the mask and the rest are
relabelled consecutively. Objects are measured from the final mask.

Speed: about 0.29 s per 1080 x 1080 frame on one core (mean of 20 frames pinned to one core with
taskset, artifact probability 0.5 or 1; slowest frame 0.38 s; measured while a training job
shared the machine's other core).

Where it lives: ``fields`` (Gaussian random fields and shot-noise fields), ``optics`` (the ray
map, its intensity, illumination and the camera), ``cells`` (level-set cells and their
texture), ``artifacts`` (one function per kind) and ``frame`` (drawing artifacts into the
scene, the mask and ``make_frame``).
"""

from engines.data.render_caustic.frame import MIN_FOOTPRINT_PX, make_frame

__all__ = ["MIN_FOOTPRINT_PX", "make_frame"]
