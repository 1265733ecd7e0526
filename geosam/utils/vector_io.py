"""Reading one layer of a user's vector file (labels, prompts) with errors a user can act on.

Any format GDAL reads, plus GeoParquet; a file with several layers needs ``--layer``, and every
failure is one line naming the file (as ``what``, e.g. "labels" or "prompts") and the fix.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

from geosam.utils.errors import GeosamError

PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def read_vector(
    path: Path, layer: str | None, what: str, fid_as_index: bool = False
) -> gpd.GeoDataFrame:
    """The features of ``layer`` (or the only layer) of ``path``."""
    if not path.exists():
        raise GeosamError(f"{what} {path} do not exist")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        if layer is not None:
            raise GeosamError(f"--layer does not apply to GeoParquet {what} {path}")
        try:
            return gpd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise GeosamError(f"cannot read GeoParquet {what} {path}: {exc}") from None
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio.errors.DataSourceError and friends
        raise GeosamError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None
    if layer is None and len(layers) > 1:
        raise GeosamError(
            f"{what} {path} have {len(layers)} layers ({', '.join(layers)}): "
            "choose one with --layer"
        )
    if layer is not None and layer not in layers:
        raise GeosamError(f"--layer {layer} is not in {path} (layers: {', '.join(layers)})")
    try:
        return gpd.read_file(
            path, layer=layer or layers[0], engine="pyogrio", fid_as_index=fid_as_index
        )
    except Exception as exc:
        raise GeosamError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None
