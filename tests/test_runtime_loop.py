"""The runtime's prompt decisions and its prompt loop, on arrays and a stand-in model.

The loops themselves run end to end in test_segment*.py (CLI) and in the plugin's tests,
whose parity test runs them over both readers; here each decision is checked on its own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from geosam.runtime import Embedding, Prediction, Window, WindowParams
from geosam.runtime.errors import GeosamError
from geosam.runtime.prompts import (
    Prompt,
    context_margin,
    inside,
    prompted_part_indexes,
    spatial_order,
    window_points,
)
from geosam.runtime.reasons import BELOW_SCORE, OUTSIDE, describe_counts
from geosam.runtime.segmenter import PromptMask, PromptSegmenter, segment_prompts
from geosam.runtime.stretch import SAMPLE_PIXELS, percentile_stretch, sample_shape


def click(x: float, y: float, index: int = 0) -> Prompt:
    return Prompt(np.array([[x, y]]), np.ones(1), index=index)


def test_inside_takes_positive_clicks_and_overlapping_boxes() -> None:
    assert inside(click(10, 10), (100, 50)) and not inside(click(10, 60), (100, 50))
    assert inside(Prompt(box=(90, 40, 120, 70)), (100, 50))  # overlaps
    assert not inside(Prompt(box=(100, 0, 120, 10)), (100, 50))  # touches only
    negative_off = click(10, 10).with_negatives(np.array([[500.0, 500.0]]))
    assert inside(negative_off, (100, 50))  # a negative click decides no window
    assert context_margin((0, 0, 40, 20), WindowParams(margin=0.25, min_margin_px=16)) == 26


def test_spatial_order_rows_are_one_window_high_in_raster_pixels() -> None:
    """At 0.5 m pixels a 256 px model at 1 m sees 512 raster pixels: y 100 and y 400 are one
    row, visited west to east; at the raster's own resolution they are two rows."""
    prompts = [click(300, 100, 0), click(200, 400, 1), click(100, 700, 2)]
    by_window = spatial_order(prompts, 256, 1.0, 0.5)
    assert [p.index for p in by_window] == [1, 0, 2]
    assert [p.index for p in spatial_order(prompts, 256, None, 0.5)] == [0, 1, 2]


def test_a_window_keeps_the_negative_clicks_it_holds() -> None:
    prompt = click(50, 50).with_negatives(np.array([[60.0, 60.0], [400.0, 60.0]]))
    points, labels = window_points(prompt, Window(0, 0, 256, 256, 256, 256))
    assert points.tolist() == [[50, 50], [60, 60]] and labels.tolist() == [1, 0]
    assert prompt.bounds == (50, 50, 50, 50) and prompt.clicks.tolist() == [[50, 50]]


def test_prompted_parts_clicks_first_then_the_box() -> None:
    contains = np.array([[False, True], [False, False], [True, False]])
    assert prompted_part_indexes(contains, np.array([1.0, 9.0, 2.0])).tolist() == [0, 2]
    no_clicks = np.zeros((3, 0), bool)
    assert prompted_part_indexes(no_clicks, np.array([1.0, 9.0, 2.0])).tolist() == [1]


def test_stretch_sample_and_percentiles() -> None:
    height, width = sample_shape(4000, 1000)
    assert height * width <= SAMPLE_PIXELS and width / height == pytest.approx(4, rel=0.01)
    assert sample_shape(300, 200) == (200, 300)
    stretch = percentile_stretch(
        [np.arange(101.0), np.array([np.nan, 7.0]), np.array([], np.uint16)]
    )
    assert stretch.low == (2.0, 7.0, 0.0) and stretch.high == (98.0, 8.0, 255.0)


class ArrayReader:
    """A RasterReader over a blank raster of ``size`` (width, height), 1 m pixels."""

    description = "raster blank"
    cache_id = "blank"
    geotransform = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def pixel_size_m(self, col: float, row: float) -> tuple[float, float]:
        return 1.0, 1.0

    def read(self, window: Window) -> np.ndarray:
        return np.zeros((window.out_height, window.out_width, 3), np.uint8)

    def valid(self, window: Window) -> np.ndarray | None:
        valid = np.ones((window.out_height, window.out_width), bool)
        valid[:, :10] = False
        return valid


class BoxShyModel:
    """A stand-in SamModel: every prompt's mask is the whole window less its outermost pixels
    (a parcel the window holds whole), scored 0.9 for clicks and 0.3 for boxes."""

    input_size = 256
    ground_resolution_m = None
    model_dir = Path("stand-in")

    def encode(self, image: np.ndarray) -> Embedding:
        return Embedding(np.zeros((1, 1, 1, 1), np.float32), image.shape[:2], image.shape[:2])

    def decode(self, embedding: Embedding, points=None, labels=None, box=None) -> Prediction:
        mask = np.zeros(embedding.original_size, bool)
        mask[1:-1, 1:-1] = True
        return Prediction(mask, 0.3 if box is not None else 0.9, np.zeros(1), 0)


def test_prompt_loop_counts_skips_and_reuses_windows() -> None:
    segmenter = PromptSegmenter(BoxShyModel(), ArrayReader((2000, 2000)))
    prompts = [
        click(100, 100, 0),
        click(120, 110, 1),  # in the first prompt's window: no second encoding
        click(2500, 100, 2),
        Prompt(box=(0.0, 0.0, 1900.0, 1900.0), index=3),
        Prompt(box=(500.0, 500.0, 600.0, 600.0), index=4),
    ]
    skipped: Counter[str] = Counter()
    done = []
    items = list(
        segment_prompts(
            segmenter, prompts, min_score=0.5, skipped=skipped, progress=lambda d, t: done.append(d)
        )
    )
    assert skipped == {OUTSIDE: 1, BELOW_SCORE: 2}  # no box is too large: the huge one is scored
    assert describe_counts(skipped).startswith("1 ")
    masks = [item for item in items if isinstance(item, PromptMask)]
    assert sorted(m.prompt.index for m in masks) == [0, 1] and segmenter.encoded == 3
    assert not masks[0].mask[:, :10].any() and masks[0].mask[1:-1, 10:-1].all()  # nodata removed
    assert masks[0].geotransform == masks[0].window.transform(ArrayReader.geotransform)
    assert done == [1, 2, 3, 4, 5]
    with pytest.raises(GeosamError, match="all 1 prompts lie outside raster blank"):
        next(segment_prompts(segmenter, [click(-5, 10)]))
    with pytest.raises(GeosamError, match="click inside the parcel"):
        segmenter.locate(Prompt(np.array([[5.0, 5.0]]), np.zeros(1)))
