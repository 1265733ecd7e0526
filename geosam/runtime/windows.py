"""Prompt-centred windows: which part of a raster to read for a prompt, and at what size.

Windows are centred on the prompts rather than cut from a fixed grid of chips: a parcel that
crosses a chip border would otherwise be seen in two halves, and SAM segments what it sees.
A window is the model's whole input footprint (S x S model pixels at the model's ground
resolution) centred on the prompts' bounding box, because the encoder costs the same for any
window up to S: a smaller one would only add padding. Near the raster edge it is shifted
inward rather than padded, so the prompt keeps as much context as the raster has; where the
raster is narrower than the footprint, the window is the whole raster in that direction and
the image is padded bottom-right, as SAM pads. (A raster smaller than the footprint in both
directions is then enlarged to S by SAM's own longest-side resize, as ``SamPredictor`` does.)

Resampling brings one model pixel to about the model's ground resolution, per axis, so a
raster with non-square ground pixels (a geographic CRS away from the equator) becomes square
pixels. Rasters coarser than the model are upsampled at most :attr:`WindowParams.max_upsample`
times (beyond that interpolation invents nothing SAM can use, and the window covers more
ground instead). A prompt box that does not fit the footprint with its margin (a parcel
larger than S model pixels) is downsampled further, as far as it takes: no parcel is too
large for a prompt. A point on a parcel larger than its window gives a mask cut by the
window's edge; :func:`cut_by_window` tells, and the prompt loop then asks again on a window
sized to the mask (:meth:`.segmenter.PromptSegmenter.grow`).

Coordinates: "pixel" coordinates are continuous in the source raster's grid, (0, 0) at the
top-left corner of the top-left pixel, x to the right (columns), y down (rows), as GDAL's;
"output" coordinates are the same in the resampled window image. Affine transforms are
6-tuples in GDAL's geotransform order ``(x0, dx/dcol, dx/drow, y0, dy/dcol, dy/drow)``, the
order QGIS and ``osgeo.gdal`` use (rasterio's ``Affine`` is ``(a, b, c, d, e, f)`` =
``(t[1], t[2], t[0], t[4], t[5], t[3])`` of a geotransform ``t``). SAM's own convention puts
pixel centres at integers; :func:`sam_coords` converts. Geographic rasters need no special
case here: the caller passes the pixel size in metres at the prompt, and everything below is
pixel math.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import GeosamError

GeoTransform = tuple[float, float, float, float, float, float]
# (x1, y1, x2, y2) in pixel or output coordinates.
Box = tuple[float, float, float, float]


def pixel_to_map(transform: GeoTransform, xy: np.ndarray) -> np.ndarray:
    """(..., 2) pixel coordinates → map coordinates through a GDAL geotransform."""
    xy = np.asarray(xy, dtype=np.float64)
    col, row = xy[..., 0], xy[..., 1]
    x = transform[0] + col * transform[1] + row * transform[2]
    y = transform[3] + col * transform[4] + row * transform[5]
    return np.stack([x, y], axis=-1)


def map_to_pixel(transform: GeoTransform, xy: np.ndarray) -> np.ndarray:
    """(..., 2) map coordinates → pixel coordinates: the inverse of :func:`pixel_to_map`."""
    xy = np.asarray(xy, dtype=np.float64)
    dx, dy = xy[..., 0] - transform[0], xy[..., 1] - transform[3]
    det = transform[1] * transform[5] - transform[2] * transform[4]
    col = (transform[5] * dx - transform[2] * dy) / det
    row = (transform[1] * dy - transform[4] * dx) / det
    return np.stack([col, row], axis=-1)


def sam_coords(xy: np.ndarray) -> np.ndarray:
    """Continuous (corner-origin) coordinates → SAM's, where pixel centres are integers."""
    return np.asarray(xy, dtype=np.float64) - 0.5


@dataclass(frozen=True)
class WindowParams:
    """How much context a prompt gets, and how far resampling may go.

    ``margin`` is the least context on each side of the prompt box, as a fraction of the box
    size, plus ``min_margin_px`` model pixels (so a single point still gets context); the
    window is usually much larger (the whole footprint), these only matter for huge boxes and
    for deciding whether a cached window can answer a new prompt. ``max_grow`` bounds how
    many times a mask cut by its window's edge is asked for again on a larger window.
    """

    margin: float = 0.25
    min_margin_px: float = 16.0
    max_upsample: float = 2.0
    max_grow: int = 4


@dataclass(frozen=True)
class Window:
    """A pixel window of the source raster and the (height, width) it is resampled to."""

    col_off: int
    row_off: int
    width: int
    height: int
    out_height: int
    out_width: int

    @property
    def key(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.col_off,
            self.row_off,
            self.width,
            self.height,
            self.out_height,
            self.out_width,
        )

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per output pixel, (x, y); above 1 is downsampling."""
        return self.width / self.out_width, self.height / self.out_height

    def pixel_to_output(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) source pixel coordinates → output coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - (self.col_off, self.row_off)) / self.scale

    def output_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) output coordinates → source pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * self.scale + (self.col_off, self.row_off)

    def transform(self, raster_transform: GeoTransform) -> GeoTransform:
        """The geotransform of the output image, from the source raster's."""
        x0, y0 = pixel_to_map(raster_transform, (self.col_off, self.row_off))
        sx, sy = self.scale
        t = raster_transform
        return (float(x0), t[1] * sx, t[2] * sy, float(y0), t[4] * sx, t[5] * sy)

    def contains(
        self, box: Box, margin: float = 0.0, raster_size: tuple[int, int] | None = None
    ) -> bool:
        """Whether ``box`` (pixel coordinates) grown by ``margin`` pixels lies inside.

        With ``raster_size`` (width, height), the grown box is first clipped to the raster:
        a window at the raster edge cannot have context beyond it, and need not.
        """
        x1, y1, x2, y2 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
        if raster_size is not None:
            x1, y1 = max(x1, 0.0), max(y1, 0.0)
            x2, y2 = min(x2, raster_size[0]), min(y2, raster_size[1])
        return (
            x1 >= self.col_off
            and y1 >= self.row_off
            and x2 <= self.col_off + self.width
            and y2 <= self.row_off + self.height
        )


def prompt_box(points: np.ndarray | None = None, box: Box | None = None) -> Box:
    """The bounding box (pixel coordinates) of a prompt's points and box together."""
    corners = [] if points is None else [np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    if box is not None:
        corners.append(np.asarray(box, dtype=np.float64).reshape(2, 2))
    if not corners:
        raise ValueError("a prompt needs points or a box")
    stacked = np.concatenate(corners)
    x1, y1 = stacked.min(axis=0)
    x2, y2 = stacked.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def prompt_window(
    box: Box,
    raster_size: tuple[int, int],
    pixel_size_m: tuple[float, float],
    ground_resolution_m: float | None,
    input_size: int,
    params: WindowParams = WindowParams(),
) -> Window:
    """The window to read for a prompt whose bounding box is ``box`` (pixel coordinates).

    ``raster_size`` is (width, height); ``pixel_size_m`` the raster's (x, y) pixel size in
    metres (positive; for a geographic CRS, measured at the prompt); ``ground_resolution_m``
    the model's metres per pixel, None to keep the raster's. Raises GeosamError for a box
    outside the raster.
    """
    width, height = raster_size
    x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
    x2, y2 = min(box[2], float(width)), min(box[3], float(height))
    if x1 > x2 or y1 > y2:
        raise GeosamError(f"prompt at pixels {box} is outside the {width}x{height} raster")
    scale = [1.0, 1.0]
    if ground_resolution_m is not None:
        scale = [ground_resolution_m / size for size in pixel_size_m]
    scale = [max(s, 1.0 / params.max_upsample) for s in scale]
    # The output size the prompt box needs with its margin, at this scale.
    needed = max(
        (extent / s) * (1.0 + 2.0 * params.margin) + 2.0 * params.min_margin_px
        for extent, s in ((x2 - x1, scale[0]), (y2 - y1, scale[1]))
    )
    if needed > input_size:
        scale = [s * needed / input_size for s in scale]
    cols = _span((x1 + x2) / 2.0, input_size * scale[0], width)
    rows = _span((y1 + y2) / 2.0, input_size * scale[1], height)
    out_w = min(input_size, max(1, round((cols[1] - cols[0]) / scale[0])))
    out_h = min(input_size, max(1, round((rows[1] - rows[0]) / scale[1])))
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0], out_h, out_w)


def _span(centre: float, extent: float, limit: int) -> tuple[int, int]:
    """Integer [start, stop) of ``extent`` pixels centred on ``centre``, shifted inside
    [0, limit), or all of it when ``extent`` does not fit."""
    if extent >= limit:
        return 0, limit
    start = min(max(centre - extent / 2.0, 0.0), limit - extent)
    return math.floor(start), min(limit, math.ceil(start + extent))


def cut_by_window(mask: np.ndarray, window: Window, raster_size: tuple[int, int]) -> bool:
    """Whether ``mask`` (the window's output grid) reaches an edge of ``window`` that lies
    inside the raster: the parcel may go on beyond it, unseen."""
    width, height = raster_size
    cols, rows = mask.any(axis=0), mask.any(axis=1)
    return bool(
        (window.col_off > 0 and cols[0])
        or (window.row_off > 0 and rows[0])
        or (window.col_off + window.width < width and cols[-1])
        or (window.row_off + window.height < height and rows[-1])
    )
