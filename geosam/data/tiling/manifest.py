"""The tile dataset contract: file names, the versioned manifest, and reading it back.

Training, evaluation and export read a tile dataset only through :func:`load_manifest` and the
file names below, so a change of layout is a change of ``FORMAT`` and is caught on read.
"""

from __future__ import annotations

import json
from pathlib import Path

from geosam.utils.errors import GeosamError

FORMAT = "geosam-tiles/1"
MANIFEST = "manifest.json"
TILES = "tiles.parquet"
INSTANCES = "instances.parquet"
FOOTPRINTS = "footprints.gpkg"
CHIPS = "chips"
MASKS = "masks"

CONVENTIONS = {
    "chip": "GeoTIFF, 3 bands uint8 RGB after the source's stretch; nodata in the internal mask",
    "mask": "GeoTIFF on the chip's grid; instance ids 1..n, 0 = no parcel; id k = instance k",
    "box": "XYXY pixel indices of the chip, first to last pixel (x1, y1 inclusive), as SAM",
    "points": "(x, y) pixel indices of the chip (column, row), as SAM's point prompts",
    "clipped": "the parcel reaches the chip edge or extends beyond it",
    "split": "whole split blocks go to train or val; overlapping tiles share a block",
}


def write_manifest(dataset_dir: Path, manifest: dict) -> None:
    with open(dataset_dir / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def load_manifest(dataset_dir: str | Path) -> dict:
    """Read and check a tile dataset's manifest; a wrong folder or version is a user error."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise GeosamError(
            f"{dataset_dir} is not a geosam tile dataset (no {MANIFEST}): "
            "create one with geosam tile"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeosamError(f"{path} is not valid JSON: {exc}") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise GeosamError(
            f"{dataset_dir} has tile format {found!r}; this geosam reads {FORMAT!r}: "
            "re-run geosam tile"
        )
    return manifest
