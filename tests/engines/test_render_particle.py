"""The particle renderer: determinism, shapes, ground truth consistency, visibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from engines.data.render_particle import make_frame
from engines.data.synth import ARTIFACT_KINDS, SynthOptions
from tests.engines.test_render_caustic import (
    assert_cells_above_the_noise,
    assert_truth_matches_mask,
)


def frame(seed: int, size: int = 256, **changes):
    return make_frame(np.random.default_rng(seed), SynthOptions(height=size, width=size,
                                                                **changes))


def test_the_same_generator_state_draws_the_same_frame():
    a, b = frame(4, artifact_probability=1.0), frame(4, artifact_probability=1.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.pixel_size_um == b.pixel_size_um
    assert not np.array_equal(a.image, frame(5).image)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_pixel_type_and_shape_are_honoured_without_clipping(dtype):
    for seed in range(4):
        f = make_frame(np.random.default_rng(seed), SynthOptions(height=192, width=288,
                                                                 dtype=dtype))
        assert f.image.shape == f.mask.shape == (192, 288)
        assert f.image.dtype == np.dtype(dtype) and f.mask.dtype == np.uint16
        top = np.iinfo(f.image.dtype).max
        assert np.mean((f.image == 0) | (f.image == top)) < 0.01
        assert len(np.unique(f.image)) > 30


def test_pixel_sizes_are_drawn_in_range_unless_given():
    drawn = {frame(seed).pixel_size_um for seed in range(10)}
    assert all(0.3 <= um <= 1.3 for um in drawn) and len(drawn) == 10
    assert frame(2, pixel_size_um=0.7).pixel_size_um == 0.7


def test_clean_frames_have_no_objects_and_artifact_frames_match_their_mask():
    for seed in range(5):
        clean = frame(seed, artifact_probability=0.0)
        assert clean.label == "clean" and clean.objects == () and not clean.mask.any()
        dirty = frame(seed, artifact_probability=1.0)
        assert dirty.label == "artifact" and dirty.objects
        assert_truth_matches_mask(dirty)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_every_kind_is_drawn_on_its_own(kind):
    objects = []
    for seed in range(3):
        f = frame(seed, 384, artifact_probability=1.0, kinds=(kind,))
        assert_truth_matches_mask(f)
        objects += [o.kind for o in f.objects]
    assert objects and set(objects) == {kind}


def test_stacks_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        frame(0, channels=2)


def test_dust_is_darker_than_its_surroundings():
    for seed in range(4):
        f = frame(seed, 384, artifact_probability=1.0, kinds=("dust",))
        image = f.image.astype(np.float32)
        for obj in f.objects:
            inside = f.mask == obj.label
            ring = ndi.binary_dilation(inside, iterations=8) & ~ndi.binary_dilation(
                inside, iterations=3) & (f.mask == 0)
            assert image[inside].mean() < 0.9 * image[ring].mean(), f"seed {seed}: invisible"


def test_a_clean_field_shows_cells_above_the_noise():
    for seed in range(4):
        assert_cells_above_the_noise(frame(seed, artifact_probability=0.0).image, seed)


def test_a_full_size_frame_holds_its_truth():
    f = make_frame(np.random.default_rng(11), SynthOptions(artifact_probability=1.0))
    assert f.image.shape == (1080, 1080) and f.image.dtype == np.uint16
    assert_truth_matches_mask(f)
