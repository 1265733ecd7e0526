"""Scoring what the demo's user gets, on the validation area the tile split held out from
training: polygons from one click per parcel against the true parcels and box-fill's, and the
automatic-mode parcel map's object F1 (geosam score-parcels' matching)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from geosam.segment.score import ParcelScores, ScoredArea, score_parcel_map
from geosam.utils.errors import GeosamError

ID_FIELD = "parcel_id"


def val_area(footprints: Path, crs: CRS) -> shapely.Geometry:
    """The union of the validation tiles (tile's footprints.gpkg), in ``crs``."""
    tiles = gpd.read_file(footprints)
    return shapely.union_all(tiles.loc[tiles["split"] == "val"].to_crs(crs).geometry)


def val_area_parcels(labels: Path, footprints: Path) -> gpd.GeoDataFrame:
    """The parcels whose representative point lies in the validation tiles: held out from
    training by the tile split."""
    parcels = gpd.read_file(labels, layer="parcels")
    area = val_area(footprints, parcels.crs)
    chosen = parcels.loc[parcels.geometry.representative_point().within(area)]
    if chosen.empty:
        raise GeosamError("the validation tiles hold no parcel: use a larger --scene-size")
    return chosen


def write_point_prompts(parcels: gpd.GeoDataFrame, out: Path) -> None:
    """One positive point prompt inside each parcel (its representative point, which a
    concave parcel's centroid need not be), with the parcel's ``ID_FIELD``, as layer
    "prompts" of the GeoPackage ``out``."""
    prompts = gpd.GeoDataFrame(
        {ID_FIELD: parcels[ID_FIELD].to_numpy()},
        geometry=parcels.geometry.representative_point().to_numpy(),
        crs=parcels.crs,
    )
    prompts.to_file(out, layer="prompts", engine="pyogrio")


def polygon_iou(result: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> np.ndarray:
    """IoU of each true parcel with the polygon segmented from its prompt (0 where none);
    both carry ``ID_FIELD``."""
    predicted = result.to_crs(truth.crs).dissolve(by=ID_FIELD).geometry
    truth_geometry = truth.set_index(ID_FIELD).geometry
    matched = predicted.reindex(truth_geometry.index)
    found = matched.notna().to_numpy()
    ious = np.zeros(len(truth_geometry))
    a, b = truth_geometry.to_numpy()[found], matched.to_numpy()[found]
    ious[found] = shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))
    return ious


def box_fill_polygon_iou(truth: gpd.GeoDataFrame) -> np.ndarray:
    """:func:`polygon_iou` of box-fill: each parcel's bounding box as its segmented polygon."""
    return polygon_iou(truth.assign(geometry=truth.geometry.envelope), truth)


def parcel_map_scores(parcel_map: Path, labels: Path, footprints: Path) -> ParcelScores:
    """Object scores (F1 at IoU 0.5, ...) of an automatic-mode parcel map on the val area."""
    predicted = gpd.read_file(parcel_map)
    truth = gpd.read_file(labels, layer="parcels")
    area = ScoredArea("val area", val_area(footprints, truth.crs), truth.crs)
    return score_parcel_map(predicted, truth, [area]).overall.scores
