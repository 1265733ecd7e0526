"""A synthetic aerial farmland scene with exact parcel labels: ``scene.tif`` + ``parcels.gpkg``.

The tiler, the training loop, the exporter and the benchmarks all need a georeferenced raster
whose parcel polygons are exactly right, at any size, on any machine, with nothing to download.
Real imagery (``../shared/data``) cannot ship with the tests and its labels are hand-drawn, so
the scene is generated instead. To be a fair stand-in it has to *look* like aerial imagery:
roads, tracks, hedges and grass margins split the land into fields; every field grows a crop with
its own colour, row direction and spacing, tramlines, headland and patchy vigour; trees and
buildings cast shadows. The labels are the field areas inside those boundaries, so a model
trained on the scene has to learn to stop at a hedge, not at a colour change.

Two things keep it cheap at 10,000² px and more. The geometry is a few thousand vector shapes
built with vectorised shapely 2 calls. The raster is painted one window at a time: each window
rasterises only the shapes that touch it, and every texture is a function of global pixel
coordinates and per-shape parameters (never of a per-window random draw), so windows join
without seams and memory does not grow with the raster.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.features import rasterize
from rasterio.transform import array_bounds
from rasterio.windows import Window
from scipy import ndimage
from scipy.spatial import Voronoi
from tqdm import tqdm

from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_files

__all__ = ["SceneFiles", "make_scene"]

_Geoms = shapely.Geometry | np.ndarray  # one geometry or an array of them

# Painting step in pixels: big enough that the per-window overhead (shape lookup, padding) is
# small, small enough that a window's float32 temporaries stay around 100 MB.
_WINDOW = 1024
_TILE = 256
# Upper-left corner of the scene: farmland north of the Danube in Lower Austria, UTM zone 33N.
_WEST, _NORTH = 520_000.0, 5_350_000.0
# One ground step towards the sun, in (row, col): a mid-morning sun in the south-east, so
# shadows fall to the north-west, as in most summer orthophotos of the northern hemisphere.
_SUN = (np.sqrt(0.5), np.sqrt(0.5))
# Shadow length per metre of height (sun about 48 degrees above the horizon).
_SHADOW_PER_M = 0.9
# Widest headland in metres; distances to field edges up to this are measured within a window's
# padding, so the padding is at least this wide.
_HEADLAND_M = 16.0
# Shadows keep more blue than red (sky light), and a little haze lifts the darks as in real
# orthophotos.
_SHADOW_DEPTH = (0.55, 0.5, 0.4)
_HAZE = (8.0, 9.0, 11.0)
# Painting runs in threads, but rasterio's rasterize is not reliably thread-safe: run
# concurrently, it now and then loses a window's geotransform (NotGeoreferencedWarning). So one
# thread rasterises at a time; it is a small part of painting a window.
_RASTERIZE_LOCK = threading.Lock()
# Orthophotos are less saturated than the colours one would pick for each cover.
_SATURATION = 0.85


@dataclass(frozen=True)
class SceneFiles:
    """Where :func:`make_scene` wrote the scene."""

    raster: Path  # DIR/scene.tif
    labels: Path  # DIR/parcels.gpkg, layer "parcels"


@dataclass(frozen=True)
class _Material:
    """How one kind of ground cover looks; every shape draws its own variation around it.

    Colour is a blend of ``base`` and ``alt`` (crop and the soil between its rows, fresh and dry
    grass), moved by low-frequency noise (patchy vigour) and by the rows. Brightness is moved by
    low-frequency tone, metre-scale grain, the rows, tramlines, the headland and, for trees, a
    relief-shaded crown texture.
    """

    base: tuple[float, float, float]
    alt: tuple[float, float, float]
    mix: float = 0.0  # mean share of ``alt``
    mix_var: float = 0.0  # how far low-frequency noise moves that share
    tone: float = 0.1  # low-frequency brightness variation
    grain: float = 0.05  # metre-scale texture: clods, tussocks
    rows_m: tuple[float, float] = (3.0, 3.0)  # row or swath spacing range, metres
    rows: float = 0.0  # brightness amplitude of the rows
    rows_mix: float = 0.0  # how far the rows pull towards ``alt``
    sharp: float = 1.0  # 1: sinusoidal rows; 3: almost square swaths
    tramlines: float = 0.0  # probability that a field shows tramlines
    height_m: float = 0.0  # casts a shadow when above 0
    canopy: float = 0.0  # strength of the tree-crown texture


# Crop classes: the ``crop`` column of the labels, with how often each is drawn.
_CROPS: dict[str, tuple[float, _Material]] = {
    "wheat": (
        0.18,
        _Material(
            base=(192, 172, 112),
            alt=(136, 144, 88),
            mix=0.15,
            mix_var=0.5,
            rows_m=(3, 6),
            rows=0.04,
            tramlines=0.9,
        ),
    ),
    "stubble": (
        0.12,
        _Material(
            base=(210, 198, 158),
            alt=(176, 160, 124),
            mix=0.2,
            mix_var=0.4,
            grain=0.06,
            rows_m=(6, 12),
            rows=0.1,
            rows_mix=0.15,
            sharp=2.5,
            tramlines=0.3,
        ),
    ),
    "maize": (
        0.15,
        _Material(
            base=(56, 86, 44),
            alt=(122, 104, 80),
            mix=0.08,
            mix_var=0.35,
            grain=0.06,
            rows_m=(3, 4),
            rows=0.06,
            rows_mix=0.15,
        ),
    ),
    "sugar_beet": (
        0.1,
        _Material(
            base=(78, 120, 58),
            alt=(140, 120, 92),
            mix=0.12,
            mix_var=0.35,
            grain=0.07,
            rows_m=(3, 5),
            rows=0.06,
            rows_mix=0.2,
            tramlines=0.8,
        ),
    ),
    "rapeseed": (
        0.05,
        _Material(
            base=(212, 198, 88),
            alt=(118, 138, 72),
            mix=0.15,
            mix_var=0.5,
            rows_m=(3, 5),
            rows=0.03,
            tramlines=0.9,
        ),
    ),
    "grassland": (
        0.19,
        _Material(
            base=(118, 140, 82),
            alt=(170, 166, 116),
            mix=0.2,
            mix_var=0.45,
            grain=0.07,
            rows_m=(5, 10),
            rows=0.07,
            sharp=2.0,
        ),
    ),
    "ploughed": (
        0.13,
        _Material(
            base=(122, 106, 84),
            alt=(166, 150, 122),
            mix=0.3,
            mix_var=0.6,
            tone=0.12,
            grain=0.08,
            rows_m=(3, 5),
            rows=0.12,
            rows_mix=0.1,
            sharp=1.5,
        ),
    ),
    "fallow": (
        0.08,
        _Material(
            base=(132, 136, 96),
            alt=(112, 100, 80),
            mix=0.35,
            mix_var=0.7,
            tone=0.12,
            grain=0.12,
            rows_m=(4, 8),
            rows=0.02,
        ),
    ),
}

_TREES = _Material(base=(54, 72, 44), alt=(36, 52, 36), mix=0.3, mix_var=0.7, grain=0.0, canopy=0.3)
_ROOF = _Material(base=(0, 0, 0), alt=(0, 0, 0), tone=0.02, grain=0.01, height_m=6.0)
# Everything that is not a field. "verge" is also the bare ground under all shapes.
_COVERS: dict[str, _Material] = {
    "verge": _Material(base=(112, 130, 80), alt=(152, 150, 106), mix=0.3, mix_var=0.5, grain=0.12),
    "hedge": replace(_TREES, height_m=6.0),
    "woodland": replace(_TREES, height_m=15.0),
    "clump": replace(_TREES, height_m=11.0),
    "track": _Material(base=(172, 160, 134), alt=(120, 134, 86), mix=0.2, mix_var=0.5, grain=0.08),
    "asphalt": _Material(
        base=(120, 118, 114), alt=(98, 96, 94), mix=0.3, mix_var=0.5, tone=0.05, grain=0.03
    ),
    "water": _Material(
        base=(46, 62, 64), alt=(68, 84, 70), mix=0.3, mix_var=0.6, tone=0.05, grain=0.01
    ),
    "yard": _Material(base=(152, 148, 138), alt=(116, 126, 84), mix=0.25, mix_var=0.6, grain=0.08),
    "roof_tile": replace(_ROOF, base=(160, 86, 64), alt=(160, 86, 64)),
    "roof_grey": replace(_ROOF, base=(126, 126, 130), alt=(126, 126, 130)),
    "roof_metal": replace(_ROOF, base=(176, 178, 180), alt=(176, 178, 180)),
}
_MATERIALS = {**{name: mat for name, (_, mat) in _CROPS.items()}, **_COVERS}

# What separates land: (material, narrowest, widest in metres, probability).
_BLOCK_EDGES = (
    ("asphalt", 5.0, 6.5, 0.2),
    ("track", 3.0, 4.5, 0.45),
    ("hedge", 4.0, 8.0, 0.25),
    ("verge", 2.0, 3.0, 0.1),
)
_FIELD_EDGES = (("verge", 1.5, 3.0, 0.65), ("hedge", 3.5, 7.0, 0.2), ("track", 3.0, 4.0, 0.15))
# Farm buildings on a yard, as (centre x, centre y, width, depth) in fractions of the yard side.
_FARM = (
    (-0.12, 0.22, 0.62, 0.22),
    (0.24, -0.2, 0.3, 0.24),
    (-0.26, -0.18, 0.22, 0.3),
    (0.3, 0.2, 0.16, 0.16),
)


def make_scene(
    out_dir: Path,
    size: int = 2048,
    seed: int = 0,
    *,
    resolution: float = 1.0,
    crs: str = "EPSG:32633",
    field_size: float = 150.0,
    progress: bool = False,
) -> SceneFiles:
    """Write a synthetic farmland scene: an RGB GeoTIFF and the parcel polygons inside it.

    The same arguments always give a byte-identical raster, so tests and benchmarks can name a
    scene by its seed. The raster is ``size`` x ``size`` px of uint8 RGB at ``resolution`` m/px
    in ``crs`` (a projected CRS in metres), tiled 256 x 256 and zstd-compressed; the labels are
    the fields inside the roads, tracks, hedges and margins, clipped to the raster, with a
    unique ``parcel_id`` (1..n) and a ``crop`` class. Fields are about ``field_size`` metres
    across. Both files are written under temporary names and renamed when complete, so an
    interrupted run leaves no half-written scene behind. Memory stays bounded for any ``size``.
    """
    target_crs = _projected_crs(crs)
    if size < 64:
        raise GeosamError(f"scene size must be at least 64 px, got {size}")
    if not resolution > 0:
        raise GeosamError(f"resolution must be a positive number of metres, got {resolution}")
    if not field_size >= 20 * resolution:
        raise GeosamError(
            f"field_size {field_size} m is under 20 px at {resolution} m/px; fields would be "
            "too small to see: raise field_size or lower resolution"
        )
    out_dir = Path(out_dir)
    files = SceneFiles(out_dir / "scene.tif", out_dir / "parcels.gpkg")
    scene, parcels, crops = _build_scene(size, seed, resolution, field_size)
    with publish_files(out_dir) as staging:
        _write_raster(staging / files.raster.name, scene, size, target_crs, progress)
        bounds = shapely.box(*array_bounds(size, size, scene.transform))
        _write_labels(staging / files.labels.name, parcels, crops, bounds, target_crs, resolution)
    return files


def _build_scene(
    size: int, seed: int, resolution: float, field_size: float
) -> tuple[_Scene, np.ndarray, np.ndarray]:
    """Everything but the files: the paintable scene, the parcel shapes and their crops.

    Kept apart from :func:`make_scene` so that single windows can be painted and compared.
    """
    rng = np.random.default_rng(seed)
    extent = size * resolution
    layout = _layout(rng, extent, field_size)
    # Local metres (origin at the south-west corner) to map coordinates.
    offset = np.array([_WEST, _NORTH - extent])
    geoms = shapely.transform(layout.geoms, lambda xy: xy + offset)
    params, is_field = _paint_params(rng, layout.materials, layout.angles, resolution)
    scene = _Scene(
        geoms=geoms,
        tree=shapely.STRtree(geoms),
        params=params,
        is_field=is_field,
        noise_seeds=tuple(int(s) for s in rng.integers(0, 2**32, size=7)),
        transform=Affine.translation(_WEST, _NORTH) @ Affine.scale(resolution, -resolution),
        resolution=resolution,
    )
    return scene, geoms[layout.parcels], layout.materials[layout.parcels]


def _projected_crs(crs: str) -> CRS:
    """Field sizes, widths and the origin are in metres, so the CRS must be projected in metres."""
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as err:
        raise GeosamError(f"unknown CRS {crs!r}: give e.g. EPSG:32633") from err
    if not parsed.is_projected or parsed.axis_info[0].unit_name not in ("metre", "meter"):
        raise GeosamError(
            f"CRS {crs!r} is not projected in metres: give a UTM zone, e.g. EPSG:32633"
        )
    return parsed


# ---------------------------------------------------------------------------------------------
# Geometry, in local metres: x east and y north of the scene's south-west corner.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Every shape to paint, in painting order, and which of them are labelled parcels."""

    geoms: np.ndarray  # shapely geometries
    materials: np.ndarray  # material name per shape
    angles: np.ndarray  # direction of the rows per shape, radians anticlockwise from east
    parcels: np.ndarray  # indices of the fields


def _layout(rng: np.random.Generator, extent: float, field_size: float) -> _Layout:
    """Blocks of land between roads and tracks, subdivided into fields, with woods and features.

    Everything is built over the scene plus a margin of a field or more, so that fields cut by the
    raster border are still painted whole (no headland along the border) and shadows from just
    outside still fall inside.
    """
    margin = field_size + 2 * _HEADLAND_M  # at least the window padding, in metres
    region = shapely.box(-margin, -margin, extent + margin, extent + margin)
    blocks, edges, edge_cells = _blocks(rng, region, 3.5 * field_size)
    edge_half, edge_mats = _edge_kinds(rng, len(edges), _BLOCK_EDGES)
    edge_strips = shapely.buffer(edges, edge_half, quad_segs=4)
    insets = np.array(
        [
            shapely.difference(block, shapely.union_all(edge_strips[(edge_cells == i).any(axis=1)]))
            for i, block in enumerate(blocks)
        ]
    )
    roads, road_margins = _main_roads(rng, region, extent)
    woods = _pick_woods(rng, insets, extent)

    sizes = field_size * _drift(rng, shapely.get_coordinates(shapely.centroid(blocks)))
    fields, angles, strips, strip_mats = [], [], [], []
    for i in np.flatnonzero(~woods):
        subdivide = _grid_fields if rng.random() < 0.7 else _irregular_fields
        f, a, s, m = subdivide(rng, blocks[i], insets[i], sizes[i])
        fields.append(f)
        angles.append(a)
        strips.append(s)
        strip_mats.append(m)
    fields = np.concatenate(fields)
    angles = np.concatenate(angles)
    # Main roads cut through blocks; the fields they cross are split and keep a verge.
    crossed = shapely.intersects(fields, road_margins)
    fields[crossed] = shapely.difference(fields[crossed], road_margins)
    fields, part_of = shapely.get_parts(fields, return_index=True)
    angles = angles[part_of]
    keep = (shapely.area(fields) > 0.05 * field_size**2) & shapely.intersects(fields, region)
    fields, angles = fields[keep], angles[keep]
    fields, features, feature_mats, buildings, roof_mats = _holes(rng, fields, angles, extent)
    crops = rng.choice(list(_CROPS), size=len(fields), p=[p for p, _ in _CROPS.values()])

    layers = [
        (_ragged(rng, insets[woods]), np.full(woods.sum(), "woodland")),
        (np.concatenate(strips), np.concatenate(strip_mats)),
        (edge_strips, edge_mats),
        (roads, np.full(len(roads), "asphalt")),
        (fields, crops),
        (features, feature_mats),
        (buildings, roof_mats),
    ]
    geoms = np.concatenate([g for g, _ in layers])
    materials = np.concatenate([m for _, m in layers]).astype(object)
    first_field = sum(len(g) for g, _ in layers[:4])
    all_angles = rng.uniform(0, np.pi, len(geoms))
    all_angles[first_field : first_field + len(fields)] = angles
    shown = shapely.intersects(geoms, region) & ~shapely.is_empty(geoms)
    parcels = np.zeros(len(geoms), bool)
    parcels[first_field : first_field + len(fields)] = True
    return _Layout(
        geoms[shown], materials[shown], all_angles[shown], np.flatnonzero(parcels[shown])
    )


def _drift(rng: np.random.Generator, xy: np.ndarray) -> np.ndarray:
    """A factor of about 0.7 to 1.4 that wanders over kilometres: field sizes vary by region.

    Land is consolidated into large fields in some parts of a landscape and left in small
    strips in others; a uniform size would look like wallpaper in a 10 km scene.
    """
    heading = rng.uniform(0, 2 * np.pi, 3)
    waves = np.stack([np.cos(heading), np.sin(heading)]) / rng.uniform(3000, 6000, 3)
    wander = np.sin(2 * np.pi * xy @ waves + rng.uniform(0, 2 * np.pi, 3)).sum(axis=1)
    return 2.0 ** (0.45 * wander / np.sqrt(1.5))


def _blocks(
    rng: np.random.Generator, region: shapely.Geometry, spacing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi cells of a jittered grid: the blocks of land enclosed by the road network.

    Returns the cells that touch ``region``, the segments between neighbouring cells (the roads,
    tracks and hedges to come) and, per segment, the indices of the two cells it separates (-1
    for a cell outside the region).
    """
    lo, _, hi, _ = region.bounds
    # Two rings of seeds beyond the region keep every cell that touches it finite.
    ticks = np.arange(lo - 2 * spacing, hi + 2 * spacing, spacing)
    seeds = np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    seeds += rng.uniform(-0.35, 0.35, seeds.shape) * spacing
    vor = Voronoi(seeds)
    cells = np.array(
        [
            shapely.Polygon(vor.vertices[vor.regions[r]])
            if -1 not in vor.regions[r]
            else shapely.Polygon()
            for r in vor.point_region
        ]
    )
    inside = shapely.intersects(cells, region)
    index = np.where(inside, np.cumsum(inside) - 1, -1)
    segments, sides = [], []
    for (a, b), verts in zip(vor.ridge_points, vor.ridge_vertices, strict=True):
        if -1 not in verts and (inside[a] or inside[b]):
            segments.append(shapely.LineString(vor.vertices[verts]))
            sides.append((index[a], index[b]))
    return cells[inside], np.array(segments), np.array(sides)


def _edge_kinds(
    rng: np.random.Generator, n: int, table: tuple[tuple[str, float, float, float], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a kind of boundary for each of ``n`` edges: half its width and its material."""
    kind = rng.choice(len(table), size=n, p=[p for *_, p in table])
    lo = np.array([t[1] for t in table])[kind]
    hi = np.array([t[2] for t in table])[kind]
    return rng.uniform(lo, hi) / 2, np.array([t[0] for t in table])[kind]


def _main_roads(
    rng: np.random.Generator, region: shapely.Geometry, extent: float
) -> tuple[np.ndarray, shapely.Geometry]:
    """Long, gently curving asphalt roads that cross the whole scene, ignoring the blocks.

    Returns the road surfaces and, as one geometry, the surfaces plus a verge, which is what
    the fields they cross lose.
    """
    lo, _, hi, _ = region.bounds
    lines = []
    for _ in range(1 + int(extent // 3000)):
        # Through a point well inside the raster, wandering off both ways to the region's edge.
        through = rng.uniform(0.1, 0.9, 2) * extent
        heading = rng.uniform(0, np.pi)
        ahead, behind = (_wander(rng, through, heading + turn, lo, hi) for turn in (0, np.pi))
        lines.append(shapely.LineString(np.concatenate([behind[::-1], ahead[1:]])))
    half = rng.uniform(3.0, 4.0, len(lines))
    roads = shapely.buffer(lines, half, quad_segs=4)
    return roads, shapely.union_all(shapely.buffer(lines, half + 2.5, quad_segs=4))


def _wander(
    rng: np.random.Generator, start: np.ndarray, heading: float, lo: float, hi: float
) -> np.ndarray:
    """Points 40 m apart from ``start`` until they leave the [lo, hi] square.

    The heading drifts about its first value, as a country road's does.
    """
    mean, xy, points = heading, start, [start]
    while (xy >= lo).all() and (xy <= hi).all():
        heading += rng.normal(0, 0.05) + 0.05 * (mean - heading)
        xy = xy + 40.0 * np.array([np.cos(heading), np.sin(heading)])
        points.append(xy)
    return np.array(points)


def _pick_woods(rng: np.random.Generator, insets: np.ndarray, extent: float) -> np.ndarray:
    """Mark some blocks as woodland: background that is neither field nor road.

    About one block in twelve, but never more than a fifth of the raster (in a small scene one
    block can fill most of it); and if that leaves less than 3% wooded, the block whose share
    of the raster is closest to a tenth becomes woodland too, so every scene shows a wood.
    """
    overlap = shapely.area(shapely.intersection(insets, shapely.box(0, 0, extent, extent)))
    woods = np.zeros(len(insets), bool)
    for i in np.flatnonzero(rng.random(len(insets)) < 0.08):
        woods[i] = overlap[woods].sum() + overlap[i] <= 0.2 * extent**2
    if overlap[woods].sum() < 0.03 * extent**2:
        woods[np.argmin(np.abs(overlap - 0.1 * extent**2))] = True
    return woods


def _ragged(rng: np.random.Generator, woods: np.ndarray) -> np.ndarray:
    """Bite round clearings out of woodland edges, which are rarely as straight as the roads."""
    out = []
    for wood in woods:
        rim = shapely.boundary(wood)
        n = max(int(shapely.length(rim) / 40), 1)
        bites = shapely.buffer(
            shapely.line_interpolate_point(rim, rng.uniform(0, shapely.length(rim), n)),
            rng.uniform(4.0, 25.0, n),
        )
        out.append(shapely.difference(wood, shapely.union_all(bites)))
    return np.array(out, dtype=object)


def _long_axes(polys: np.ndarray) -> np.ndarray:
    """Angle of the long side of each polygon's minimum rotated rectangle."""
    rects = shapely.oriented_envelope(polys)
    coords, owner = shapely.get_coordinates(rects, return_index=True)
    first = np.searchsorted(owner, np.arange(len(polys)))
    side_a = coords[first + 1] - coords[first]
    side_b = coords[first + 2] - coords[first + 1]
    longer = np.where((np.hypot(*side_a.T) >= np.hypot(*side_b.T))[:, None], side_a, side_b)
    return np.arctan2(longer[:, 1], longer[:, 0])


def _cuts(
    rng: np.random.Generator, lo: float, hi: float, shortest: float, longest: float
) -> np.ndarray:
    """Split [lo, hi] into pieces of random length; the last piece is never a sliver."""
    ends = lo + np.cumsum(rng.uniform(shortest, longest, int((hi - lo) / shortest) + 2))
    return np.concatenate([[lo], ends[ends < hi - shortest / 2], [hi]])


def _grid_fields(
    rng: np.random.Generator, block: shapely.Geometry, inset: shapely.Geometry, field_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rectangular fields in strips along the block's long axis, as in consolidated farmland.

    The block is cut into strips, and each strip into fields at its own offsets; separators
    and cross cuts become margins, hedges or tracks. A few fields take in their neighbour across
    a separator and become L- or step-shaped. Returns the fields, their row directions, the
    boundary strips and their materials.
    """
    angle = _long_axes(np.array([block]))[0] + (np.pi / 2 if rng.random() < 0.25 else 0.0)
    to_local, to_map = _frame(block, angle, (1.0, 1.0))
    u0, v0, u1, v1 = to_local(block).bounds
    scale = field_size * rng.uniform(0.7, 1.4)

    v_cuts = _cuts(rng, v0, v1, 0.45 * scale, 1.0 * scale)
    sep_half, sep_mats = _edge_kinds(rng, len(v_cuts) - 2, _FIELD_EDGES)
    boxes = [(u0, v - h, u1, v + h) for v, h in zip(v_cuts[1:-1], sep_half, strict=True)]
    mats = list(sep_mats)
    v_half = np.concatenate([[0.0], sep_half, [0.0]])
    cells = []  # strip, then the field's inset box
    for j in range(len(v_cuts) - 1):
        u_cuts = _cuts(rng, u0, u1, 0.8 * scale, 2.4 * scale)
        cut_half, cut_mats = _edge_kinds(rng, len(u_cuts) - 2, _FIELD_EDGES)
        boxes += [
            (u - h, v_cuts[j], u + h, v_cuts[j + 1])
            for u, h in zip(u_cuts[1:-1], cut_half, strict=True)
        ]
        mats += list(cut_mats)
        u_half = np.concatenate([[0.0], cut_half, [0.0]])
        cells += [
            (
                j,
                u_cuts[i] + u_half[i],
                v_cuts[j] + v_half[j],
                u_cuts[i + 1] - u_half[i + 1],
                v_cuts[j + 1] - v_half[j + 1],
            )
            for i in range(len(u_cuts) - 1)
        ]
    cells = np.array(cells)
    polys = shapely.box(*cells[:, 1:].T)
    alive = np.ones(len(cells), bool)
    for a in np.flatnonzero(rng.random(len(cells)) < 0.12):
        above = np.flatnonzero((cells[:, 0] == cells[a, 0] + 1) & alive)
        if not alive[a] or above.size == 0:
            continue
        overlap = np.minimum(cells[above, 3], cells[a, 3]) - np.maximum(
            cells[above, 1], cells[a, 1]
        )
        b = above[np.argmax(overlap)]
        if overlap.max() < 0.3 * scale:
            continue
        bridge = shapely.box(
            max(cells[a, 1], cells[b, 1]), cells[a, 4], min(cells[a, 3], cells[b, 3]), cells[b, 2]
        )
        polys[a] = shapely.union_all([polys[a], polys[b], bridge])
        alive[b] = False
    fields = shapely.intersection(to_map(polys[alive]), inset)
    strips = (
        shapely.intersection(to_map(shapely.box(*np.array(boxes).T)), block)
        if boxes
        else np.array([], dtype=object)
    )
    return fields, np.full(len(fields), angle), strips, np.array(mats, dtype=object)


def _irregular_fields(
    rng: np.random.Generator, block: shapely.Geometry, inset: shapely.Geometry, field_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi cells of a jittered grid inside the block, as in older, unconsolidated land.

    The diagram is built in a frame stretched along the block's long axis and mapped back, so
    the cells are elongated like real fields rather than a honeycomb. Same return values as
    :func:`_grid_fields`; each cell's rows follow its own long axis.
    """
    stretch = rng.uniform(1.0, 2.2)
    cell = field_size * rng.uniform(0.8, 1.2) * np.array([stretch, 1 / stretch])
    to_local, to_map = _frame(block, _long_axes(np.array([block]))[0], cell)
    local = to_local(block)
    x0, y0, x1, y1 = local.bounds
    gx, gy = np.meshgrid(np.arange(np.floor(x0), x1), np.arange(np.floor(y0), y1))
    seeds = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(0.1, 0.9, (gx.size, 2))
    seeds = seeds[shapely.contains_xy(local, *seeds.T)]
    if len(seeds) < 2:
        fields = np.array([inset])
        return fields, _long_axes(fields), np.array([], dtype=object), np.array([], dtype=object)
    points = shapely.multipoints(seeds)
    cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=local))
    edges = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=local, only_edges=True))
    edges = shapely.intersection(to_map(edges), block)
    edges = edges[shapely.length(edges) > 0]
    half, mats = _edge_kinds(rng, len(edges), _FIELD_EDGES)
    strips = shapely.buffer(edges, half, quad_segs=4)
    fields = shapely.difference(
        shapely.intersection(to_map(cells), inset), shapely.union_all(strips)
    )
    return fields, _long_axes(fields), strips, mats


def _frame(
    block: shapely.Geometry, angle: float, scale: tuple[float, float] | np.ndarray
) -> tuple[Callable[[_Geoms], _Geoms], Callable[[_Geoms], _Geoms]]:
    """Maps into and out of a block's own frame: u along ``angle``, v across, each / ``scale``.

    Fields are laid out in that frame (strips along u, a Voronoi grid stretched along u) and
    mapped back; the maps are affine, so straight lines and convexity survive the round trip.
    """
    cos, sin = np.cos(angle), np.sin(angle)
    axes = np.array([[cos, -sin], [sin, cos]])  # columns: the u and v directions
    origin = shapely.get_coordinates(shapely.centroid(block))[0]
    scale = np.asarray(scale)

    def to_local(geoms: _Geoms) -> _Geoms:
        return shapely.transform(geoms, lambda xy: (xy - origin) @ axes / scale)

    def to_map(geoms: _Geoms) -> _Geoms:
        return shapely.transform(geoms, lambda uv: (uv * scale) @ axes.T + origin)

    return to_local, to_map


def _holes(
    rng: np.random.Generator, fields: np.ndarray, angles: np.ndarray, extent: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Put a pond, a clump of trees or a farmstead inside some fields, cut out of the parcel.

    Each feature sits in the field's largest inscribed circle with a grass ring around it, so the
    parcel gains an interior ring. If any field has room for a feature wholly inside the raster,
    at least one gets one, so that every scene but the smallest has a parcel with a hole.
    Returns the fields, the features and their materials, and the farm buildings and their roof
    materials.
    """
    circles = shapely.maximum_inscribed_circle(fields, tolerance=0.5)
    centres = shapely.get_coordinates(shapely.get_point(circles, 0))
    room = shapely.length(circles)
    fits = (
        (room >= 12)
        & (centres >= room[:, None]).all(axis=1)
        & (centres <= extent - room[:, None]).all(axis=1)
    )
    chosen = (rng.random(len(fields)) < 0.12) & (room >= 12)
    if fits.any() and not (chosen & fits).any():
        chosen[np.argmax(np.where(fits, room, 0))] = True
    idx = np.flatnonzero(chosen)
    radius = np.minimum(rng.uniform(0.35, 0.55, len(idx)) * room[idx], 45.0)
    kind = rng.choice(["water", "clump", "yard"], size=len(idx), p=[0.35, 0.4, 0.25])
    kind[(kind == "yard") & (radius < 25)] = "clump"

    blob = kind != "yard"
    t = np.linspace(0, 2 * np.pi, 65)[:-1]
    # Lobes of a few sizes: a lumpy pond shore, a crown-by-crown edge of the clump.
    lobes = np.array([2, 3, 5, 8, 13])[:, None]
    amp = rng.uniform(0, 1, (blob.sum(), 5, 1)) * np.array([0.1, 0.1, 0.08, 0.05, 0.04])[:, None]
    phase = rng.uniform(0, 2 * np.pi, (blob.sum(), 5, 1))
    wobble = 1 + (amp * np.sin(lobes * t + phase)).sum(axis=1)
    r = radius[blob, None] * wobble
    ring = centres[idx[blob], None, :] + np.stack([r * np.cos(t), r * np.sin(t)], axis=-1)

    features = np.empty(len(idx), dtype=object)
    features[blob] = shapely.polygons(ring)
    buildings, roofs = [], []
    for k in np.flatnonzero(~blob):
        side = 1.6 * radius[k]
        rot = np.array(
            [
                [np.cos(angles[idx[k]]), -np.sin(angles[idx[k]])],
                [np.sin(angles[idx[k]]), np.cos(angles[idx[k]])],
            ]
        )
        take = rng.random(len(_FARM)) < 0.8
        take[0] = True
        plan = np.array([(0, 0, 1, 1), *np.array(_FARM)[take]]) * side
        rects = shapely.box(
            plan[:, 0] - plan[:, 2] / 2,
            plan[:, 1] - plan[:, 3] / 2,
            plan[:, 0] + plan[:, 2] / 2,
            plan[:, 1] + plan[:, 3] / 2,
        )
        placed = shapely.transform(rects, lambda xy, rot=rot, k=k: xy @ rot.T + centres[idx[k]])
        features[k] = placed[0]
        buildings.append(placed[1:])
        roofs.append(rng.choice(["roof_tile", "roof_grey", "roof_metal"], size=len(placed) - 1))
    fields = fields.copy()
    fields[idx] = shapely.difference(fields[idx], shapely.buffer(features, 2.0, quad_segs=4))
    return (
        fields,
        features,
        kind,
        np.concatenate([np.array([], dtype=object), *buildings]),
        np.concatenate([np.array([], dtype=object), *roofs]),
    )


# ---------------------------------------------------------------------------------------------
# Painting.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """Everything a window needs to paint itself; row 0 of ``params`` is the bare ground."""

    geoms: np.ndarray  # in map coordinates, in painting order; shape i is painted as id i + 1
    tree: shapely.STRtree
    params: dict[str, np.ndarray]  # float32 per shape id
    is_field: np.ndarray  # bool per shape id
    noise_seeds: tuple[int, ...]
    transform: Affine
    resolution: float

    @property
    def shadow_steps(self) -> int:
        """Longest shadow in pixels."""
        return int(np.ceil(self.params["height"].max()))

    @property
    def pad(self) -> int:
        """Pixels painted around a window so its shadows, headlands and textures see beyond it."""
        return max(self.shadow_steps, int(np.ceil(_HEADLAND_M / self.resolution))) + 2


def _paint_params(
    rng: np.random.Generator, materials: np.ndarray, angles: np.ndarray, resolution: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw each shape's own look around its material: the per-shape half of every texture.

    Index 0 is the bare ground (verge) that shows wherever no shape is painted; shape i is
    index i + 1.
    """
    names = np.concatenate([["verge"], materials])
    angles = np.concatenate([[0.0], angles])
    n = len(names)
    mats = [_MATERIALS[m] for m in names]

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(m, attr) for m in mats], dtype=np.float64)

    is_field = np.isin(names, list(_CROPS))
    light = rng.normal(1.0, 0.09, (n, 1)) * rng.normal(1.0, 0.03, (n, 3))
    base, alt = col("base") * light, col("alt") * light
    base += (1 - _SATURATION) * (base.mean(axis=1, keepdims=True) - base)
    alt += (1 - _SATURATION) * (alt.mean(axis=1, keepdims=True) - alt)
    # Most fields are worked along their long side; some across it, a few at odd angles.
    turn = rng.choice([0.0, np.pi / 2, np.nan], size=n, p=[0.83, 0.1, 0.07])
    angles = np.where(np.isnan(turn), rng.uniform(0, np.pi, n), angles + np.nan_to_num(turn))
    lo, hi = col("rows_m").T
    spacing = np.maximum(rng.uniform(lo, hi), 3 * resolution)  # finer rows would alias
    sharp = col("sharp")
    norm = np.tanh(sharp)
    tone_turn = rng.uniform(0, 2 * np.pi, n)
    tramlines = rng.random(n) < col("tramlines")
    params = {
        "base_r": base[:, 0],
        "base_g": base[:, 1],
        "base_b": base[:, 2],
        "alt_r": alt[:, 0] - base[:, 0],
        "alt_g": alt[:, 1] - base[:, 1],
        "alt_b": alt[:, 2] - base[:, 2],
        "mix": col("mix") * rng.uniform(0.5, 1.5, n),
        "mix_var": col("mix_var") * rng.uniform(0.6, 1.4, n),
        # Each shape's own blend of two tone fields, so neighbours do not brighten together.
        "tone_a": col("tone") * rng.uniform(0.6, 1.4, n) * np.cos(tone_turn),
        "tone_b": col("tone") * rng.uniform(0.6, 1.4, n) * np.sin(tone_turn),
        "grain": col("grain") * rng.uniform(0.7, 1.3, n),
        # Unit vector across the rows in (col, row) pixel axes; rows run along `angles`.
        "across_x": -np.sin(angles),
        "across_y": -np.cos(angles),
        "row_freq": 1 / spacing,
        "row_phase": rng.uniform(0, 1, n),
        "sharp": sharp,
        "rows": col("rows") * rng.uniform(0.1, 1.1, n) / norm,
        "rows_mix": col("rows_mix") * rng.uniform(0.5, 1.2, n) / norm,
        "tram_m": rng.choice([18.0, 21.0, 24.0, 28.0, 36.0], size=n),
        "tram_phase": rng.uniform(0, 1, n),
        "tram": np.where(tramlines, rng.choice([-1, 1], size=n) * rng.uniform(0.05, 0.1, n), 0),
        "headland": np.where(is_field, 1 / rng.uniform(6.0, _HEADLAND_M, n), 0),  # 1 / width
        "headland_tone": np.where(is_field, rng.normal(0, 0.07, n), 0),
        "canopy": col("canopy"),
        "height": col("height_m") * rng.uniform(0.8, 1.2, n) * _SHADOW_PER_M / resolution,
    }
    return {k: v.astype(np.float32) for k, v in params.items()}, is_field


def _write_raster(path: Path, scene: _Scene, size: int, crs: CRS, progress: bool) -> None:
    """Paint the scene window by window into a tiled, compressed RGB GeoTIFF."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": scene.transform,
        "tiled": True,
        "blockxsize": _TILE,
        "blockysize": _TILE,
        "compress": "zstd",
        "predictor": 2,
        "photometric": "RGB",
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    windows = [
        Window(c, r, min(_WINDOW, size - c), min(_WINDOW, size - r))
        for r in range(0, size, _WINDOW)
        for c in range(0, size, _WINDOW)
    ]
    # Windows are painted in worker threads (numpy and scipy release the GIL) and written in
    # order by this one; at most one window per worker waits, which bounds memory.
    workers = min(4, os.cpu_count() or 1)
    # A small block cache: the windows are whole tiles, written once, so caching gains nothing
    # and GDAL's default (5% of RAM) would let memory grow with the raster.
    with (
        ThreadPoolExecutor(workers) as pool,
        rasterio.Env(GDAL_CACHEMAX=64),
        rasterio.open(path, "w", **profile) as dst,
        tqdm(total=len(windows), desc="synth", unit="window", disable=not progress) as bar,
    ):
        pending: deque[tuple[Window, Future[np.ndarray]]] = deque()

        def write_oldest() -> None:
            window, rgb = pending.popleft()
            dst.write(rgb.result(), window=window)
            bar.update()

        for window in windows:
            pending.append(
                (
                    window,
                    pool.submit(
                        _paint, scene, window.row_off, window.col_off, window.height, window.width
                    ),
                )
            )
            if len(pending) > workers:
                write_oldest()
        while pending:
            write_oldest()


def _paint(scene: _Scene, row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """RGB of one window, (3, height, width) uint8, from global coordinates only.

    The window is rasterised with a margin so that shadows and headland distances near its edge
    see the shapes beyond it; all noise is hashed from global pixel and lattice coordinates.
    """
    pad, res, p = scene.pad, scene.resolution, scene.params
    ids = _shape_ids(scene, row0 - pad, col0 - pad, height + 2 * pad, width + 2 * pad)
    rows = np.arange(row0 - pad, row0 + height + pad)
    cols = np.arange(col0 - pad, col0 + width + pad)
    north = ((rows + 0.5) * res).astype(np.float32)  # metres south of the north edge
    east = ((cols + 0.5) * res).astype(np.float32)  # metres east of the west edge
    seeds = scene.noise_seeds
    grain = _blobs(rows, cols, 0.9 / res, seeds[0])
    crowns = 0.8 * _blobs(rows, cols, 1.6 / res, seeds[5]) + 0.3 * _fbm(
        north, east, ((12.0, 1.0),), seeds[6]
    )
    shade = _shadows(np.take(p["height"], ids) * (1 + 0.4 * crowns), scene.shadow_steps)
    edge_m = ndimage.distance_transform_edt(scene.is_field[ids]).astype(np.float32)

    # From here on, the window plus one pixel all round, which the lens blur at the end eats.
    ring = (slice(pad - 1, pad + height + 1), slice(pad - 1, pad + width + 1))
    sunward = (slice(pad, pad + height + 2), slice(pad, pad + width + 2))
    relief = crowns[ring] - crowns[sunward]  # crown flanks facing the sun are positive
    ids, grain, crowns, shade = ids[ring], grain[ring], crowns[ring], shade[ring]
    edge_m = edge_m[ring] * np.float32(res)  # metres to the field's edge
    rows, cols = rows[ring[0]], cols[ring[1]]
    north, east = north[ring[0]], east[ring[1]]

    def take(name: str) -> np.ndarray:
        return np.take(p[name], ids)

    tone = _fbm(north, east, ((300.0, 0.5), (90.0, 0.3), (35.0, 0.2)), seeds[1])
    tone2 = _fbm(north, east, ((150.0, 0.6), (50.0, 0.4)), seeds[2])
    vigour = _fbm(north, east, ((70.0, 0.6), (25.0, 0.4), (9.7, 0.2)), seeds[3])
    across = east[None, :] * take("across_x") + north[:, None] * take("across_y")
    wave = np.cos(2 * np.pi * (across * take("row_freq") + take("row_phase")))
    crop_rows = np.tanh(take("sharp") * wave)
    turns = np.clip(1 - edge_m * take("headland"), 0, 1)
    turns = turns * turns * (3 - 2 * turns)  # the headland band, smooth
    tram_m = take("tram_m")
    lane = across / tram_m + take("tram_phase")
    off = np.abs(lane - np.rint(lane)) * tram_m  # metres from the nearest tramline's centre
    sigma = max(0.45, 0.6 * res)
    tram = np.exp(-np.square((off - 0.9) / sigma))  # the two wheel tracks, 1.8 m apart

    bright = 1 + take("tone_a") * tone + take("tone_b") * tone2 + take("grain") * grain
    # Rows fade in and out across a field and turn along its edge in the headland.
    bright += take("rows") * crop_rows * (1 - 0.7 * turns) * (1 + 0.8 * vigour)
    bright += take("tram") * tram * (1 - turns)
    bright += take("headland_tone") * turns
    # Tree crowns: lit on the sunny flank, with dark gaps where the canopy is low.
    gaps = np.clip(-crowns - 0.25, 0, None)
    bright += take("canopy") * (crowns + 3.0 * relief - 1.5 * gaps)
    mix = take("mix") + take("mix_var") * vigour + take("rows_mix") * crop_rows
    np.clip(mix, 0, 1, out=mix)
    speckle = 6.0 * _white(rows, cols, seeds[4])

    rgb = np.empty((3, height, width), np.uint8)
    for band, channel in enumerate("rgb"):
        value = take(f"base_{channel}") + take(f"alt_{channel}") * mix
        value *= bright
        value += speckle
        value *= 1 - _SHADOW_DEPTH[band] * shade
        rgb[band] = np.rint(np.clip(0.93 * _blur(value) + _HAZE[band], 0, 255))
    return rgb


def _blur(value: np.ndarray) -> np.ndarray:
    """The camera's soft point spread: a 3-tap blur each way, dropping the outer pixel ring."""
    value = 0.6 * value[1:-1] + 0.2 * (value[:-2] + value[2:])
    return 0.6 * value[:, 1:-1] + 0.2 * (value[:, :-2] + value[:, 2:])


def _shape_ids(scene: _Scene, row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """Per pixel, 1 + the index of the last shape painted over its centre (0: bare ground)."""
    transform = scene.transform @ Affine.translation(col0, row0)
    hits = np.sort(scene.tree.query(shapely.box(*array_bounds(height, width, transform))))
    if hits.size == 0:
        return np.zeros((height, width), np.int32)
    with _RASTERIZE_LOCK:
        return rasterize(
            zip(scene.geoms[hits], hits + 1, strict=True),
            out_shape=(height, width),
            transform=transform,
            fill=0,
            dtype="int32",
        )


def _shadows(height_px: np.ndarray, steps: int) -> np.ndarray:
    """Soft shadow mask in [0, 1]: ground with something taller between it and the sun."""
    rows, cols = height_px.shape
    cast = np.zeros(height_px.shape, bool)
    for k in range(1, steps + 1):
        dr, dc = round(k * _SUN[0]), round(k * _SUN[1])
        cast[: rows - dr, : cols - dc] |= height_px[dr:, dc:] >= k
    cast &= height_px == 0
    return ndimage.uniform_filter(cast.astype(np.float32), 3)


def _hash(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Uniform noise in [-1, 1) from integer coordinates (broadcast), the same in every window."""
    h = iy.astype(np.uint32) * np.uint32(0x85EBCA77) ^ ix.astype(np.uint32) * np.uint32(0x9E3779B1)
    h = h ^ np.uint32(seed % 2**32)
    # lowbias32 (Chris Wellons): every input bit reaches every output bit.
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h ^= h >> np.uint32(shift)
        h *= np.uint32(mult)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)


def _white(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """Per-pixel sensor-like noise, hashed from global pixel coordinates."""
    return _hash(rows[:, None], cols[None, :], seed)


def _blobs(rows: np.ndarray, cols: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Fine texture: per-pixel noise smoothed by a Gaussian of ``sigma`` px, std about 0.5.

    At a few pixels, lattice noise shows its lattice (its gradient vanishes at every lattice
    point, a grid that the eye picks up); smoothed white noise has no preferred spacing. The
    smoothing reaches 3 sigma, which the window padding (at least the headland width) covers.
    """
    impulse = np.zeros(2 * int(np.ceil(3 * sigma)) + 1)
    impulse[impulse.size // 2] = 1.0
    kept = np.square(ndimage.gaussian_filter1d(impulse, sigma, truncate=3.0)).sum()
    noise = ndimage.gaussian_filter(_white(rows, cols, seed), sigma, truncate=3.0)
    return noise * np.float32(0.5 / (np.sqrt(1 / 3) * kept))


def _fbm(
    north: np.ndarray, east: np.ndarray, octaves: tuple[tuple[float, float], ...], seed: int
) -> np.ndarray:
    """Sum of value-noise octaves, each ``(cell size in metres, weight)``, about [-1, 1].

    Value noise: random values on a global lattice, smoothly interpolated. The lattice values
    for the window are hashed from their global lattice indices, and the interpolation is
    separable, so an octave costs a few array operations however fine its lattice.
    """
    total = np.zeros((north.size, east.size), np.float32)
    for octave, (cell, weight) in enumerate(octaves):
        gy, gx = north / np.float32(cell), east / np.float32(cell)
        iy, ix = np.floor(gy).astype(np.int64), np.floor(gx).astype(np.int64)
        fy, fx = _smooth(gy - iy), _smooth(gx - ix)
        ly, lx = np.arange(iy[0], iy[-1] + 2), np.arange(ix[0], ix[-1] + 2)
        lattice = _hash(ly[:, None], lx[None, :], seed + 7919 * octave)
        jy, jx = iy - ly[0], ix - lx[0]
        across = lattice[:, jx] * (1 - fx) + lattice[:, jx + 1] * fx
        total += weight * 1.7 * (across[jy] * (1 - fy)[:, None] + across[jy + 1] * fy[:, None])
    return total


def _smooth(t: np.ndarray) -> np.ndarray:
    """Smoothstep, so value noise has no creases along lattice lines."""
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _write_labels(
    path: Path,
    fields: np.ndarray,
    crops: np.ndarray,
    bounds: shapely.Geometry,
    crs: CRS,
    resolution: float,
) -> None:
    """Clip the fields to the raster and write them as the ``parcels`` layer of a GeoPackage.

    A field that the border cuts into pieces becomes one parcel per piece, so every parcel is a
    single connected Polygon, as it is seen in the raster.
    """
    clipped, source = shapely.get_parts(shapely.intersection(fields, bounds), return_index=True)
    crops = crops[source]
    keep = shapely.area(clipped) >= 16 * resolution**2  # slivers along the border help no one
    frame = gpd.GeoDataFrame(
        {
            "parcel_id": np.arange(1, keep.sum() + 1, dtype=np.int64),
            "crop": crops[keep].astype(str),
        },
        geometry=clipped[keep],
        crs=crs,
    )
    frame.to_file(path, layer="parcels", driver="GPKG", engine="pyogrio")
