"""Opening and validating the input rasters of ``geosam tile``.

Every check that can fail on a user's file happens here, before any output is written, so a bad
raster stops the run with one line naming the file instead of a traceback half-way through.
"""

from __future__ import annotations

import glob
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Geod
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geosam.data.tiling.stretch import compute_stretch
from geosam.runtime.stretch import Stretch
from geosam.utils.errors import GeosamError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg")


@dataclass(frozen=True)
class RasterSource:
    """What the tiler needs to know about one input raster (picklable, sent to workers)."""

    path: str
    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    bands: tuple[int, ...]
    has_mask: bool
    stretch: Stretch
    resolution_m: tuple[float, float]

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the raster's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.affine)

    def to_manifest(self) -> dict:
        """The record of this source in the dataset manifest (JSON-serialisable)."""
        record = asdict(self)
        record.pop("crs_wkt")
        record["crs"] = self.crs.to_string()
        record["crs_wkt"] = self.crs_wkt
        record["stretch"] = self.stretch.to_dict()
        return record


def expand_raster_paths(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Turn files, folders and glob patterns (one, or a sequence) into a sorted,
    de-duplicated list of rasters."""
    found: list[Path] = []
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        path = Path(item)
        item = str(item)
        if path.is_dir():
            matches = [p for p in sorted(path.iterdir()) if p.suffix.lower() in RASTER_SUFFIXES]
            if not matches:
                raise GeosamError(
                    f"raster folder {item} holds no raster files ({', '.join(RASTER_SUFFIXES)})"
                )
        elif path.exists():
            matches = [path]
        elif glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            if not matches:
                raise GeosamError(f"raster pattern {item} matches no files")
        else:
            raise GeosamError(f"raster {item} does not exist")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise GeosamError("no input rasters given")
    return unique


def open_source(path: Path, bands: Sequence[int] | None) -> RasterSource:
    """Validate one raster and describe it, computing its uint8 stretch from a sample."""
    try:
        with warnings.catch_warnings():
            # reported below as one actionable line, not as rasterio's warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise GeosamError(f"cannot read raster {path}: {_first_line(exc)}") from None
    with ds:
        if ds.crs is None:
            raise GeosamError(
                f"raster {path} has no CRS: assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX)"
            )
        if ds.transform == Affine.identity() and not ds.gcps[0]:
            raise GeosamError(
                f"raster {path} has no geotransform: "
                "georeference it (e.g. with gdal_translate -a_ullr)"
            )
        if ds.transform.b != 0 or ds.transform.d != 0:
            raise GeosamError(
                f"raster {path} is rotated: warp it north-up first (gdalwarp {path.name} out.tif)"
            )
        selected = select_bands(ds, bands, path)
        has_mask = any(MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in selected)
        try:
            stretch = compute_stretch(ds, selected)
        except RasterioIOError as exc:
            raise GeosamError(f"cannot read pixels of raster {path}: {_first_line(exc)}") from None
        return RasterSource(
            path=str(path),
            crs_wkt=ds.crs.to_wkt(),
            transform=tuple(ds.transform)[:6],
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=None if ds.nodata is None else float(ds.nodata),
            bands=tuple(selected),
            has_mask=has_mask,
            stretch=stretch,
            resolution_m=ground_resolution(
                CRS.from_wkt(ds.crs.to_wkt()), ds.transform, ds.width, ds.height
            ),
        )


def select_bands(ds: rasterio.DatasetReader, bands: Sequence[int] | None, path: Path) -> list[int]:
    """Pick the 1 or 3 bands that become the RGB chip.

    Without ``--bands``: a 1-band raster is replicated to grey RGB, a raster whose colour
    interpretation names red, green and blue uses those (RGBN imagery gives RGB), and any other
    raster with at least 3 bands uses its first three.
    """
    if bands:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise GeosamError(
                f"--bands {','.join(map(str, bands))}: raster {path} has bands 1..{ds.count}"
            )
        if len(bands) not in (1, 3):
            raise GeosamError(f"--bands takes 1 or 3 band numbers, got {len(bands)}")
        return list(bands)
    if ds.count == 1:
        return [1]
    interp = list(ds.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in rgb):
        return [interp.index(c) + 1 for c in rgb]
    if ds.count >= 3:
        return [1, 2, 3]
    raise GeosamError(
        f"raster {path} has {ds.count} bands: choose 1 or 3 of them with --bands (e.g. --bands 1)"
    )


def ground_resolution(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Pixel size in metres (x, y), geodesic at the raster centre for geographic CRSs."""
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        cx, cy = transform * (width / 2, height / 2)
        _, _, dx = geod.inv(cx, cy, cx + transform.a, cy)
        _, _, dy = geod.inv(cx, cy, cx, cy + transform.e)
        return (abs(dx), abs(dy))
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return (abs(transform.a) * factor, abs(transform.e) * factor)


def describe_sources(paths: Iterable[Path], bands: Sequence[int] | None) -> list[RasterSource]:
    """Open and validate every raster up front; the first bad one stops the run."""
    return [open_source(p, bands) for p in paths]


def median_resolution(sources: Sequence[RasterSource], weights: Sequence[int]) -> float:
    """The dataset's ground resolution (m/px): the tile-weighted median of the sources'."""
    values = np.array([math.sqrt(s.resolution_m[0] * s.resolution_m[1]) for s in sources])
    w = np.asarray(weights, dtype=float)
    if w.sum() == 0:
        return float(np.median(values))
    order = np.argsort(values)
    cumulative = np.cumsum(w[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
