"""Parcels drawn short of their edges: each polygon shrunk by a buffer of ``-metres``.

A model tuned on such labels stops its masks short of the fields' edges, as one tuned on
carelessly digitised parcels would: the weak model the plugin's improve tests correct with the
true parcels (Makefile, ``weak_model``), so that the gain they assert is a real one.

    python scripts/shrink_parcels.py parcels.gpkg shrunk.gpkg --metres 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parcels", type=Path, help="polygons in a projected CRS (metres)")
    parser.add_argument("output", type=Path, help="GeoPackage to write (layer 'parcels')")
    parser.add_argument("--metres", type=float, required=True, help="how far to shrink")
    args = parser.parse_args()
    parcels = gpd.read_file(args.parcels)
    parcels["geometry"] = parcels.buffer(-args.metres)
    shrunk = parcels.loc[~parcels.geometry.is_empty]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    shrunk.to_file(args.output, layer="parcels", engine="pyogrio")
    print(f"{len(shrunk)} of {len(parcels)} parcels shrunk by {args.metres} m -> {args.output}")


if __name__ == "__main__":
    main()
