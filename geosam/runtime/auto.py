"""SAM's automatic mode over a whole raster: every parcel once, no prompts given.

SAM's ``SamAutomaticMaskGenerator`` prompts one image with a grid of points, keeps the masks
whose predicted IoU and stability are high, and removes duplicates. A raster is many model
inputs, so here that runs per window of a tiling, and duplicates are removed across windows
as well. The steps, each a function below, so the CLI and the QGIS plugin share them:

1. :func:`auto_tiling`: a regular tiling of the raster by overlapping windows of the model's
   input size, all on **one pixel grid** at the model's ground resolution. Window origins are
   whole grid pixels, so masks from different windows are compared by integer offsets, with
   no resampling. Windows are laid out in blocks of whole grid pixels that are also whole
   raster pixels (the grid's scale is rounded to make that so: by at most half a raster pixel
   per 1/16 window), so every window is read at integer raster offsets, as
   :class:`~.windows.Window` requires.
2. :func:`window_masks`: the point grid of one window through the decoder
   (:meth:`~.model.SamModel.decode_points`), then :func:`mask_candidates` keeps a candidate if
   its predicted IoU and stability pass and it is large enough. A mask that touches an inner
   window edge is a piece of a parcel that goes on in the neighbouring windows: it is kept,
   marked cut (edges on the raster's border are not inner: nothing beyond them is missing).
   A point inside a mask already accepted, in this window or whole in an earlier one, is not
   decoded (``AutoParams.skip_found``): it would find that parcel again.
3. :class:`MaskMerger`: masks are kept as boxes on the grid with boolean crops (a parcel's
   worth of memory each, never a window's or the raster's, :mod:`.masks`). Pieces that two
   windows saw alike where both saw the ground are joined into one parcel, however many
   windows it spans; then :func:`suppress` removes duplicates within and across windows in
   one greedy pass, best predicted IoU first: two masks are the same parcel when their IoU
   is high or one lies almost entirely inside the other (a part and its whole are one
   parcel). Box arithmetic rules out most pairs first; pixel overlaps are counted only for
   the pairs whose boxes could be duplicates. Windows arrive in raster order, and a parcel
   is handed out as final as soon as no window still to come reaches its box, so memory
   holds about one row of windows' masks (plus the parcels that span rows). By default the
   final parcels are a coverage: a pixel two of them hold goes to the better-ranked.
4. :func:`choose_thresholds`: the predicted-IoU and stability filters a run uses: the
   user's, else the ones tuned for this model on its val split and recorded in its manifest
   (:mod:`geosam.export.auto_calibration`), else SAM's.
5. :class:`AutoSegmenter`: the loop over a raster (:class:`~.reader.RasterReader`: the CLI's
   rasterio reader or the plugin's GDAL one) that runs these steps window by window and hands
   out each final parcel on the tiling grid, counting what it drops. ``geosam segment
   --auto`` and the plugin's automatic mode only turn its masks into polygons and write them.

numpy and onnxruntime only, imported relatively: this folder is copied into the QGIS plugin.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import reasons
from .errors import GeosamError
from .masks import (
    AutoMask,
    GridBox,
    claim,
    crop,
    fill_holes,
    join,
    mask_box,
    open_piece,
    seen_alike,
    tightened,
)
from .reader import RasterReader
from .windows import GeoTransform, Window, WindowParams, pixel_to_map, sam_coords

if TYPE_CHECKING:  # onnxruntime stays unimported until a model is loaded (the CLI's --help)
    from .model import Embedding, SamModel

# Windows per side are laid out in blocks of input_size / BLOCKS_PER_WINDOW grid pixels.
BLOCKS_PER_WINDOW = 16
# Parcels smaller than this are fragments (slivers at window edges, corners of fields); the
# callers convert it to grid pixels for AutoParams.min_area_px.
DEFAULT_MIN_AREA_M2 = 100.0
# The manifest key of the settings tuned on the model's val split, and the AutoParams fields
# it holds (geosam.export.auto_calibration writes it): the two filters, and the point grid
# they were tuned at (chosen with them since session 11).
TUNED_THRESHOLDS = "auto_thresholds"
THRESHOLDS = ("pred_iou_thresh", "stability_thresh")
GRID = "points_per_side"
# The fine pass's filters tuned with them, under this key of the manifest's entry, and the
# AutoParams fields they set (FINE_THRESHOLDS[i] for THRESHOLDS[i]).
FINE_PASS = "fine_pass"
FINE_THRESHOLDS = ("fine_pred_iou_thresh", "fine_stability_thresh")
# The fine pass (AutoSegmenter.fine_parcels): windows of 1/FINE_ZOOM the side, read at
# FINE_ZOOM times the grid's resolution so that they fill the model's input again.
FINE_ZOOM = 2
# A fine-pass parcel is one where the first pass found none: at most this share of its
# pixels may lie on that pass's parcels.
FINE_MAX_COVERED = 0.2
# The fine pass's filters, for a model whose manifest has none tuned (older exports, other
# tools' decoders), this much stricter than the first pass's: zoomed in, a model rates junk
# higher than at its own scale (docs/benchmarks.md, session 12).
FINE_STRICTER = 0.1


@dataclass(frozen=True)
class AutoParams:
    """Automatic mode's settings; the defaults are SAM's own where SAM has one.

    ``points_per_side``: the n x n point grid per window. SAM uses 32 on photos; parcels are
    large objects, and on a CPU each point costs one decoder call, so 16 x 16 points already
    cost about as much as the window's encoder pass (docs/design-notes.md, "Automatic mode").
    ``pred_iou_thresh`` and ``stability_thresh`` (with ``stability_offset``, in logits) are
    SAM's filters.
    ``overlap`` is the fraction of the window side shared by neighbours, where pieces of a
    parcel cut by window edges are recognised as one (:func:`~.masks.seen_alike`).
    ``edge_margin`` (fraction of the window side) is how close to an inner window edge a mask
    may come before it counts as cut by it. ``nms_iou`` and ``containment`` decide duplicates
    (:func:`suppress`); ``nms_iou`` also how well two pieces must agree to be joined.
    ``min_area_px`` drops smaller parcels and ``min_hole_px`` fills smaller holes, in grid
    pixels. ``coverage``: no pixel in two parcels (the better-ranked keeps it,
    :func:`~.masks.claim`); False keeps overlapping masks as SAM gives them.
    ``skip_found``: a grid point inside a mask already accepted is not decoded
    (:func:`window_masks`); False decodes every point, as SAM does. ``keep_open_pieces``:
    keep a window's piece of a parcel that no neighbouring window continued
    (:func:`~.masks.open_piece`), dropped by default. ``fine_pass``: look again, at twice
    the resolution, at the ground the first pass left uncovered
    (:meth:`AutoSegmenter.fine_parcels`), for parcels too small for the model at its own
    scale; off by default (it costs about twice the time). ``fine_pred_iou_thresh`` and
    ``fine_stability_thresh``: its filters (None: :func:`fine_params`' default).
    """

    points_per_side: int = 16
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    stability_offset: float = 1.0
    overlap: float = 0.25
    edge_margin: float = 0.01
    nms_iou: float = 0.7
    containment: float = 0.9
    min_area_px: float = 0.0
    min_hole_px: float = 0.0
    coverage: bool = True
    skip_found: bool = True
    keep_open_pieces: bool = False
    fine_pass: bool = False
    fine_pred_iou_thresh: float | None = None
    fine_stability_thresh: float | None = None

    def __post_init__(self) -> None:
        # named as the CLI's options where it has one
        fractions = {
            "--pred-iou-thresh": (self.pred_iou_thresh, 0.0, 1.0),
            "--stability-thresh": (self.stability_thresh, 0.0, 1.0),
            "--overlap": (self.overlap, 0.0, 0.5),
            "edge_margin": (self.edge_margin, 0.0, 0.1),
            "nms_iou": (self.nms_iou, 0.0, 1.0),
            "containment": (self.containment, 0.0, 1.0),
        }
        for name in FINE_THRESHOLDS:
            if getattr(self, name) is not None:
                fractions[name] = (getattr(self, name), 0.0, 1.0)
        for name, (value, low, high) in fractions.items():
            if not low <= value <= high:
                raise GeosamError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
        if self.points_per_side < 1:
            raise GeosamError(f"--points-per-side must be 1 or more, got {self.points_per_side}")
        if self.min_area_px < 0:
            raise GeosamError(f"--min-area must be 0 or more, got {self.min_area_px:g} px")
        if self.min_hole_px < 0:
            raise GeosamError(f"--min-hole must be 0 or more, got {self.min_hole_px:g} px")
        if self.stability_offset <= 0:
            raise GeosamError(
                f"the stability offset must be positive, got {self.stability_offset:g}"
            )


def tuned_thresholds(manifest: Mapping[str, Any], where: str) -> dict[str, float] | None:
    """The thresholds tuned for this model on its val split, and the point grid they were
    tuned at where the manifest says it, from its manifest (``where`` names the manifest in
    messages); None when it has none (an export older than the calibration, another tool's
    decoder). A malformed entry is refused, not ignored: the user would get thresholds
    nobody chose."""
    entry = manifest.get(TUNED_THRESHOLDS)
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise GeosamError(
            f"{where}: {TUNED_THRESHOLDS} must be an object holding {' and '.join(THRESHOLDS)}, "
            f"got {type(entry).__name__}: export the model again"
        )
    values = {name: _fraction(entry, name, f"{where}: {TUNED_THRESHOLDS}") for name in THRESHOLDS}
    fine = entry.get(FINE_PASS)
    if fine is not None:
        key = f"{where}: {TUNED_THRESHOLDS}.{FINE_PASS}"
        if not isinstance(fine, Mapping):
            raise GeosamError(f"{key} must be an object: export the model again")
        for name, field in zip(THRESHOLDS, FINE_THRESHOLDS, strict=True):
            values[field] = _fraction(fine, name, key)
    if GRID in entry:
        grid = entry[GRID]
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise GeosamError(
                f"{where}: {TUNED_THRESHOLDS}.{GRID} must be a whole number of at least 1, "
                f"got {grid!r}: export the model again"
            )
        values[GRID] = grid
    return values


def _fraction(entry: Mapping[str, Any], name: str, where: str) -> float:
    """``entry[name]``, a number between 0 and 1, or one line naming ``where`` it is wrong."""
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise GeosamError(
            f"{where}.{name} must be a number between 0 and 1, got {value!r}: "
            "export the model again"
        )
    return float(value)


def choose_thresholds(
    params: AutoParams, manifest: Mapping[str, Any], where: str, given: Mapping[str, float]
) -> tuple[AutoParams, str]:
    """``params`` with automatic mode's thresholds and point grid each taken from ``given``
    (the user's), else from the model's tuned ones (:func:`tuned_thresholds`), else left as
    ``params`` has them (SAM's unless a caller set others); and one line for the log saying
    which values are used and where they come from.

    SAM's thresholds are Meta's for Meta's model: a tuned model's IoU head predicts other
    values, so a threshold the user did not give is the model's own wherever it has one;
    and they hold at the grid they were tuned at.
    """
    tuned = tuned_thresholds(manifest, where) or {}
    chosen = {name: getattr(params, name) for name in (*THRESHOLDS, GRID)}
    chosen.update(tuned)
    chosen.update(given)

    def origin(name: str) -> str:
        if name in given:
            return "given"
        return "the model's, tuned on its val split" if name in tuned else "defaults"

    labels = ("predicted IoU", "stability", "points per side")
    described = ", ".join(
        f"{label} {chosen[name]:g} ({origin(name)})"
        for name, label in zip((*THRESHOLDS, GRID), labels, strict=True)
    )
    line = f"automatic mode thresholds: {described}"
    if params.fine_pass:
        fine = fine_params(replace(params, **chosen))
        source = (
            "the model's, tuned on its val split"
            if FINE_THRESHOLDS[0] in tuned
            else f"{FINE_STRICTER:g} above the first pass's"
        )
        line += (
            f"; fine pass: predicted IoU {fine.pred_iou_thresh:g}, stability "
            f"{fine.stability_thresh:g} ({source}), points per side {fine.points_per_side}"
        )
    if not tuned and not all(name in given for name in THRESHOLDS):
        line += (
            f"; {where} has no tuned thresholds (an older export or another tool's decoder), "
            "so SAM's apply: give both thresholds, or export the model from its run again to "
            "tune them"
        )
    return replace(params, **chosen), line


@dataclass(frozen=True)
class TileWindow:
    """One window of a :class:`Tiling`: where to read it (``window``, raster pixels, and its
    output size), where its output pixel (0, 0) lies on the tiling grid (``origin``, x/y),
    and which of its edges (left, top, right, bottom) are inside the raster."""

    row: int
    col: int
    window: Window
    origin: tuple[int, int]
    inner: tuple[bool, bool, bool, bool]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the window's image and masks."""
        return self.window.out_height, self.window.out_width

    @property
    def box(self) -> GridBox:
        """The window's pixels on the tiling grid."""
        x, y = self.origin
        height, width = self.shape
        return x, y, x + width, y + height

    def overlaps(self, box: GridBox) -> bool:
        """Whether ``box`` (tiling grid) shares pixels with this window."""
        x, y = self.origin
        height, width = self.shape
        return box[0] < x + width and box[2] > x and box[1] < y + height and box[3] > y


@dataclass(frozen=True)
class Tiling:
    """Overlapping windows of ``size`` grid pixels at offsets ``xs`` x ``ys`` (grid pixels),
    on a grid of ``block`` grid pixels per ``block_px`` (x, y) raster pixels."""

    raster_size: tuple[int, int]
    size: int
    block: int
    block_px: tuple[int, int]
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def extent(self) -> GridBox:
        """The raster on the tiling grid: where the last windows end."""
        sx, sy = self.scale
        return 0, 0, round(self.raster_size[0] / sx), round(self.raster_size[1] / sy)

    @property
    def scale(self) -> tuple[float, float]:
        """Raster pixels per grid pixel, (x, y); above 1 is downsampling."""
        return self.block_px[0] / self.block, self.block_px[1] / self.block

    def windows(self) -> Iterator[TileWindow]:
        """The windows in raster order: rows north to south, west to east in each."""
        for row, y in enumerate(self.ys):
            for col, x in enumerate(self.xs):
                yield self._window(row, col, x, y)

    def _window(self, row: int, col: int, x: int, y: int) -> TileWindow:
        span = self.size // self.block
        width, height = self.raster_size
        col_off, row_off = x // self.block * self.block_px[0], y // self.block * self.block_px[1]
        cols = min(span * self.block_px[0], width - col_off)
        rows = min(span * self.block_px[1], height - row_off)
        sx, sy = self.scale
        out_w = min(self.size, max(1, round(cols / sx)))
        out_h = min(self.size, max(1, round(rows / sy)))
        inner = (col > 0, row > 0, col_off + cols < width, row_off + rows < height)
        return TileWindow(
            row, col, Window(col_off, row_off, cols, rows, out_h, out_w), (x, y), inner
        )

    def fine(self, overlap: float) -> Tiling:
        """The fine pass's tiling: windows of 1/:data:`FINE_ZOOM` this one's side on the same
        grid (and so the same blocks of raster pixels), ``overlap`` of a side shared by
        neighbours. Read at FINE_ZOOM times the grid's resolution (:func:`zoomed`), each
        window fills the model's input again."""
        span = max(1, self.size // self.block // FINE_ZOOM)
        stride = max(1, span - round(overlap * span))
        xs, ys = (
            window_offsets(extent, block_px, span, stride, self.block)
            for extent, block_px in zip(self.raster_size, self.block_px, strict=True)
        )
        return replace(self, size=span * self.block, xs=xs, ys=ys)

    def transform(self, raster_transform: GeoTransform, x: int, y: int) -> GeoTransform:
        """The geotransform (GDAL order) of the grid with pixel (x, y) as its origin: what a
        mask crop whose box starts there is polygonized with."""
        sx, sy = self.scale
        x0, y0 = pixel_to_map(raster_transform, (x * sx, y * sy))
        t = raster_transform
        return (float(x0), t[1] * sx, t[2] * sy, float(y0), t[4] * sx, t[5] * sy)

    def reaches_later(self, tile: TileWindow, box: GridBox) -> bool:
        """Whether a window after ``tile`` in raster order may overlap ``box``: one to its
        right in the same row, or any in a later row (rows span the whole width)."""
        next_x = self.xs[tile.col + 1] if tile.col + 1 < len(self.xs) else math.inf
        next_y = self.ys[tile.row + 1] if tile.row + 1 < len(self.ys) else math.inf
        return box[2] > next_x or box[3] > next_y


def raster_tiling(
    raster_size: tuple[int, int],
    centre_pixel_m: tuple[float, float],
    ground_resolution_m: float | None,
    input_size: int,
    params: AutoParams,
    min_area_m2: float,
    max_upsample: float,
    min_hole_m2: float = 0.0,
) -> tuple[Tiling, AutoParams]:
    """One tiling for a whole raster and ``params`` with the minimum area and the largest
    hole filled in grid pixels.

    The grid is sized by the raster's pixels at its centre (``centre_pixel_m``, x and y
    metres): in a geographic CRS pixels shrink towards the poles, but one grid keeps masks of
    all windows comparable; the areas written are geodesic all the same. Shared by
    ``geosam segment --auto`` and the QGIS plugin, whose readers measure the pixel.
    """
    tiling = auto_tiling(
        raster_size, centre_pixel_m, ground_resolution_m, input_size, params.overlap, max_upsample
    )
    grid_m2 = centre_pixel_m[0] * tiling.scale[0] * centre_pixel_m[1] * tiling.scale[1]
    return tiling, replace(
        params, min_area_px=min_area_m2 / grid_m2, min_hole_px=min_hole_m2 / grid_m2
    )


def auto_tiling(
    raster_size: tuple[int, int],
    pixel_size_m: tuple[float, float],
    ground_resolution_m: float | None,
    input_size: int,
    overlap: float = AutoParams.overlap,
    max_upsample: float = 2.0,
) -> Tiling:
    """The tiling of a ``raster_size`` (width, height) raster whose pixels measure
    ``pixel_size_m`` (x, y) metres, for a model of ``input_size`` pixels tuned at
    ``ground_resolution_m`` (None: keep the raster's resolution).

    Resampling follows :func:`~.windows.prompt_window`: one grid pixel is about the model's
    ground resolution per axis, upsampling at most ``max_upsample`` times. Along each axis
    windows start every ``1 - overlap`` window sides, and the last one ends at the raster's
    far edge (it may overlap its neighbour more); a raster smaller than a window is one window.
    """
    largest = max(1, input_size // BLOCKS_PER_WINDOW)
    block = max(d for d in range(1, largest + 1) if input_size % d == 0)
    span = input_size // block
    stride = max(1, span - round(overlap * span))
    scale = [1.0, 1.0]
    if ground_resolution_m is not None:
        scale = [ground_resolution_m / size for size in pixel_size_m]
    block_px = tuple(max(1, round(block * max(s, 1.0 / max_upsample))) for s in scale)

    return Tiling(
        tuple(raster_size),
        input_size,
        block,
        block_px,
        window_offsets(raster_size[0], block_px[0], span, stride, block),
        window_offsets(raster_size[1], block_px[1], span, stride, block),
    )


def window_offsets(
    extent: int, block_extent: int, span: int, stride: int, block: int
) -> tuple[int, ...]:
    """Grid offsets of windows of ``span`` blocks every ``stride`` blocks along a raster
    side of ``extent`` pixels (``block_extent`` pixels a block of ``block`` grid pixels), the
    last one ending at the far edge."""
    blocks = math.ceil(extent / block_extent)
    if blocks <= span:
        return (0,)
    starts = [*range(0, blocks - span, stride), blocks - span]
    return tuple(start * block for start in starts)


def point_grid(points_per_side: int, shape: tuple[int, int]) -> np.ndarray:
    """(n², 2) x/y point prompts in SAM's pixel convention: the centres of an n x n grid of
    cells over an image of ``shape`` (height, width), as SAM's ``build_point_grid``."""
    steps = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(steps * shape[1], steps * shape[0])
    return sam_coords(np.stack([xs.ravel(), ys.ravel()], axis=1))


def stability_score(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """SAM's stability score per mask of (K, H, W) logits: the IoU of the masks thresholded
    at ``threshold + offset`` and ``threshold - offset`` (the first lies inside the second).
    A mask whose edge sits where logits are near the threshold is unstable, one with sharp
    edges is not. An empty mask scores 0."""
    inner = (logits > threshold + offset).sum(axis=(-2, -1))
    outer = (logits > threshold - offset).sum(axis=(-2, -1))
    return np.divide(inner, outer, out=np.zeros(len(logits)), where=outer > 0)


def mask_candidates(
    logits: np.ndarray,
    scores: np.ndarray,
    tile: TileWindow,
    params: AutoParams,
    threshold: float = 0.0,
    valid: np.ndarray | None = None,
    dropped: Counter[str] | None = None,
) -> list[AutoMask]:
    """The candidates of one point prompt (logits (K, H, W), predicted IoUs (K,)) that pass
    automatic mode's filters, as :class:`~.masks.AutoMask` on the tiling grid, holes below
    ``params.min_hole_px`` filled. ``valid`` (H, W) clears nodata pixels first; ``dropped``
    counts the rest by reason. A mask cut by an inner window edge is kept, marked ``cut``,
    whatever its area: it is a piece, measured once joined to the rest of its parcel."""
    dropped = Counter() if dropped is None else dropped
    confident = scores >= params.pred_iou_thresh  # first: the cheapest test, and the strictest
    if not confident.all():
        dropped["predicted IoU"] += int((~confident).sum())
    logits, scores = logits[confident], scores[confident]
    stability = stability_score(logits, threshold, params.stability_offset)
    margin = max(1, round(params.edge_margin * max(tile.shape)))
    kept = []
    for logit, score, stable in zip(logits, scores, stability, strict=True):
        if stable < params.stability_thresh:
            dropped["stability"] += 1
            continue
        mask = logit > threshold
        if valid is not None:
            mask &= valid
        area = int(mask.sum())
        box = mask_box(mask) if area else (0, 0, 0, 0)
        cut = area > 0 and touches_inner_edge(box, tile, margin)
        if area == 0 or (area < params.min_area_px and not cut):
            dropped["area"] += 1
            continue
        x0, y0, x1, y1 = box
        ox, oy = tile.origin
        kept.append(
            AutoMask(
                (x0 + ox, y0 + oy, x1 + ox, y1 + oy),
                fill_holes(mask[y0:y1, x0:x1], params.min_hole_px),
                float(score),
                float(stable),
                (tile.box,),
                cut,
            )
        )
    return kept


def touches_inner_edge(box: GridBox, tile: TileWindow, margin: int) -> bool:
    """Whether ``box`` (window pixels) comes within ``margin`` pixels of an edge of ``tile``
    that lies inside the raster, i.e. whether the mask may continue in the next window."""
    height, width = tile.shape
    left, top, right, bottom = tile.inner
    return (
        (left and box[0] < margin)
        or (top and box[1] < margin)
        or (right and box[2] > width - margin)
        or (bottom and box[3] > height - margin)
    )


def zoomed(window: Window, zoom: int) -> Window:
    """``window`` read at ``zoom`` times its output size."""
    return replace(window, out_height=window.out_height * zoom, out_width=window.out_width * zoom)


def pooled(logits: np.ndarray, zoom: int) -> np.ndarray:
    """(K, H·zoom, W·zoom) logits averaged over ``zoom`` x ``zoom`` pixels: (K, H, W), the
    grid's resolution, where masks of every window and pass are compared and joined."""
    if zoom == 1:
        return logits
    count, height, width = logits.shape
    shape = (count, height // zoom, zoom, width // zoom, zoom)
    return logits.reshape(shape).mean(axis=(2, 4))


def window_masks(
    model: SamModel,
    embedding: Embedding,
    tile: TileWindow,
    params: AutoParams,
    valid: np.ndarray | None = None,
    dropped: Counter[str] | None = None,
    found: np.ndarray | None = None,
    zoom: int = 1,
) -> tuple[list[AutoMask], int]:
    """Automatic mode on one encoded window: every candidate of its point grid that passes
    :func:`mask_candidates` (duplicates are :class:`MaskMerger`'s to remove), and the number
    of points decoded.

    The decoder calls are automatic mode's cost, and most of them land on parcels already
    found: a parcel a quarter of a window across holds about a sixteenth of the grid, and
    each of its points returns the same parcel again, for suppression to discard. With
    ``params.skip_found`` a point is not decoded when it lies inside a mask accepted so far
    (one of this window's candidates, or ``found``: (H, W) pixels of parcels that earlier
    windows found whole, :meth:`MaskMerger.found`). A point in a rejected mask is still
    decoded: it may give a better mask. Points are visited in SAM's order (rows, then
    columns), so what is found first decides which points are skipped.

    ``embedding`` may be of the window at ``zoom`` times its grid size (the fine pass): each
    point's logits are then pooled back to the grid (:func:`pooled`) before the filters.
    """

    def decode(prompts: Iterator[np.ndarray]) -> Iterator[list[AutoMask]]:
        for logits, scores in model.decode_points(embedding, prompts):
            logits = pooled(logits, zoom)
            yield mask_candidates(logits, scores, tile, params, model.threshold, valid, dropped)

    return grid_masks(decode, tile, params, found, zoom)


def grid_masks(
    decode: Callable[[Iterator[np.ndarray]], Iterator[list[AutoMask]]],
    tile: TileWindow,
    params: AutoParams,
    found: np.ndarray | None = None,
    zoom: int = 1,
) -> tuple[list[AutoMask], int]:
    """:func:`window_masks`' loop over the point grid, with ``decode`` turning the points it
    is asked for (SAM coordinates, one at a time) into each point's candidates that pass
    the filters: the decoder, or (to tune the filters, :mod:`geosam.export.auto_calibration`)
    candidates decoded once beforehand, so that the points a run skips are skipped there too.
    The points are those of the window's image, ``zoom`` times its grid size (the fine
    pass's), the candidates on the grid. Returns the candidates and the number of points
    decoded."""
    height, width = tile.shape
    points = point_grid(params.points_per_side, (height * zoom, width * zoom))
    covered = np.zeros(tile.shape, bool) if found is None else found.copy()
    masks: list[AutoMask] = []
    decoded = 0
    prompts = unfound(points, covered, zoom) if params.skip_found else iter(points)
    for new in decode(prompts):
        decoded += 1
        if params.skip_found:
            for mask in new:
                paint(covered, mask, tile.origin)
        masks += new
    return masks, decoded


def unfound(points: np.ndarray, covered: np.ndarray, zoom: int = 1) -> Iterator[np.ndarray]:
    """The ``points`` (SAM coordinates in an image ``zoom`` times ``covered``'s shape) whose
    pixel is not ``covered``, each looked up when it is asked for: ``covered`` may grow in
    between."""
    height, width = covered.shape
    pixels = np.floor(points + 0.5).astype(np.int64) // zoom  # SAM's pixel centres are integers
    for point, (x, y) in zip(points, pixels, strict=True):
        if not covered[min(max(y, 0), height - 1), min(max(x, 0), width - 1)]:
            yield point


def paint(image: np.ndarray, mask: AutoMask, origin: tuple[int, int]) -> None:
    """Set ``mask``'s pixels in ``image``, a window whose pixel (0, 0) is grid pixel
    ``origin``; what lies outside the window is left out."""
    height, width = image.shape
    image |= crop(mask, (origin[0], origin[1], origin[0] + width, origin[1] + height))


def suppress(
    masks: Sequence[AutoMask], params: AutoParams, new: Sequence[bool] | None = None
) -> list[bool]:
    """Which of ``masks`` to keep: greedy non-maximum suppression by rank (predicted IoU,
    then stability; :attr:`~.masks.AutoMask.rank`), where two masks are duplicates when
    their IoU exceeds ``params.nms_iou`` or their overlap covers more than
    ``params.containment`` of the smaller one.

    Pairs of masks that are both not ``new`` are known not to be duplicates (they survived
    an earlier call) and are not compared again, so the box test is a (new x all) matrix.
    Boxes first: a pair whose boxes cannot hold enough overlap for either criterion is never
    looked at pixel by pixel.
    """
    count = len(masks)
    rows = np.flatnonzero(np.ones(count, bool) if new is None else np.asarray(new, bool))
    boxes = np.array([m.box for m in masks], dtype=np.int64).reshape(-1, 4)
    areas = np.array([m.area for m in masks], dtype=np.float64)
    possible = _may_duplicate(boxes[rows], areas[rows], boxes, areas, params)
    possible[np.arange(len(rows)), rows] = False
    rivals: list[set[int]] = [set() for _ in range(count)]
    for a, b in zip(rows[np.nonzero(possible)[0]], np.nonzero(possible)[1], strict=True):
        rivals[a].add(int(b))
        rivals[b].add(int(a))
    order = sorted(range(count), key=lambda i: masks[i].rank, reverse=True)
    keep = np.zeros(count, bool)
    for i in order:
        keep[i] = not any(keep[j] and duplicates(masks[i], masks[j], params) for j in rivals[i])
    return keep.tolist()


def _may_duplicate(
    boxes_a: np.ndarray,
    areas_a: np.ndarray,
    boxes_b: np.ndarray,
    areas_b: np.ndarray,
    params: AutoParams,
) -> np.ndarray:
    """(A, B) whether mask pairs can be duplicates judging by boxes and areas alone: the
    most two masks can share is their boxes' intersection, and the smaller mask."""
    low = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    high = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=-1)
    smaller = np.minimum(areas_a[:, None], areas_b[None, :])
    most = np.minimum(intersection, smaller)
    union = areas_a[:, None] + areas_b[None, :] - most
    return (most > params.nms_iou * union) | (most > params.containment * smaller)


def duplicates(a: AutoMask, b: AutoMask, params: AutoParams) -> bool:
    """Whether ``a`` and ``b`` are one parcel: mask IoU above ``params.nms_iou``, or their
    shared pixels more than ``params.containment`` of the smaller mask."""
    x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if x1 <= x0 or y1 <= y0:
        return False
    shared = np.count_nonzero(
        a.mask[y0 - a.box[1] : y1 - a.box[1], x0 - a.box[0] : x1 - a.box[0]]
        & b.mask[y0 - b.box[1] : y1 - b.box[1], x0 - b.box[0] : x1 - b.box[0]]
    )
    area_a, area_b = a.area, b.area
    return (
        shared / (area_a + area_b - shared) > params.nms_iou
        or shared / min(area_a, area_b) > params.containment
    )


class MaskMerger:
    """Masks of windows visited in raster order made into parcels, in bounded memory.

    :meth:`add` takes one window's masks, joins the pieces of parcels cut by window edges
    (:func:`~.masks.seen_alike`, :func:`~.masks.join`), removes duplicates
    (:func:`suppress`) and returns the parcels that are now final: no window still to come
    reaches their box, so nothing can extend or replace them any more. Until then a mask
    waits in :attr:`pending`. In a coverage, a final parcel's contested pixels go to the
    better-ranked mask (:func:`~.masks.claim`), and a parcel left smaller than
    ``params.min_area_px`` is dropped; parcels rated below ``min_score`` are dropped before
    they claim anything, and so are open pieces (:func:`~.masks.open_piece`: one window's
    piece cut at its edge where the next window, inside ``area``, gave nothing to join it).
    ``area`` is the part of the grid whose windows this merger is given, by default the whole
    raster (a block of windows passes its own: beyond it a piece may still be joined).
    :meth:`flush` returns what is left after the last window. :attr:`dropped` counts what was
    dropped, by reason.
    """

    def __init__(
        self,
        tiling: Tiling,
        params: AutoParams,
        min_score: float | None = None,
        area: GridBox | None = None,
    ) -> None:
        self.tiling = tiling
        self.params = params
        self.min_score = min_score
        self.area = tiling.extent if area is None else area
        self.pending: list[AutoMask] = []
        self.dropped: Counter[str] = Counter()

    def add(self, tile: TileWindow, masks: Sequence[AutoMask]) -> list[AutoMask]:
        """Merge ``tile``'s masks with the pending ones; return the parcels now final."""
        # only pending masks that overlap this window can continue or duplicate its masks
        near = [m for m in self.pending if tile.overlaps(m.box)]
        kept = [m for m in self.pending if not tile.overlaps(m.box)]
        near, masks = self._join(near, list(masks))
        candidates = [*near, *masks]
        keep = suppress(candidates, self.params, [False] * len(near) + [True] * len(masks))
        kept += [mask for mask, k in zip(candidates, keep, strict=True) if k]
        self.dropped["duplicate"] += len(keep) - sum(keep)
        final = [m for m in kept if not self.tiling.reaches_later(tile, m.box)]
        self.pending = [m for m in kept if self.tiling.reaches_later(tile, m.box)]
        return self._finish(final)

    def found(self, tile: TileWindow) -> np.ndarray:
        """(H, W) of ``tile``: the pixels of pending parcels that a window saw whole (not
        cut) and that rate at least ``min_score``, i.e. parcels no grid point in them needs
        to find again (:func:`window_masks`). A cut piece is left out: only a window that
        reaches beyond it can continue it, and that takes a point inside it."""
        found = np.zeros(tile.shape, bool)
        for mask in self.pending:
            if not mask.cut and (self.min_score is None or mask.score >= self.min_score):
                paint(found, mask, tile.origin)
        return found

    def flush(self) -> list[AutoMask]:
        """The masks still pending (all final once every window has been added)."""
        final, self.pending = self.pending, []
        return self._finish(final)

    def _join(
        self, near: list[AutoMask], masks: list[AutoMask]
    ) -> tuple[list[AutoMask], list[AutoMask]]:
        """Each pending mask in ``near`` joined with the new ``masks`` that continue it (one
        of the two cut by a window edge, and alike where both were seen), transitively: a
        parcel seen in two pieces by earlier windows may be joined through a new one. Returns
        the pending masks left alone and the new masks, joined ones among them."""
        group = list(range(len(near) + len(masks)))  # union-find over near + masks

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for i, old in enumerate(near):
            for j, new in enumerate(masks, start=len(near)):
                # a fine-pass parcel only fills ground the first pass left (a Dask client's
                # merge meets both): it continues no first-pass piece
                fine = old.fine or new.fine
                if (old.cut or new.cut) and not fine and seen_alike(old, new, self.params.nms_iou):
                    group[root(j)] = root(i)
        members: dict[int, list[AutoMask]] = {}
        for i, mask in enumerate([*near, *masks]):
            members.setdefault(root(i), []).append(mask)
        alone = [near[i] for i in range(len(near)) if len(members[root(i)]) == 1]
        joined = [
            replace(whole, mask=fill_holes(whole.mask, self.params.min_hole_px))
            for pieces in members.values()
            if len(pieces) > 1
            for whole in [join(pieces)]
        ]
        singles = [m for j, m in enumerate(masks, start=len(near)) if len(members[root(j)]) == 1]
        return alone, [*singles, *joined]

    def _finish(self, final: list[AutoMask]) -> list[AutoMask]:
        """The final parcels, carved into a coverage if asked, less those too small."""
        if self.min_score is not None:
            low = [m.score < self.min_score for m in final]
            self.dropped[reasons.BELOW_SCORE] += sum(low)
            final = [m for m, below in zip(final, low, strict=True) if not below]
        pieces = [not self.params.keep_open_pieces and open_piece(m, self.area) for m in final]
        self.dropped[reasons.OPEN_PIECE] += sum(pieces)
        final = [m for m, piece in zip(final, pieces, strict=True) if not piece]
        if self.params.coverage:
            final, self.pending = claim(final, self.pending)
        small = [m.area < max(self.params.min_area_px, 1) for m in final]
        self.dropped["area"] += sum(small)
        return [m for m, too_small in zip(final, small, strict=True) if not too_small]


def fine_params(params: AutoParams) -> AutoParams:
    """The fine pass's settings from the first pass's ``params``: its filters are
    ``params.fine_pred_iou_thresh`` and ``fine_stability_thresh`` where set (the model's,
    tuned on its val split), else :data:`FINE_STRICTER` above the first pass's; a fine window
    covers a quarter of a window's ground, so about half the points per side keep the first
    pass's spacing on the ground (as many parcels as the full grid found on NAIP, at half the
    decoder calls: docs/benchmarks.md, session 12)."""
    pred_iou, stability = params.fine_pred_iou_thresh, params.fine_stability_thresh
    return replace(
        params,
        points_per_side=params.points_per_side // 2 + 1,
        pred_iou_thresh=min(1.0, params.pred_iou_thresh + FINE_STRICTER)
        if pred_iou is None
        else pred_iou,
        stability_thresh=min(1.0, params.stability_thresh + FINE_STRICTER)
        if stability is None
        else stability,
    )


def fine_pass(
    tiling: Tiling,
    params: AutoParams,
    parcels: Sequence[AutoMask],
    candidates: Callable[[TileWindow, AutoParams, np.ndarray], list[AutoMask]],
    area: GridBox | None = None,
    min_score: float | None = None,
    dropped: Counter[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[AutoMask]:
    """The fine pass: automatic mode again over ``area`` (grid pixels, by default the
    raster), with the windows of :meth:`Tiling.fine` read at :data:`FINE_ZOOM` times the
    grid's resolution and their logits pooled back to it, prompted only where none of
    ``parcels`` (the first pass, at the model's own scale) lies; the parcels it finds that
    mostly lie on ground ``parcels`` left uncovered, less what they share with it, marked
    ``fine``. ``candidates(window, fine params, seen)`` gives a fine window's masks that pass
    the filters with the points on ``seen`` pixels skipped (the model,
    :meth:`AutoSegmenter.fine_candidates`, or, to tune the filters, candidates decoded once).
    A block of a region passes its own ``area``: its fine windows are those starting in it.

    Why: the decoder's masks are a quarter of its input's resolution, so a parcel 20-50 grid
    pixels across is a few mask pixels at the model's scale and mostly missed (fields under
    0.3 ha on NAIP at 1 m); at twice the resolution it is twice that. Parcels the first pass
    found keep their ground: a fine mask ranks below them.
    """
    dropped = Counter() if dropped is None else dropped
    fine = tiling.fine(params.overlap)
    area = tiling.extent if area is None else area
    width, height = area[2] - area[0], area[3] - area[1]
    covered = AutoMask(area, np.zeros((height, width), bool), 0.0, 0.0)
    for parcel in parcels:
        paint(covered.mask, parcel, area[:2])
    params = fine_params(params)
    merger = MaskMerger(fine, params, min_score, area)
    found: list[AutoMask] = []
    windows = [
        tile
        for tile in fine.windows()
        if area[0] <= tile.origin[0] < area[2] and area[1] <= tile.origin[1] < area[3]
    ]
    for done, tile in enumerate(windows):
        if cancelled is not None and cancelled():
            return []
        seen = crop(covered, tile.box) | merger.found(tile)
        found += merger.add(tile, candidates(tile, params, seen))
        if progress is not None:
            progress(done + 1, len(windows))
    found += merger.flush()
    dropped.update(merger.dropped)
    kept = []
    for parcel in sorted(found, key=lambda m: m.rank, reverse=True):
        free = parcel.mask & ~crop(covered, parcel.box)
        area_free = np.count_nonzero(free)
        if area_free < (1 - FINE_MAX_COVERED) * parcel.area or area_free < params.min_area_px:
            dropped[reasons.FINE_COVERED] += 1
            continue
        kept.append(replace(tightened(parcel, free), fine=True))
        paint(covered.mask, kept[-1], area[:2])
    return kept


class AutoSegmenter:
    """Automatic mode over one raster: the tiling, and :meth:`masks`, the loop over it.

    ``params.min_area_px`` and ``params.min_hole_px`` are replaced by ``min_area_m2`` and
    ``min_hole_m2`` on the tiling's grid (:func:`raster_tiling`); ``min_score`` drops final
    parcels the decoder rates lower. :attr:`dropped` counts the masks dropped, by reason;
    :attr:`encoded` the windows; :attr:`prompts` the points decoded. :attr:`grid_transform`
    is the tiling grid's geotransform: a mask whose box starts at grid pixel (x, y) is
    polygonized at those integer offsets and then mapped through it, so that parcels traced
    from different boxes share the coordinates of every grid vertex exactly.
    """

    def __init__(
        self,
        model: SamModel,
        reader: RasterReader,
        params: AutoParams,
        min_area_m2: float = DEFAULT_MIN_AREA_M2,
        min_score: float | None = None,
        max_upsample: float = WindowParams.max_upsample,
        min_hole_m2: float = 0.0,
    ) -> None:
        width, height = reader.size
        self.tiling, self.params = raster_tiling(
            reader.size,
            reader.pixel_size_m(width / 2, height / 2),
            model.ground_resolution_m,
            model.input_size,
            params,
            min_area_m2,
            max_upsample,
            min_hole_m2,
        )
        self.model = model
        self.reader = reader
        self.min_score = min_score
        self.dropped: Counter[str] = Counter()
        self.encoded = 0
        self.prompts = 0
        self.grid_transform = self.tiling.transform(reader.geotransform, 0, 0)

    def masks(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[AutoMask]:
        """Every final parcel as a mask on the tiling grid (:attr:`grid_transform`).

        ``progress(done, total)`` is called after each window; ``cancelled()`` is asked
        before each, and stops the loop at once (the masks still pending are not handed out).
        """
        fine = self.params.fine_pass
        total = len(self.tiling) + (len(self.tiling.fine(self.params.overlap)) if fine else 0)
        merger = MaskMerger(self.tiling, self.params, self.min_score)
        parcels: list[AutoMask] = []  # the fine pass needs the first pass's, all of them
        for done, tile in enumerate(self.tiling.windows()):
            if cancelled is not None and cancelled():
                return
            found = merger.found(tile) if self.params.skip_found else None
            final = merger.add(tile, self.candidates(tile, found))
            if fine:
                parcels += final
            else:
                yield from final
            if progress is not None:
                progress(done + 1, total)
        final = merger.flush()
        self.dropped.update(merger.dropped)
        if not fine:
            yield from final
            return
        parcels += final
        yield from parcels

        def fine_progress(done: int, _: int) -> None:
            if progress is not None:
                progress(len(self.tiling) + done, total)

        yield from self.fine_parcels(parcels, None, fine_progress, cancelled)

    def fine_parcels(
        self,
        parcels: Sequence[AutoMask],
        area: GridBox | None = None,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[AutoMask]:
        """:func:`fine_pass` over this raster (or a block's ``area`` of it), its windows read
        and decoded here (:meth:`fine_candidates`)."""
        return fine_pass(
            self.tiling, self.params, parcels, self.fine_candidates, area, self.min_score,
            self.dropped, progress, cancelled,
        )  # fmt: skip

    def fine_candidates(
        self, tile: TileWindow, params: AutoParams, seen: np.ndarray
    ) -> list[AutoMask]:
        """A fine window read at :data:`FINE_ZOOM` times its grid size, encoded and prompted
        where ``seen`` ((H, W) of ``tile``: parcels found) is not; not encoded at all when
        every point of its grid is seen."""
        height, width = tile.shape
        points = point_grid(params.points_per_side, (height * FINE_ZOOM, width * FINE_ZOOM))
        if next(unfound(points, seen, FINE_ZOOM), None) is None:
            return []
        embedding = self.model.encode(self.reader.read(zoomed(tile.window, FINE_ZOOM)))
        self.encoded += 1
        masks, decoded = window_masks(
            self.model, embedding, tile, params, self.reader.valid(tile.window), self.dropped,
            seen, FINE_ZOOM,
        )  # fmt: skip
        self.prompts += decoded
        return masks

    def candidates(self, tile: TileWindow, found: np.ndarray | None = None) -> list[AutoMask]:
        """``tile`` read, encoded and prompted with its point grid: the masks that pass the
        filters (:func:`window_masks`; ``found``: pixels of parcels earlier windows found),
        before duplicates and joins, which are :class:`MaskMerger`'s."""
        embedding = self.model.encode(self.reader.read(tile.window))
        self.encoded += 1
        valid = self.reader.valid(tile.window)
        masks, decoded = window_masks(
            self.model, embedding, tile, self.params, valid, self.dropped, found
        )
        self.prompts += decoded
        return masks
