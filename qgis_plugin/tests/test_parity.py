"""The plugin's GDAL reader gives the masks the CLI's rasterio reader gives, through one loop.

scripts/parity_fixture.py ran the runtime's prompt loop and automatic mode over the CLI's
rasterio reader on the fixture scene (QGIS's Python has no rasterio) and saved the prompts,
the settings and the results; here the same loops run over :class:`RasterWindows`, and every
window, score and mask must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsRasterLayer


@pytest.fixture(scope="module")
def expected(parity: Path) -> dict[str, np.ndarray]:
    with np.load(parity) as arrays:
        return dict(arrays)


def test_prompts_give_the_cli_masks(
    model_dir: Path, raster_layer: QgsRasterLayer, expected: dict[str, np.ndarray]
) -> None:
    from geosam_qgis.raster_reader import RasterWindows
    from geosam_qgis.runtime.model import SamModel
    from geosam_qgis.runtime.prompts import Prompt
    from geosam_qgis.runtime.segmenter import PromptSegmenter, Skip, segment_prompts

    model = SamModel.load(model_dir, threads=1)
    segmenter = PromptSegmenter(model, RasterWindows.from_layer(raster_layer, model.manifest))
    prompts = []
    for index, spec in enumerate(json.loads(str(expected["prompts"]))):
        points = np.reshape(spec.get("points", []), (-1, 2)).astype(np.float64)
        box = tuple(spec["box"]) if "box" in spec else None
        prompts.append(Prompt(points, np.ones(len(points)), box, index))
    items = list(segment_prompts(segmenter, prompts, expected["negatives"]))
    skips = [item for item in items if isinstance(item, Skip)]
    results = [item for item in items if not isinstance(item, Skip)]
    assert [s.prompt.index for s in skips] == expected["skip_index"].tolist()
    assert [s.reason for s in skips] == expected["skip_reason"].tolist()
    assert [r.prompt.index for r in results] == expected["prompt_index"].tolist()
    assert [list(r.window.key) for r in results] == expected["prompt_window"].tolist()
    assert [r.score for r in results] == pytest.approx(expected["prompt_score"].tolist())
    for number, result in enumerate(results):
        assert np.array_equal(result.mask, expected[f"prompt_mask_{number}"]), number


def test_automatic_mode_gives_the_cli_masks(
    model_dir: Path, raster_layer: QgsRasterLayer, expected: dict[str, np.ndarray]
) -> None:
    from geosam_qgis.raster_reader import RasterWindows
    from geosam_qgis.runtime.auto import AutoParams, AutoSegmenter
    from geosam_qgis.runtime.model import SamModel

    model = SamModel.load(model_dir, threads=1)
    model.threshold = float(expected["mask_threshold"])
    raster = RasterWindows.from_layer(raster_layer, model.manifest)
    auto = AutoSegmenter(model, raster, AutoParams(**json.loads(str(expected["auto"]))), 0.0)
    masks = list(auto.masks())
    assert len(masks) == len(expected["auto_score"]) > 0
    assert [list(mask.box) for mask in masks] == expected["auto_box"].tolist()
    assert [mask.score for mask in masks] == pytest.approx(expected["auto_score"].tolist())
    assert np.allclose(auto.grid_transform, expected["auto_geotransform"])
    assert dict(auto.dropped) == json.loads(str(expected["auto_dropped"]))
    for number, mask in enumerate(masks):
        assert np.array_equal(mask.mask, expected[f"auto_mask_{number}"]), number
