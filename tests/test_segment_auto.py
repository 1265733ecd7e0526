"""geosam segment --auto: tiling, filters, duplicate removal, and the command end to end.

The algorithm is tested without a model on parcels drawn into a label image: a "perfect
decoder" answers a point with the logits of the parcel under it, clipped to the window, so
each step (edge filter, duplicates across windows, bounded memory) has an exact expected
result. The end-to-end run uses the untuned tiny model, whose masks are noise: on a raster
that is nodata except for square islands, every mask is confined to an island, so what can be
checked is placement, validity, attributes, counts and that no two polygons overlap more
than the duplicate criteria allow.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from conftest import flat_parcels_raster, grid_parcels, textured, write_raster
from test_segment import export_tiny

from geosam.cli import cli
from geosam.runtime.auto import (
    FINE_ZOOM,
    AutoParams,
    MaskMerger,
    TileWindow,
    Tiling,
    auto_tiling,
    mask_candidates,
    point_grid,
    pooled,
    stability_score,
    suppress,
    window_masks,
    zoomed,
)
from geosam.runtime.masks import AutoMask, claim, fill_holes
from geosam.runtime.reasons import BELOW_SCORE
from geosam.segment import SegmentParams, segment_auto

RASTER_CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)
SIZE = 256  # the tiny model's input size


# -- tiling ---------------------------------------------------------------------------------


def test_tiling_covers_the_raster_on_one_grid() -> None:
    tiling = auto_tiling((600, 600), (1.0, 1.0), None, SIZE, overlap=0.25)
    assert (tiling.block, tiling.block_px, tiling.scale) == (16, (16, 16), (1.0, 1.0))
    assert tiling.xs == tiling.ys == (0, 192, 352) and len(tiling) == 9
    tiles = list(tiling.windows())
    assert [(t.row, t.col) for t in tiles] == list(itertools.product(range(3), range(3)))
    for tile in tiles:
        w = tile.window
        assert w.col_off >= 0 and w.col_off + w.width <= 600 and w.row_off + w.height <= 600
        assert (w.col_off, w.row_off) == tile.origin  # scale 1: grid = raster pixels
    last = tiles[-1]
    assert last.window.col_off + last.window.width == 600 and last.shape == (248, 248)
    assert last.inner == (True, True, False, False) and tiles[0].inner == (False, False, True, True)
    # neighbours share at least the overlap, so a 60 px parcel is whole in some window
    assert min(np.diff(tiling.xs)) <= SIZE - 0.25 * SIZE


@pytest.mark.parametrize(
    ("pixel_m", "resolution", "block_px", "out"),
    [
        ((0.5, 0.5), 1.0, (32, 32), (256, 256)),  # downsampled 2x
        ((4.0, 4.0), 1.0, (8, 8), (256, 256)),  # upsampling capped at 2x
        ((1.0, 1.0), 1.3, (21, 21), (256, 256)),  # scale rounded to whole pixels per block
        ((1.0, 2.0), 2.0, (32, 16), (256, 256)),  # non-square pixels become square
    ],
)
def test_tiling_resamples_to_the_model_resolution(pixel_m, resolution, block_px, out) -> None:
    tiling = auto_tiling((3000, 3000), pixel_m, resolution, SIZE)
    assert tiling.block_px == block_px
    tile = next(tiling.windows())
    assert tile.shape == out
    assert (tile.window.width, tile.window.height) == (16 * block_px[0], 16 * block_px[1])
    for tile in tiling.windows():
        assert tile.window.col_off == tile.origin[0] * tiling.scale[0]
        assert tile.window.row_off == tile.origin[1] * tiling.scale[1]


def test_small_raster_is_one_window() -> None:
    tiling = auto_tiling((100, 80), (1.0, 1.0), None, SIZE)
    (tile,) = tiling.windows()
    assert tile.shape == (80, 100) and tile.inner == (False, False, False, False)


def test_grid_transform_matches_the_window() -> None:
    gt = (ORIGIN[0], 0.5, 0.0, ORIGIN[1], 0.0, -0.5)
    tiling = auto_tiling((3000, 3000), (0.5, 0.5), 1.0, SIZE)
    for tile in tiling.windows():
        if tile.shape == (SIZE, SIZE):
            np.testing.assert_allclose(
                tiling.transform(gt, *tile.origin), tile.window.transform(gt)
            )


# -- filters -----------------------------------------------------------------------------------


def test_point_grid_centres_cells() -> None:
    points = point_grid(2, (100, 200))
    np.testing.assert_allclose(points, [[49.5, 24.5], [149.5, 24.5], [49.5, 74.5], [149.5, 74.5]])


def test_stability_score() -> None:
    sharp = np.where(np.arange(100) < 40, 10.0, -10.0)[None, None, :].repeat(5, axis=1)
    ramp = np.linspace(2.0, -2.0, 100)[None, None, :].repeat(5, axis=1)
    empty = np.full((1, 5, 100), -5.0)
    scores = stability_score(np.concatenate([sharp, ramp, empty]), 0.0, 1.0)
    np.testing.assert_allclose(scores, [1.0, 25 / 75, 0.0], atol=0.02)


def window(shape: tuple[int, int], inner: tuple[bool, ...], origin=(0, 0)) -> TileWindow:
    from geosam.runtime import Window

    return TileWindow(0, 0, Window(0, 0, shape[1], shape[0], *shape), origin, inner)


def box_logits(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    logits = np.full(shape, -10.0)
    logits[box[1] : box[3], box[0] : box[2]] = 10.0
    return logits


def test_mask_candidates_filters() -> None:
    tile = window((100, 100), (True, False, True, False), origin=(300, 200))
    logits = np.stack(
        [
            box_logits((100, 100), (20, 20, 50, 60)),  # kept
            box_logits((100, 100), (20, 20, 50, 60)),  # low predicted IoU
            box_logits((100, 100), (0, 30, 40, 60)),  # on the inner left edge: a piece, cut
            box_logits((100, 100), (30, 0, 60, 30)),  # on the top edge: the raster's
            box_logits((100, 100), (70, 70, 72, 72)),  # too small
            np.linspace(1.5, -1.5, 100)[None, :].repeat(100, axis=0),  # unstable
        ]
    )
    scores = np.array([0.95, 0.5, 0.95, 0.92, 0.95, 0.95])
    dropped: Counter[str] = Counter()
    params = AutoParams(min_area_px=10)
    kept = mask_candidates(logits, scores, tile, params, dropped=dropped)
    assert [m.box for m in kept] == [
        (320, 220, 350, 260),
        (300, 230, 340, 260),
        (330, 200, 360, 230),
    ]
    assert [m.cut for m in kept] == [False, True, False]
    assert all(m.seen == ((300, 200, 400, 300),) for m in kept)
    assert kept[0].mask.shape == (40, 30) and kept[0].mask.all() and kept[0].stability == 1.0
    assert dropped == {"predicted IoU": 1, "area": 1, "stability": 1}
    # nodata pixels are not parcel: the mask shrinks to the valid part
    valid = np.ones((100, 100), bool)
    valid[:, 40:] = False
    clipped = mask_candidates(logits[:1], scores[:1], tile, params, valid=valid)
    assert clipped[0].box == (320, 220, 340, 260)


class LabelDecoder:
    """A model whose decoder answers a point with the region of the label under it, rated
    ``scores[label]``, and records the points it was asked (window pixels)."""

    threshold = 0.0

    def __init__(self, labels: np.ndarray, scores: dict[int, float]) -> None:
        self.labels, self.scores, self.asked = labels, scores, []

    def decode_points(self, embedding: object, points):
        for point in points:
            x, y = np.round(point).astype(int)
            self.asked.append((int(x), int(y)))
            label = self.labels[y, x]
            region = np.where(self.labels == label, 10.0, -10.0)[None]
            yield region, np.array([self.scores[int(label)]])


def halves() -> np.ndarray:
    """A 64 px window: parcel 1 the left half, 2 the top right quarter, 0 the rest."""
    labels = np.zeros((64, 64), np.int32)
    labels[:, :32] = 1
    labels[:32, 32:] = 2
    return labels


Y4 = (8, 24, 40, 56)  # the 4 x 4 grid's rows (and columns) on 64 px, rounded to pixels


@pytest.mark.parametrize("skip_found", [True, False])
def test_points_inside_accepted_masks_are_not_decoded(skip_found: bool) -> None:
    """4 x 4 points: the first point on parcel 1 finds it, and its 7 other points are not
    decoded; parcel 2 is rejected (low predicted IoU), so its points are all decoded, as are
    the background's. Without skip_found every point is decoded, as SAM does."""
    decoder = LabelDecoder(halves(), {0: 0.0, 1: 0.95, 2: 0.3})
    tile = window((64, 64), (False,) * 4, origin=(100, 200))
    params = AutoParams(points_per_side=4, skip_found=skip_found)
    dropped: Counter[str] = Counter()
    masks, decoded = window_masks(decoder, None, tile, params, dropped=dropped)
    assert decoded == len(decoder.asked) == (9 if skip_found else 16)
    on_parcel = [(x, y) for x, y in decoder.asked if x < 32]
    assert on_parcel == ([(8, 8)] if skip_found else [(x, y) for y in Y4 for x in (8, 24)])
    assert [(x, y) for x, y in decoder.asked if x >= 32] == [(x, y) for y in Y4 for x in (40, 56)]
    assert {m.box for m in masks} == {(100, 200, 132, 264)}
    assert len(masks) == (1 if skip_found else 8)
    assert dropped["predicted IoU"] == 8


def test_points_inside_parcels_found_by_earlier_windows_are_not_decoded() -> None:
    """``found`` (parcels that earlier windows saw whole) skips points as this window's own
    masks do: with parcel 2's pixels found, only the background's points are decoded."""
    labels = halves()
    decoder = LabelDecoder(labels, {0: 0.0, 1: 0.95, 2: 0.3})
    tile = window((64, 64), (False,) * 4)
    masks, decoded = window_masks(
        decoder, None, tile, AutoParams(points_per_side=4), found=labels == 2
    )
    assert decoded == 1 + 4 and len(masks) == 1
    assert [(x, y) for x, y in decoder.asked if x >= 32] == [(40, 40), (56, 40), (40, 56), (56, 56)]


def test_merger_found_holds_whole_pending_parcels() -> None:
    """What a window need not decode again: pending parcels that a window saw whole and
    that pass min_score, on the window's pixels; not a cut piece (the window that reaches
    beyond it must continue it), nor a parcel rated below min_score."""
    tiling = auto_tiling((600, 100), (1.0, 1.0), None, SIZE)
    first, second = itertools.islice(tiling.windows(), 2)  # x 0 and 192
    merger = MaskMerger(tiling, AutoParams(), min_score=0.5)
    whole = auto_mask((200, 10, 240, 50), 0.9)
    cut = replace(auto_mask((220, 60, 256, 90), 0.9), cut=True)
    low = auto_mask((100, 10, 150, 50), 0.2)
    merger.pending = [whole, cut, low]
    found = merger.found(second)
    assert found.shape == second.shape
    expected = np.zeros(second.shape, bool)
    expected[10:50, 8:48] = True
    assert np.array_equal(found, expected)
    expected = np.zeros(first.shape, bool)
    expected[10:50, 200:240] = True
    assert np.array_equal(merger.found(first), expected)


# -- duplicates --------------------------------------------------------------------------------


def auto_mask(box: tuple[int, int, int, int], score: float, mask: np.ndarray | None = None):
    shape = (box[3] - box[1], box[2] - box[0])
    return AutoMask(box, np.ones(shape, bool) if mask is None else mask, score, 0.99)


def test_suppress() -> None:
    field = auto_mask((0, 0, 40, 40), 0.9)
    shifted = auto_mask((1, 0, 41, 40), 0.95)  # IoU 0.95: the same parcel, better scored
    part = auto_mask((0, 0, 40, 20), 0.97)  # half of it, inside: one parcel
    neighbour = auto_mask((40, 0, 80, 40), 0.9)  # adjacent, no pixel shared
    ring = np.ones((60, 60), bool)
    ring[10:50, 10:50] = False  # a field around a farmstead: boxes overlap, masks do not
    around = auto_mask((-10, -10, 50, 50), 0.9, ring)
    assert suppress([field, shifted, neighbour, around], AutoParams()) == [
        False,
        True,
        True,
        True,
    ]
    assert suppress([field, part], AutoParams()) == [False, True]
    assert suppress([field, part], AutoParams(containment=1.0)) == [True, True]
    # masks that both survived an earlier round are not compared again
    assert suppress([field, field], AutoParams(), new=[False, False]) == [True, True]
    assert suppress([], AutoParams()) == []


def label_image(boxes: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for index, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = index
    return labels


def perfect_decoder(
    labels: np.ndarray, tile: TileWindow, params: AutoParams, dropped: Counter[str]
) -> list[AutoMask]:
    """window_masks with a decoder that returns the parcel under each point, clipped to the
    window, scored higher in windows further east (so the better duplicate is known)."""
    height, width = tile.shape
    x, y = tile.origin
    view = labels[y : y + height, x : x + width]
    points = np.round(point_grid(params.points_per_side, tile.shape)).astype(int)
    masks = []
    for label in set(view[points[:, 1], points[:, 0]].tolist()) - {0}:  # once per parcel
        logits = np.where(view == label, 10.0, -10.0)[None]
        score = np.array([0.9 + 0.01 * tile.col])
        masks += mask_candidates(logits, score, tile, params, dropped=dropped)
    return masks


def run_merger(tiling: Tiling, labels: np.ndarray, params: AutoParams):
    merger = MaskMerger(tiling, params)
    final, dropped, peak = [], Counter(), 0
    for tile in tiling.windows():
        final += merger.add(tile, perfect_decoder(labels, tile, params, dropped))
        peak = max(peak, len(merger.pending))
    return final + merger.flush(), dropped, merger.dropped["duplicate"], peak


def test_one_mask_per_parcel_across_windows() -> None:
    """Three windows per row (x 0, 192, 352): a parcel in the overlap of two is found by both
    and kept once, from the better-scored window; a parcel across window 0's east edge
    (x 256) is cut there, and its piece joined with the whole parcel window 1 sees, scored
    by the pieces' areas."""
    tiling = auto_tiling((600, 100), (1.0, 1.0), None, SIZE)
    in_overlap = (200, 30, 240, 70)
    across_edge = (245, 20, 285, 80)
    inside_first = (40, 20, 100, 80)
    boxes = [inside_first, in_overlap, across_edge]
    params = AutoParams(points_per_side=32)
    final, _, duplicates, _ = run_merger(tiling, label_image(boxes, (100, 600)), params)
    assert sorted(m.box for m in final) == sorted(boxes)
    assert all(m.mask.all() for m in final)
    by_box = {m.box: m for m in final}
    assert by_box[in_overlap].score == pytest.approx(0.91)  # window 1's, not window 0's
    assert by_box[across_edge].score == pytest.approx((0.90 * 11 + 0.91 * 40) / 51)
    assert duplicates > 0


def test_open_pieces_are_dropped() -> None:
    """A parcel across window 0's east edge (x 256) that window 1 (x 192-448), which sees it
    whole, does not find: window 0's piece of it is dropped, unless kept by the option; a
    merger given window 0's ground only (one block of windows) keeps it for the next."""
    tiling = auto_tiling((600, 100), (1.0, 1.0), None, SIZE)
    params = AutoParams(points_per_side=32)
    labels = label_image([(40, 20, 100, 80), (245, 20, 285, 80)], (100, 600))
    missed = np.where(labels == 2, 0, labels)

    def run(windows: list, keep: bool = False, area=None):
        merger = MaskMerger(tiling, replace(params, keep_open_pieces=keep), area=area)
        final = []
        for tile in windows:
            seen = labels if tile.col == 0 else missed
            final += merger.add(tile, perfect_decoder(seen, tile, params, Counter()))
        return sorted(m.box for m in final + merger.flush()), merger.dropped["open piece"]

    windows = list(tiling.windows())
    assert run(windows) == ([(40, 20, 100, 80)], 1)
    assert run(windows, keep=True) == ([(40, 20, 100, 80), (245, 20, 256, 80)], 0)
    assert run(windows[:1], area=windows[0].box) == ([(40, 20, 100, 80), (245, 20, 256, 80)], 0)
    assert run(windows[:1]) == ([(40, 20, 100, 80)], 1)


# Parcels from a tenth of a window (26 px) to three windows (768 px) across on a 1200 px
# raster of 6 x 6 windows of 256 px; the last is an L of two boxes, whose arms are seen apart.
MANY_SIZES = [
    [(8, 8, 776, 776)],
    [(790, 8, 1190, 508)],
    [(790, 520, 1100, 700)],
    [(8, 790, 520, 1000)],
    [(530, 790, 680, 940)],
    [(700, 790, 760, 850)],
    [(780, 720, 806, 746)],
    [(8, 1010, 776, 1190), (690, 860, 776, 1010)],
]


def many_sizes() -> np.ndarray:
    labels = np.zeros((1200, 1200), np.int32)
    for index, boxes in enumerate(MANY_SIZES, start=1):
        for x0, y0, x1, y1 in boxes:
            labels[y0:y1, x0:x1] = index
    return labels


def grid_iou(mask: AutoMask, truth: np.ndarray) -> float:
    x0, y0, x1, y1 = mask.box
    found = np.zeros_like(truth)
    found[y0:y1, x0:x1] = mask.mask
    return float((found & truth).sum() / (found | truth).sum())


@pytest.mark.parametrize("coverage", [True, False])
def test_parcels_of_any_size_are_joined_across_windows(coverage: bool) -> None:
    """Each window sees only its part of a large parcel (the perfect decoder clips it): the
    pieces are joined into the whole parcel, once, whatever its size."""
    labels = many_sizes()
    tiling = auto_tiling((1200, 1200), (1.0, 1.0), None, SIZE)
    final, _, _, peak = run_merger(tiling, labels, AutoParams(coverage=coverage, min_area_px=100))
    assert len(final) == len(MANY_SIZES)
    for index in range(1, len(MANY_SIZES) + 1):
        ious = [grid_iou(mask, labels == index) for mask in final]
        assert sorted(ious)[-1] >= 0.95 and sorted(ious)[-2] < 0.05, index
    assert all(mask.cut for mask in final if mask.box[2] - mask.box[0] > 300)
    assert peak <= len(MANY_SIZES)


def test_merger_memory_is_bounded() -> None:
    """On a 6 x 6 window raster of 36-55 px parcels (each whole in some window and hit by
    its 32 px point grid), every parcel comes out exactly once, and what waits in memory is
    the band where window rows overlap, not what the rows above held."""
    rng = np.random.default_rng(0)
    boxes = []
    for y0, x0 in itertools.product(range(0, 1140, 64), repeat=2):
        w, h = rng.integers(36, 56, size=2)
        boxes.append((x0 + 4, y0 + 4, x0 + 4 + w, y0 + 4 + h))
    tiling = auto_tiling((1200, 1200), (1.0, 1.0), None, SIZE)
    assert len(tiling) == 36
    params = AutoParams(points_per_side=8)
    final, _, _, peak = run_merger(tiling, label_image(boxes, (1200, 1200)), params)
    assert sorted(m.box for m in final) == sorted(boxes)
    assert peak <= 2 * 18  # two rows of the 18 x 18 parcels: the overlap band, not the raster


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("auto"))


@pytest.fixture(scope="module")
def coarse_model_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model, said to be tuned at 2 m: windows cover 512 px of a 1 m raster."""
    out = tmp_path_factory.mktemp("auto") / "model-2m"
    shutil.copytree(model_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["ground_resolution_m"] = 2.0
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


ISLAND = 40  # metres = pixels of the raster


@pytest.fixture(scope="module")
def islands(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[shapely.Polygon]]:
    """A 400 x 400 px, 1 m raster that is nodata but for 40 m islands every 70 m, some of
    them across window edges, and the islands as polygons."""
    data = textured(400, 400, seed=4)
    valid = np.zeros((400, 400), bool)
    squares = []
    for row, col in itertools.product(range(10, 400 - ISLAND, 70), repeat=2):
        valid[row : row + ISLAND, col : col + ISLAND] = True
        x, y = ORIGIN[0] + col, ORIGIN[1] - row
        squares.append(shapely.box(x, y - ISLAND, x + ISLAND, y))
    data[:, ~valid] = 0
    path = tmp_path_factory.mktemp("auto") / "islands.tif"
    return write_raster(path, data, crs=RASTER_CRS, origin=ORIGIN, nodata=0), squares


NOISE = {"pred_iou_thresh": 0.0, "stability_thresh": 0.0}  # random weights score near 0


@pytest.mark.parametrize("coarse", [False, True])
def test_auto_end_to_end(
    coarse: bool, model_dir: Path, coarse_model_dir: Path, islands, tmp_path: Path
) -> None:
    raster, squares = islands
    model = coarse_model_dir if coarse else model_dir
    out = tmp_path / "auto.gpkg"
    params = AutoParams(points_per_side=4, **NOISE)
    result = segment_auto(raster, model, out, SegmentParams(threads=1), params, 50.0, False)
    polygons = gpd.read_file(out)
    assert result.encoded == (1 if coarse else 4)
    assert 0 < result.prompts <= 16 * result.encoded  # points inside found masks are skipped
    assert result.polygons == len(polygons) > 0
    assert polygons.crs.equals(RASTER_CRS) and polygons.is_valid.all()
    assert {"score", "stability", "area_m2"} <= set(polygons.columns)
    assert (polygons.area_m2 >= 50.0).all()
    # georeferencing: masks are confined to the valid islands, so polygons lie within them
    # (a grid or transform off by a pixel would put some outside)
    union = shapely.union_all(squares)
    assert polygons.within(union.buffer(1e-6)).all()
    # noise or not, no two polygons are the same parcel by the duplicate criteria
    geometries = polygons.geometry.to_numpy()
    for a, b in polygons.sindex.query(geometries, predicate="intersects").T:
        if a >= b:
            continue
        shared = shapely.intersection(geometries[a], geometries[b]).area
        smaller = min(geometries[a].area, geometries[b].area)
        union_ab = geometries[a].area + geometries[b].area - shared
        assert shared / union_ab <= 0.7 + 1e-6 and shared / smaller <= 0.9 + 1e-6


@pytest.mark.usefixtures("perfect_model")
@pytest.mark.parametrize("skip_found", [True, False])
@pytest.mark.parametrize("coarse", [False, True])
def test_auto_georeferencing_with_a_perfect_model(
    coarse: bool, skip_found: bool, model_dir: Path, coarse_model_dir: Path, tmp_path: Path
) -> None:
    """48 m parcels on a 60 m grid of a 600 m raster: each parcel comes out once, exactly
    where it is, whichever windows cut it (9 windows at 1 m). With the model at 2 m the grid
    is resampled (4 windows), blending colours at parcel edges: a pixel thinner, same place.
    Decoding every point finds parcels many times over (duplicates); skipping points inside
    parcels found, the perfect model finds each parcel once, with fewer decoder calls."""
    parcels = grid_parcels(ORIGIN, 600.0, 60.0, 12.0)
    raster = flat_parcels_raster(tmp_path / "flat.tif", parcels, ORIGIN, 600)
    out = tmp_path / "parcels.gpkg"
    model = coarse_model_dir if coarse else model_dir
    params = AutoParams(points_per_side=16, skip_found=skip_found)
    result = segment_auto(raster, model, out, None, params, 100, False)
    found = gpd.read_file(out)
    assert result.encoded == (4 if coarse else 9) and result.skipped["predicted IoU"] > 0
    assert result.polygons == len(found)
    if skip_found:
        assert result.skipped["duplicate"] == 0 and result.prompts < 256 * result.encoded
    else:
        assert result.skipped["duplicate"] > 0 and result.prompts == 256 * result.encoded
    if coarse:  # the colour each parcel blends into the background with is a ring of its own
        found = found[found.area > 1000.0].reset_index(drop=True)
    assert len(found) == len(parcels)
    truth = gpd.GeoSeries(parcels, crs=RASTER_CRS)
    pairs = found.sindex.query(truth, predicate="intersects")
    everyone = list(range(len(parcels)))
    assert sorted(pairs[0]) == everyone and sorted(pairs[1]) == everyone  # one polygon each
    shared = shapely.area(
        shapely.intersection(truth.values[pairs[0]], found.geometry.values[pairs[1]])
    )
    found_area = found.area.values[pairs[1]]
    if coarse:  # inside the parcel, less at most a 2 m grid pixel around it
        assert (shared == found_area).all() and (shared >= 44.0**2).all()
    else:
        np.testing.assert_allclose(shared, truth.area.values[pairs[0]])
        np.testing.assert_allclose(shared, found_area)
        np.testing.assert_allclose(found.area_m2, found.area, rtol=1e-3)


def test_auto_min_score_and_output_crs(model_dir: Path, islands, tmp_path: Path) -> None:
    raster = islands[0]
    # duplicates kept: the untrained model's masks are near copies of each other
    params = AutoParams(points_per_side=4, nms_iou=1.0, containment=1.0, **NOISE)
    everything = segment_auto(raster, model_dir, tmp_path / "a.gpkg", None, params, 0.0, False)
    scores = gpd.read_file(tmp_path / "a.gpkg").score.to_numpy()
    threshold = float(np.median(scores))
    some = segment_auto(
        raster,
        model_dir,
        tmp_path / "b.shp",
        SegmentParams(min_score=threshold, crs="EPSG:4326", simplify=1.0),
        params,
        0.0,
        False,
    )
    written = gpd.read_file(tmp_path / "b.shp")
    assert some.polygons == len(written) < everything.polygons
    assert (written.score >= threshold - 1e-9).all() and written.crs.equals("EPSG:4326")
    assert some.skipped[BELOW_SCORE] > 0


def invoke(*args: str):
    return CliRunner().invoke(cli, ["segment", "--quiet", *args])


def test_cli_auto(model_dir: Path, islands, tmp_path: Path) -> None:
    out = tmp_path / "parcels.shp"
    result = invoke(
        str(islands[0]),
        "--model",
        str(model_dir),
        "--auto",
        "-o",
        str(out),
        "--points-per-side",
        "3",
        "--pred-iou-thresh",
        "0",
        "--stability-thresh",
        "0",
        "--min-area",
        "20",
        "--every-point",
    )
    assert result.exit_code == 0, result.output
    assert "from 4 windows, 36 point prompts" in result.stdout  # every point decoded
    polygons = gpd.read_file(out)
    assert len(polygons) > 0 and {"score", "stability", "area_m2"} <= set(polygons.columns)
    assert out.with_suffix(".prj").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --prompts"),
        (["--auto", "--prompts", "p.gpkg"], "exactly one of --prompts"),
        (["--auto", "--label-field", "x"], "--label-field"),
        (["--auto", "--pred-iou-thresh", "1.5"], "--pred-iou-thresh"),
        (["--auto", "--stability-thresh", "-0.1"], "--stability-thresh"),
        (["--auto", "--points-per-side", "0"], "--points-per-side"),
        (["--auto", "--overlap", "0.8"], "--overlap"),
        (["--auto", "--min-area", "-1"], "--min-area"),
        (["--auto", "--min-hole", "-5"], "--min-hole"),
        (["--prompts", "p.gpkg", "--overlapping"], "--overlapping"),
    ],
)
def test_cli_bad_auto_options(args: list[str], message: str, islands, tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    result = invoke(str(islands[0]), "--model", str(tmp_path / "model"), "-o", str(out), *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not out.exists()


def test_nothing_found_writes_an_empty_layer(
    model_dir: Path, islands, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Random weights never reach SAM's default thresholds: a forest or a lake gives no
    parcel either, which a batch run must get through. An empty layer and a warning."""
    out = tmp_path / "none.shp"
    result = segment_auto(islands[0], model_dir, out, None, AutoParams(points_per_side=2), 0, False)
    assert result.polygons == 0 and len(gpd.read_file(out)) == 0
    assert any(
        r.levelname == "WARNING" and "no parcel found" in r.message and "predicted IoU" in r.message
        for r in caplog.records
    )


# -- any size, a coverage ------------------------------------------------------------------


def map_box(box: tuple[int, int, int, int]) -> shapely.Polygon:
    """Raster pixels of the 1 m test rasters → their map polygon."""
    x0, y0, x1, y1 = box
    return shapely.box(ORIGIN[0] + x0, ORIGIN[1] - y1, ORIGIN[0] + x1, ORIGIN[1] - y0)


def matches(found: gpd.GeoDataFrame, truth: list[shapely.Geometry]) -> np.ndarray:
    """(truth, found) IoU of every pair."""
    geometries = found.geometry.to_numpy()
    truth_array = np.array(truth, dtype=object)[:, None]
    inter = shapely.area(shapely.intersection(truth_array, geometries[None, :]))
    return inter / shapely.area(shapely.union(truth_array, geometries[None, :]))


def assert_coverage(found: gpd.GeoDataFrame) -> None:
    geometries = found.geometry.to_numpy()
    assert shapely.coverage_is_valid(geometries)
    a, b = found.sindex.query(geometries, predicate="intersects")
    pairs = a < b
    assert (
        shapely.area(shapely.intersection(geometries[a[pairs]], geometries[b[pairs]])).max(
            initial=0.0
        )
        < 1e-6
    )


@pytest.mark.usefixtures("perfect_model")
def test_cli_auto_finds_parcels_of_any_size(model_dir: Path, tmp_path: Path) -> None:
    """Parcels from a tenth of a window to three windows across (36 windows): each comes out
    once and whole, as a coverage, though every window sees only its part of the large ones."""
    truth = [shapely.union_all([map_box(b) for b in boxes]) for boxes in MANY_SIZES]
    raster = flat_parcels_raster(tmp_path / "sizes.tif", truth, ORIGIN, 1200)
    out = tmp_path / "sizes.gpkg"
    result = invoke(str(raster), "--model", str(model_dir), "--auto", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "from 36 windows" in result.stdout
    found = gpd.read_file(out)
    iou = matches(found, truth)
    assert len(found) == len(truth)
    assert (iou.max(axis=1) >= 0.95).all() and ((iou >= 0.5).sum(axis=0) == 1).all()
    assert_coverage(found)


def test_claim_gives_contested_pixels_to_the_better_mask() -> None:
    better = auto_mask((0, 0, 40, 40), 0.95)
    worse = auto_mask((30, 0, 70, 40), 0.9)  # overlaps the better one by 10 px columns
    pending = auto_mask((60, 0, 100, 40), 0.97)  # still open: takes its pixels from `worse`
    final, others = claim([worse, better], [pending])
    assert [m.box for m in [*final, *others]] == [(40, 0, 60, 40), better.box, pending.box]
    assert all(m.mask.all() for m in [*final, *others])
    # two open masks are left alone
    assert [m.box for m in claim([], [worse, better])[1]] == [worse.box, better.box]


def test_fill_holes_below_a_size() -> None:
    mask = np.ones((40, 40), bool)
    mask[5:8, 5:8] = False  # 9 px hole
    mask[20:30, 20:30] = False  # 100 px hole
    mask[0:5, 30:35] = False  # a notch open to the outside: not a hole
    mask[12, 12] = False
    mask[13, 13] = False  # two pixels touching diagonally: one 2 px hole
    filled = fill_holes(mask, 50)
    assert filled[5:8, 5:8].all() and filled[12, 12] and filled[13, 13]
    assert not filled[20:30, 20:30].any() and not filled[0:5, 30:35].any()
    assert (fill_holes(mask, 0) == mask).all() and fill_holes(mask, 101).sum() == 40 * 40 - 25


def holes_by_flood_fill(mask: np.ndarray, max_area: float) -> np.ndarray:
    """The plain definition, for reference: flood the background (8-connected) from
    outside; each other background region is a hole, filled when smaller than max_area."""
    background = np.pad(~mask, 1, constant_values=True)
    label = np.zeros(background.shape, int)
    filled = mask.copy()
    for start in zip(*np.nonzero(background), strict=True):
        if label[start]:
            continue
        label[start] = region = label.max() + 1
        stack, pixels = [start], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                near = (y + dy, x + dx)
                if (0 <= near[0] < background.shape[0] and 0 <= near[1] < background.shape[1]
                        and background[near] and not label[near]):  # fmt: skip
                    label[near] = region
                    stack.append(near)
        if region > 1 and len(pixels) < max_area:  # region 1 holds the padding: outside
            for y, x in pixels:
                filled[y - 1, x - 1] = True
    return filled


def test_fill_holes_equals_flood_fill_on_random_masks() -> None:
    """Speckled masks of every density, with holes of every shape, nested in islands."""
    rng = np.random.default_rng(0)
    for density in (0.3, 0.5, 0.6, 0.8, 0.95):
        for _ in range(20):
            mask = rng.random(tuple(rng.integers(1, 30, 2))) < density
            for max_area in (1, 3, 20, 1000):
                assert (fill_holes(mask, max_area) == holes_by_flood_fill(mask, max_area)).all()


@pytest.mark.usefixtures("perfect_model")
@pytest.mark.parametrize("simplify", [0.0, 2.5])
def test_auto_coverage_shares_boundaries_and_fills_small_holes(
    simplify: float, model_dir: Path, tmp_path: Path
) -> None:
    """Touching 60 m parcels (no gap between them) stay apart and share their edges exactly,
    simplified or not; a 4 m² hole is filled, a 400 m² one (a farmstead) is kept."""
    parcels = grid_parcels(ORIGIN, 300.0, 60.0, 0.0)
    small_hole = map_box((22, 22, 24, 24))
    farmstead = map_box((140, 140, 160, 160))
    parcels = [p.difference(small_hole).difference(farmstead) for p in parcels]
    raster = flat_parcels_raster(tmp_path / "touching.tif", parcels, ORIGIN, 300)
    out = tmp_path / "touching.gpkg"
    params = SegmentParams(simplify=simplify)
    result = segment_auto(raster, model_dir, out, params, AutoParams(), 100.0, False, 100.0)
    found = gpd.read_file(out)
    assert result.polygons == len(found) == len(parcels) == 25
    assert_coverage(found)
    first = found.geometry[found.intersects(small_hole.centroid)].item()
    assert first.covers(small_hole) and len(first.interiors) == 0
    assert not found.intersects(farmstead.centroid).any()
    # neighbours east and west share a 60 m line
    west = found.geometry[found.intersects(map_box((30, 30, 31, 31)))].item()
    east = found.geometry[found.intersects(map_box((90, 30, 91, 31)))].item()
    shared = shapely.intersection(west, east)
    assert shared.geom_type in ("LineString", "MultiLineString")
    assert shared.length == pytest.approx(60.0)
    if simplify == 0.0:
        filled = [shapely.union(p, small_hole) if p.touches(small_hole) else p for p in parcels]
        np.testing.assert_allclose(sorted(found.area), sorted(shapely.area(filled)))


# -- the fine pass ---------------------------------------------------------------------------


def test_fine_tiling_halves_the_windows_on_the_same_grid() -> None:
    """The fine pass's windows are half a window on the same grid, at whole blocks, and
    cover the raster to its far edge with the same overlap."""
    tiling = auto_tiling((1200, 900), (1.0, 1.0), None, SIZE)
    fine = tiling.fine(0.25)
    assert (fine.size, fine.block, fine.block_px) == (SIZE // 2, tiling.block, tiling.block_px)
    for offsets, extent in ((fine.xs, 1200), (fine.ys, 900)):
        assert offsets[0] == 0 and 0 <= offsets[-1] + fine.size - extent < fine.block
        assert all(x % fine.block == 0 for x in offsets)
        assert max(np.diff(offsets)) == 96  # three quarters of 128
    window = next(fine.windows()).window
    assert zoomed(window, FINE_ZOOM).out_height == SIZE


def test_pooled_logits_are_the_grid_average() -> None:
    logits = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    out = pooled(logits, 2)
    assert out.shape == (2, 2, 2)
    assert out[0, 0, 0] == np.mean([0, 1, 4, 5]) and out[1, 1, 1] == np.mean([26, 27, 30, 31])


# the myopic model does not see a parcel under this many of its input pixels
MIN_SEEN_PX = 40 * 40
# 600 m square raster: four large fields, and between them small ones (24-36 m)
LARGE = [(10, 10, 250, 250), (260, 10, 590, 250), (10, 260, 250, 590), (260, 380, 590, 590)]
SMALL = [(270, 270, 294, 294), (320, 280, 350, 310), (400, 265, 436, 301), (500, 300, 528, 328)]


@pytest.fixture
def myopic_model(perfect_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The perfect model, blind to parcels under 40 x 40 of its input pixels (it rates them
    0), as the real decoder is to parcels a few of its mask pixels across."""
    from geosam.runtime import SamModel

    perfect = SamModel.decode_points

    def decode_points(self: SamModel, embedding, points):
        for logits, scores in perfect(self, embedding, points):
            seen = (logits > 0).sum(axis=(1, 2))
            yield logits, np.where(seen < MIN_SEEN_PX, 0.0, scores)

    monkeypatch.setattr(SamModel, "decode_points", decode_points)


@pytest.mark.usefixtures("myopic_model")
def test_fine_pass_finds_parcels_too_small_for_the_model(model_dir: Path, tmp_path: Path) -> None:
    """Without the fine pass the small parcels are missed; with it each comes out once (its
    border pixel blended with the black around it by the 2x bilinear read), the large
    fields keep their ground, the parcels stay a coverage, and blocks of windows give the
    same parcels as one block."""
    truth = [map_box(b) for b in LARGE + SMALL]
    raster = flat_parcels_raster(tmp_path / "small.tif", truth, ORIGIN, 600)
    found = {}
    for name, extra in (
        ("first", []),
        ("fine", ["--fine-pass"]),
        ("blocks", ["--fine-pass", "--block-windows", "2"]),
    ):
        out = tmp_path / f"{name}.gpkg"
        # the blended border makes a small parcel's mask less stable than SAM's 0.95 asks;
        # the fine pass filters at 0.9 / 0.8 (FINE_STRICTER), below the model's 0.95 and
        # the smallest parcel's 0.85
        result = invoke(
            str(raster), "--model", str(model_dir), "--auto", "-o", str(out),
            "--pred-iou-thresh", "0.8", "--stability-thresh", "0.7", *extra,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        found[name] = gpd.read_file(out)
    iou = matches(found["first"], truth)
    assert len(found["first"]) == len(LARGE) and (iou[: len(LARGE)].max(axis=1) >= 0.95).all()
    for name in ("fine", "blocks"):
        iou = matches(found[name], truth)
        assert len(found[name]) == len(truth)
        assert (iou[: len(LARGE)].max(axis=1) >= 0.95).all()
        assert (iou[len(LARGE) :].max(axis=1) >= 0.8).all() and (
            (iou >= 0.5).sum(axis=0) == 1
        ).all()
        assert_coverage(found[name])
    assert sorted(found["fine"].area.round(3)) == sorted(found["blocks"].area.round(3))
