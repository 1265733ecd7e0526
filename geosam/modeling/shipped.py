"""Checkpoints that ship inside geosam (``geosam/weights/``), named in MODEL.CHECKPOINT.

No SAM weights can be fetched at run time, and Meta's smallest checkpoint (ViT-B, 375 MB) is too
large to ship, so geosam ships a **stand-in**: the tiny SAM architecture (MODEL.TYPE tiny,
256 px inputs, 0.5 M parameters) trained from scratch by geosam's own recipe on synthetic
parcel scenes only (configs/tiny_pretrain.yaml). It is *not* Segment Anything and knows nothing
SAM learned; it exists so that the demo, the benchmarks and the tests fine-tune a model that
already knows parcels instead of random weights. ``MODEL.CHECKPOINT standin`` names it.

Each shipped file has a JSON card beside it (``<name>.json``): what it is, its sha256, and the
recipe that ``scripts/build_standin.py`` rebuilds it from. The hash is checked on every use: a
modified file would otherwise fine-tune silently from other weights than the card describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geosam.modeling.checkpoint import sha256_file
from geosam.utils.errors import GeosamError

# package data (pyproject.toml's package-data), not a module: geosam/weights/
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = ("standin",)


def card_path(name: str) -> Path:
    """The JSON card of shipped checkpoint ``name``."""
    return WEIGHTS_DIR / f"{name}.json"


def read_card(name: str) -> dict[str, Any]:
    """The JSON card of shipped checkpoint ``name`` (a GeosamError if it is not shipped)."""
    if name not in SHIPPED:
        raise GeosamError(f"{name!r} is not a checkpoint geosam ships ({', '.join(SHIPPED)})")
    return json.loads(card_path(name).read_text(encoding="utf-8"))


def resolve_checkpoint(value: str) -> str:
    """MODEL.CHECKPOINT as a file path: a shipped name (``standin``) becomes its file, checked
    against the sha256 on its card; anything else is a path, returned as given."""
    if value not in SHIPPED:
        return value
    card = read_card(value)
    path = WEIGHTS_DIR / card["file"]
    if not path.is_file():
        raise GeosamError(
            f"MODEL.CHECKPOINT {value}: {path} is missing from this geosam install "
            "(rebuild it with scripts/build_standin.py or reinstall geosam)"
        )
    found = sha256_file(path)
    if found != card["sha256"]:
        raise GeosamError(
            f"MODEL.CHECKPOINT {value}: {path} has sha256 {found}, expected {card['sha256']} "
            "(the file was modified: reinstall geosam or rebuild it with scripts/build_standin.py)"
        )
    return str(path)
