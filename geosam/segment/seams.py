"""Parcels on the seam between two rasters: one parcel, whole, in the output CRS.

Within a raster, pieces of a parcel are joined on the raster's own tiling grid
(:mod:`geosam.segment.blocks`). Two rasters have two grids, maybe two CRSs, so across them
the same rule is applied to polygons in the output CRS: two parcels of different rasters are
one when they agree where both rasters see the ground (IoU above the duplicate threshold
inside the rasters' shared footprint). For rasters that only abut, the shared footprint is
the seam, widened by ``tolerance`` (about a pixel) on each side, and so are the parcels: two
pieces meeting along the seam cover the same stretch of it. One parcel's pieces are unioned
(closed by ``tolerance`` / 2, so that two grids' edges meeting at a seam leave no sliver);
in a coverage, what two different parcels both hold goes to the better-ranked, as within a
raster. Only parcels within ``tolerance`` of another raster's footprint are looked at.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geosam.segment.polygons import polygonal


def merge_seams(
    frame: gpd.GeoDataFrame,
    footprints: Mapping[str, shapely.Geometry],
    tolerance: float,
    nms_iou: float,
    coverage: bool,
) -> gpd.GeoDataFrame:
    """``frame`` (``score``, ``stability``, ``source`` naming a key of ``footprints``, all in
    one CRS) with the parcels on seams joined and, with ``coverage``, carved apart."""
    if len(footprints) < 2 or frame.empty:
        return frame
    near = np.flatnonzero(_near_other_rasters(frame, footprints, tolerance))
    if not len(near):
        return frame
    seam = frame.iloc[near].reset_index(drop=True)
    groups = _same_parcels(seam, footprints, tolerance, nms_iou)
    joined = gpd.GeoDataFrame(
        [_join(seam.iloc[members], tolerance) for members in groups],
        geometry="geometry",
        crs=frame.crs,
    )
    if coverage:
        joined = _carve(joined)
    rest = frame.drop(index=frame.index[near])
    return gpd.GeoDataFrame(pd.concat([rest, joined], ignore_index=True), crs=frame.crs)


def _near_other_rasters(
    frame: gpd.GeoDataFrame, footprints: Mapping[str, shapely.Geometry], tolerance: float
) -> np.ndarray:
    near = np.zeros(len(frame), bool)
    sources = frame["source"].to_numpy()
    geometries = frame.geometry.to_numpy()
    for name in footprints:
        others = shapely.union_all([f for n, f in footprints.items() if n != name])
        mine = sources == name
        near[mine] = shapely.intersects(geometries[mine], shapely.buffer(others, tolerance))
    return near


def _same_parcels(
    seam: gpd.GeoDataFrame,
    footprints: Mapping[str, shapely.Geometry],
    tolerance: float,
    nms_iou: float,
) -> list[list[int]]:
    """Groups of rows of ``seam`` that are one parcel (union-find over agreeing pairs)."""
    geometries = shapely.buffer(seam.geometry.to_numpy(), tolerance)
    sources = seam["source"].to_numpy()
    group = list(range(len(seam)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    @functools.cache
    def shared(one: str, other: str) -> shapely.Geometry:
        return shapely.intersection(
            shapely.buffer(footprints[one], tolerance), shapely.buffer(footprints[other], tolerance)
        )

    for a, b in shapely.STRtree(geometries).query(geometries, predicate="intersects").T:
        if a >= b or sources[a] == sources[b]:
            continue
        both = shared(*sorted((sources[a], sources[b])))
        in_a = shapely.intersection(geometries[a], both)
        in_b = shapely.intersection(geometries[b], both)
        union = shapely.union(in_a, in_b).area
        if union > 0 and shapely.intersection(in_a, in_b).area > nms_iou * union:
            group[root(b)] = root(a)
    members: dict[int, list[int]] = {}
    for i in range(len(seam)):
        members.setdefault(root(i), []).append(i)
    return list(members.values())


def _join(pieces: gpd.GeoDataFrame, tolerance: float) -> dict:
    """One parcel from its ``pieces``: their union, rated as the area-weighted mean of the
    pieces, named for the raster that holds most of it."""
    if len(pieces) == 1:
        return pieces.iloc[0].to_dict()
    areas = pieces.geometry.area.to_numpy()
    geometry = shapely.union_all(pieces.geometry.to_numpy())
    closed = shapely.buffer(
        shapely.buffer(geometry, tolerance / 2, join_style="mitre"),
        -tolerance / 2,
        join_style="mitre",
    )
    row = pieces.iloc[int(np.argmax(areas))].to_dict()
    row["geometry"] = polygonal(shapely.make_valid(closed)) or geometry
    row["score"] = float(np.average(pieces["score"], weights=areas))
    row["stability"] = float(np.average(pieces["stability"], weights=areas))
    return row


def _carve(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Each pixel of ground to one parcel: a parcel loses what better-ranked ones hold."""
    order = np.lexsort((-frame["stability"].to_numpy(), -frame["score"].to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    geometries = frame.geometry.to_numpy().copy()
    tree = shapely.STRtree(geometries)
    for i in range(len(geometries)):
        better = [j for j in tree.query(geometries[i], predicate="intersects") if j < i]
        if better:
            rest = shapely.difference(geometries[i], shapely.union_all(geometries[better]))
            geometries[i] = polygonal(shapely.make_valid(rest)) or shapely.MultiPolygon()
    frame = frame.set_geometry(list(geometries), crs=frame.crs)
    return frame[~frame.geometry.is_empty].reset_index(drop=True)
