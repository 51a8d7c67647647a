"""Thumbnails as the page shows them: a PNG of the frame, artifacts outlined."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from daemon.results.thumbnails import Thumbnail

OUTLINE_RGB = (255, 45, 110)  # a magenta-red that stays visible on any grey


def thumbnail_png(thumbnail: Thumbnail, *, outlines: bool = True) -> bytes:
    """The thumbnail as an 8-bit PNG; artifacts get a one-pixel ring just outside them, so the
    artifact itself stays visible."""
    grey = np.asarray(thumbnail.image, dtype=np.uint8)
    labels = np.asarray(thumbnail.labels)
    if outlines and labels.any():
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[find_boundaries(labels, mode="outer") & (labels == 0)] = OUTLINE_RGB
        picture = Image.fromarray(rgb)
    else:
        picture = Image.fromarray(grey)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=3)  # fast; thumbnails are small anyway
    return buffer.getvalue()
