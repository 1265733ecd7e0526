"""The CLI side of the CLI-vs-plugin parity test: masks from the runtime loops, read with rasterio.

Runs the same prompts (points, a box, a negative point, a prompt that is skipped) and
automatic mode through the runtime's loops (:func:`geosam.runtime.segmenter.segment_prompts`,
:class:`geosam.runtime.auto.AutoSegmenter`) over the CLI's rasterio reader, and saves the
prompts, the settings and every result to ``FIXTURES/parity.npz``. The plugin's test
(qgis_plugin/tests/test_parity.py) runs the same loops over its GDAL reader, in QGIS's Python,
which has no rasterio, and compares: same windows, scores and masks.

    python scripts/parity_fixture.py build/qgis-fixtures    # needs model/ and scene/ there
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from geosam.runtime import SamModel
from geosam.runtime.auto import AutoParams, AutoSegmenter
from geosam.runtime.prompts import Prompt
from geosam.runtime.segmenter import PromptSegmenter, Skip, segment_prompts
from geosam.segment.reader import WindowReader

# Scene pixels (512 x 512): single clicks, two clicks, boxes inside and at the edge, one
# prompt off the raster; the negative point lies in the windows of the first prompts.
PROMPTS = [
    {"points": [[100.5, 120.5]]},
    {"points": [[300.5, 300.5]]},
    {"points": [[60.5, 400.5], [70.5, 410.5]]},
    {"box": [200.0, 50.0, 280.0, 140.0]},
    {"box": [440.0, 440.0, 511.0, 509.0]},
    {"points": [[600.5, 100.5]]},
]
NEGATIVES = [[320.5, 310.5]]
# Automatic mode with settings an untrained model's masks pass: its logits hover around 0,
# so at the usual threshold every mask spreads over its whole window (and is joined across
# windows into one raster-wide mask); at MASK_THRESHOLD they are parcel-sized blobs, some of
# them duplicates.
AUTO = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_thresh": 0.0,
    "stability_offset": 0.05,
}
MASK_THRESHOLD = 0.1


def prompts() -> list[Prompt]:
    """:data:`PROMPTS` as runtime records."""
    records = []
    for index, spec in enumerate(PROMPTS):
        points = np.array(spec.get("points", np.zeros((0, 2))), dtype=np.float64)
        box = spec.get("box")
        records.append(
            Prompt(points, np.ones(len(points)), None if box is None else tuple(box), index)
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", type=Path, help="folder with model/ and scene/scene.tif")
    fixtures = parser.parse_args().fixtures
    model = SamModel.load(fixtures / "model", threads=1)
    arrays: dict[str, np.ndarray] = {
        "prompts": np.array(json.dumps(PROMPTS)),
        "negatives": np.array(NEGATIVES, dtype=np.float64),
        "auto": np.array(json.dumps(AUTO)),
        "mask_threshold": np.array(MASK_THRESHOLD),
    }
    with WindowReader(fixtures / "scene" / "scene.tif", model.manifest) as reader:
        segmenter = PromptSegmenter(model, reader)
        results, skips = [], []
        for item in segment_prompts(segmenter, prompts(), arrays["negatives"]):
            (skips if isinstance(item, Skip) else results).append(item)
        arrays["prompt_index"] = np.array([r.prompt.index for r in results])
        arrays["prompt_window"] = np.array([r.window.key for r in results])
        arrays["prompt_score"] = np.array([r.score for r in results])
        arrays["skip_index"] = np.array([s.prompt.index for s in skips])
        arrays["skip_reason"] = np.array([s.reason for s in skips])
        for number, result in enumerate(results):
            arrays[f"prompt_mask_{number}"] = result.mask
        model.threshold = MASK_THRESHOLD
        auto = AutoSegmenter(model, reader, AutoParams(**AUTO), min_area_m2=0.0)
        masks = list(auto.masks())
        arrays["auto_box"] = np.array([mask.box for mask in masks]).reshape(-1, 4)
        arrays["auto_score"] = np.array([mask.score for mask in masks])
        arrays["auto_geotransform"] = np.array(auto.grid_transform)
        arrays["auto_dropped"] = np.array(json.dumps(auto.dropped))
        for number, mask in enumerate(masks):
            arrays[f"auto_mask_{number}"] = mask.mask
    np.savez_compressed(fixtures / "parity.npz", **arrays)
    print(f"{fixtures / 'parity.npz'}: {len(results)} prompt masks, {len(masks)} automatic")


if __name__ == "__main__":
    main()
