"""Batching: one shape a batch, full batches at once, a lone frame after max_wait."""

from __future__ import annotations

import numpy as np

from daemon.frames import Frame, FrameMeta
from daemon.pipeline.batcher import Batcher


def frame(name: str, shape: tuple[int, int]) -> Frame:
    return Frame(meta=FrameMeta(source=name), pixels=np.zeros(shape, np.uint16), ready_at=0.0)


def test_full_batches_go_at_once_and_shapes_never_mix() -> None:
    batcher = Batcher(max_batch=2, max_wait_s=1.0)
    batcher.add(frame("a", (8, 8)), now=0.0)
    batcher.add(frame("b", (4, 4)), now=0.0)
    assert batcher.ready(0.1) == []
    batcher.add(frame("c", (8, 8)), now=0.2)
    [batch] = batcher.ready(0.2)
    assert [f.meta.source for f in batch] == ["a", "c"]
    assert batcher  # "b" still waits


def test_a_lone_frame_waits_max_wait_and_no_longer() -> None:
    batcher = Batcher(max_batch=4, max_wait_s=0.5)
    assert batcher.timeout(0.0, idle=0.2) == 0.2
    batcher.add(frame("a", (8, 8)), now=1.0)
    assert abs(batcher.timeout(1.2, idle=0.2) - 0.3) < 1e-9
    assert batcher.ready(1.4) == []
    assert [f.meta.source for f in batcher.ready(1.5)[0]] == ["a"]
    assert not batcher


def test_everything_goes_on_drain() -> None:
    batcher = Batcher(max_batch=4, max_wait_s=10.0)
    batcher.add(frame("a", (8, 8)), now=0.0)
    batcher.add(frame("b", (4, 4)), now=0.0)
    assert len(batcher.ready(0.0, everything=True)) == 2
    assert not batcher
