"""``geosam demo``: every stage of geosam, end to end, on a synthetic scene, in minutes on a CPU.

synthetic scene → tile → train → evaluate → export-onnx → segment (one click per parcel, then
automatic mode), each through the same functions as its command, so the demo shows what the
commands do and breaks when they break.

By default it fine-tunes the stand-in geosam ships (``MODEL.CHECKPOINT standin``, the tiny SAM
pretrained on other synthetic scenes: :mod:`geosam.modeling.shipped`) on a scene it never saw,
the way a user tunes SAM on their own parcels. ``from_scratch`` trains the tiny SAM from random
weights instead (configs/tiny_pretrain.yaml's recipe: every part trains, BCE + Dice), so "base"
is a random model and "tuned" is what a few minutes of CPU training reach. With an official
checkpoint it fine-tunes that model's decoder on cached embeddings (configs/
sam_vit_b_decoder.yaml's recipe).

The segment stages score what a user gets on the validation area (held out from training by
the tile split): one point inside each parcel through ``geosam segment``, polygon IoU with the
true parcels against box-fill's (each parcel's bounding box); and the automatic-mode parcel map
of the scene (``geosam segment --auto``, the exported model's tuned thresholds), its object F1
at IoU 0.5 (``geosam score-parcels``).
"""

from geosam.demo.picture import render_result
from geosam.demo.recipes import (
    DemoParams,
    checkpoint_model_type,
    tile_params,
    training_config,
)
from geosam.demo.run import DemoResult, run_demo
from geosam.demo.scoring import (
    ID_FIELD,
    box_fill_polygon_iou,
    polygon_iou,
    val_area_parcels,
    write_point_prompts,
)

__all__ = [
    "ID_FIELD",
    "DemoParams",
    "DemoResult",
    "box_fill_polygon_iou",
    "checkpoint_model_type",
    "polygon_iou",
    "render_result",
    "run_demo",
    "tile_params",
    "training_config",
    "val_area_parcels",
    "write_point_prompts",
]
