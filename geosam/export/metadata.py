"""The model directory's manifest: what a runtime must know to use the ONNX files correctly.

A SAM decoder gives plausible-looking masks for wrongly prepared images, so everything the
encoder's input depends on travels with the model: input size, pixel mean/std, which bands of
the source raster were used and how they were stretched to uint8, the ground resolution the
model was tuned at, and the mask threshold. The same fields are written to ``manifest.json``
and, as JSON-encoded strings, to every ONNX file's ``metadata_props``, so a single ONNX file
copied out of the folder still describes itself. The one exception is ``files``: an ONNX file
cannot hold its own sha256, so the hashes are in ``manifest.json`` only.

Band selection and stretch come from the training tile dataset's sources. When all sources
agree (the usual case: one sensor), ``bands`` and ``stretch`` hold that choice; when they
differ, they hold the first source's, ``sources_agree`` is false, and ``sources`` lists each
one: a runtime applies ``bands`` and the stretch *method* (recomputing a percentile stretch on
its own raster), since no single source's numbers are more right than another's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
from yacs.config import CfgNode

from geosam import __version__
from geosam.data.tiling.manifest import load_manifest
from geosam.modeling.shipped import SHIPPED
from geosam.runtime.model import MANIFEST, MODEL_FORMAT
from geosam.utils.errors import GeosamError

# Keys of the manifest that are not in the ONNX files' metadata_props (see the module doc).
FILE_ONLY_KEYS = ("files",)

# Which of SAM's 4 mask outputs the decoder returns: it chooses in-graph, as training scored
# them (geosam.modeling.prompted, geosam.runtime.model.select_output), and returns that one
# alone ("single_mask"), so a reader takes masks[:, 0].
MASK_SELECTION = "in-graph"


def dataset_fields(dataset_dir: str) -> dict[str, Any]:
    """Band order, band selection, stretch and ground resolution of the training tile dataset.

    An untuned model exported from a preset has no dataset (DATASETS.TRAIN empty): it was
    trained on SAM's RGB photographs, so the fields say RGB, no stretch, no known resolution.
    A run whose dataset has moved needs DATASETS.TRAIN pointed at its new place: exporting
    without its band and stretch record would make a model that silently misreads rasters.
    """
    if not dataset_dir:
        return {
            "band_order": "RGB",
            "bands": None,
            "stretch": None,
            "sources_agree": True,
            "sources": [],
            "ground_resolution_m": None,
            "training_dataset": None,
        }
    if not Path(dataset_dir).is_dir():
        raise GeosamError(
            f"the training dataset {dataset_dir} (DATASETS.TRAIN) is gone: the model needs its "
            "band and stretch record; give DATASETS.TRAIN /its/new/place"
        )
    manifest = load_manifest(dataset_dir)
    sources = [
        {
            "path": source["path"],
            "dtype": source["dtype"],
            "count": source["count"],
            "bands": source["bands"],
            "stretch": source["stretch"],
        }
        for source in manifest["sources"]
    ]
    first = sources[0]
    agree = all((s["bands"], s["stretch"]) == (first["bands"], first["stretch"]) for s in sources)
    return {
        "band_order": manifest["chip"]["band_order"],
        "bands": first["bands"],
        "stretch": first["stretch"],
        "sources_agree": agree,
        "sources": sources,
        "ground_resolution_m": manifest["ground_resolution_m"],
        "training_dataset": str(Path(dataset_dir).resolve()),
    }


def model_fields(
    cfg: CfgNode,
    *,
    dataset: Mapping[str, Any],
    embedding_shape: tuple[int, ...],
    opset: int,
    base_checkpoint_sha256: str | None,
    weights_sha256: str | None,
    parity: Mapping[str, Any],
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Every manifest field except ``files``: the ones also stored in the ONNX files.

    ``dataset`` is :func:`dataset_fields` of DATASETS.TRAIN. The provenance fields (the run
    folder, the base checkpoint's path and hash, the training dataset, the whole config) are
    what ``geosam improve`` continues a model's training from; the config also rebuilds the
    base model when the run folder is gone.
    """
    return {
        "format": MODEL_FORMAT,
        "geosam_version": __version__,
        "model_type": cfg.MODEL.TYPE,
        "input_size": cfg.INPUT.IMAGE_SIZE,
        "pixel_mean": list(cfg.INPUT.PIXEL_MEAN),
        "pixel_std": list(cfg.INPUT.PIXEL_STD),
        "padding": "bottom-right",
        **dataset,
        "mask_threshold": cfg.TEST.MASK_THRESHOLD,
        "multimask": cfg.MODEL.MULTIMASK,
        "mask_selection": MASK_SELECTION,
        "single_mask": True,
        "embedding_shape": list(embedding_shape),
        "opset": opset,
        "base_checkpoint": checkpoint_source(cfg.MODEL.CHECKPOINT),
        "base_checkpoint_sha256": base_checkpoint_sha256,
        "weights_sha256": weights_sha256,
        "run_dir": str(run_dir.resolve()) if run_dir is not None else None,
        "config": cfg.dump(),
        "parity": dict(parity),
    }


# The first onnxruntime release that reads each ONNX IR version and implements each opset of
# the default domain, from onnxruntime's compatibility table ("ONNX opset support",
# https://onnxruntime.ai/docs/reference/compatibility.html, source docs/reference/
# compatibility.md of microsoft/onnxruntime's gh-pages; it lists releases up to 1.20): an older
# one refuses the file ("Unsupported model IR version") or the opset, the failure users of
# other QGIS SAM plugins meet with an old onnxruntime and a new export. Entries start where
# geosam's exports can be (MIN_OPSET 12, torch's exporter writing IR 7+) and stop where that
# table does (torch's TorchScript exporter writes opset 20 at most); a newer IR or opset
# raises, so the table is extended from the source rather than a guessed minimum written.
ONNXRUNTIME_FOR_IR = {7: "1.3", 8: "1.9", 9: "1.16", 10: "1.18"}
ONNXRUNTIME_FOR_OPSET = {
    12: "1.3",
    13: "1.6",
    14: "1.8",
    15: "1.9",
    16: "1.11",
    17: "1.12",
    18: "1.14",
    19: "1.15",
    20: "1.17",
    21: "1.18",
}


def runtime_fields(ir_version: int, opset: int) -> dict[str, Any]:
    """``onnx_ir_version`` and ``min_onnxruntime``, the oldest onnxruntime that reads files of
    that IR version and opset: the QGIS plugin offers to install it when QGIS's is older."""
    needed = []
    for value, table, what in (
        (ir_version, ONNXRUNTIME_FOR_IR, "IR version"),
        (opset, ONNXRUNTIME_FOR_OPSET, "opset"),
    ):
        if value not in table:
            raise GeosamError(
                f"ONNX {what} {value} is not in geosam's onnxruntime table (geosam/export/"
                f"metadata.py knows {min(table)}-{max(table)}): export with --opset "
                f"{max(ONNXRUNTIME_FOR_OPSET)} or lower, or extend the table"
            )
        needed.append(table[value])
    minimum = max(needed, key=lambda version: tuple(int(part) for part in version.split(".")))
    return {"onnx_ir_version": ir_version, "min_onnxruntime": minimum}


def to_metadata_props(fields: Mapping[str, Any]) -> dict[str, str]:
    """``fields`` as ONNX metadata_props: each value JSON-encoded (props are strings)."""
    return {key: json.dumps(value) for key, value in fields.items()}


def read_metadata_props(model: onnx.ModelProto) -> dict[str, Any]:
    """The fields of :func:`to_metadata_props`, decoded from an ONNX model."""
    return {prop.key: json.loads(prop.value) for prop in model.metadata_props}


def write_manifest(model_dir: Path, fields: Mapping[str, Any], files: Mapping[str, Any]) -> None:
    """``manifest.json``: ``fields`` plus ``files`` (name → sha256 and size of each file)."""
    document = {**fields, "files": dict(files)}
    (model_dir / MANIFEST).write_text(json.dumps(document, indent=2) + "\n")


def checkpoint_source(checkpoint: str) -> str | None:
    """MODEL.CHECKPOINT as a manifest records it: a shipped name as it is (it names the same
    file in every install), a path made absolute; None for a randomly initialised model."""
    if not checkpoint:
        return None
    return checkpoint if checkpoint in SHIPPED else str(Path(checkpoint).resolve())
