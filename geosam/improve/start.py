"""Where ``geosam improve`` starts: the model a model folder was exported from.

export-onnx records a model's provenance in its manifest (the run folder, the base checkpoint's
path and sha256, the training dataset, the whole config). Improving continues that run: its
config, its base checkpoint, and the trained weights the model was exported with (the run's
best or final file, whichever has the sha256 the manifest records). When the run folder is
gone, the manifest's config still rebuilds the base model, so training starts from the base
checkpoint and the note says so; a model exported untuned (from a preset) is its base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geosam.engine.run_dir import CONFIG_FILE, WEIGHT_FILES
from geosam.modeling import sha256_file
from geosam.modeling.shipped import resolve_checkpoint
from geosam.runtime.model import MANIFEST, read_manifest
from geosam.utils.errors import GeosamError


@dataclass(frozen=True)
class StartingPoint:
    """The old model as training can rebuild it: its config (yaml text), its trained weights
    (None: the model is its base), and a note when that is not the model the folder holds."""

    config: str
    weights: Path | None
    manifest: dict[str, Any]
    note: str | None = None


def starting_point(model_dir: Path, check_base: bool = True) -> StartingPoint:
    """The old model of ``model_dir`` (a folder of export-onnx), from its run when the run
    folder is still there, else from its manifest's config. ``check_base`` False: the caller
    gives MODEL.CHECKPOINT itself (the base checkpoint has moved)."""
    if not (model_dir / MANIFEST).is_file():
        raise GeosamError(f"--model {model_dir} is not a geosam model folder (no {MANIFEST})")
    manifest = read_manifest(model_dir / MANIFEST)
    if "config" not in manifest:
        raise GeosamError(
            f"--model {model_dir} records no config (exported before models did): export it "
            "again with geosam export-onnx to improve it"
        )
    if check_base:
        check_base_checkpoint(manifest, model_dir)
    run = Path(manifest["run_dir"]) if manifest.get("run_dir") else None
    wanted = manifest.get("weights_sha256")
    if wanted is None:
        return StartingPoint(manifest["config"], None, manifest)
    if run is not None and (run / CONFIG_FILE).is_file():
        for name in WEIGHT_FILES.values():
            if (run / name).is_file() and sha256_file(run / name) == wanted:
                return StartingPoint((run / CONFIG_FILE).read_text(), run / name, manifest)
    where = f"the run folder {run}" if run is not None else "its run folder (not recorded)"
    note = (
        f"{where} is gone or no longer holds the weights {model_dir} was exported with: "
        "training starts again from the base checkpoint, and 'before' is the base model"
    )
    return StartingPoint(manifest["config"], None, manifest, note)


def check_base_checkpoint(manifest: dict[str, Any], model_dir: Path) -> None:
    """The base checkpoint the manifest records must be where it was, unchanged: the model is
    rebuilt from it."""
    path, sha256 = manifest.get("base_checkpoint"), manifest.get("base_checkpoint_sha256")
    if path is None:
        return
    path = resolve_checkpoint(path)  # a shipped name: its file, checked against its card
    if not Path(path).is_file():
        raise GeosamError(
            f"the base checkpoint {path} that {model_dir} was trained from is gone: put it back "
            "or give MODEL.CHECKPOINT /its/new/place"
        )
    if sha256 is not None and sha256_file(path) != sha256:
        raise GeosamError(f"the base checkpoint {path} of {model_dir} has changed (sha256)")
