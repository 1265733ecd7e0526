"""``geosam export-checkpoint``: a model (base plus trained weights) as an official-format SAM
checkpoint.

What a model trained from scratch or fully fine-tuned becomes for everything that takes a SAM
checkpoint: MODEL.CHECKPOINT of another run (the stand-in foundation model that
configs/tiny_pretrain.yaml trains), or ``segment_anything``'s own ``sam_model_registry`` for the
official sizes. The output is checked before the model is built, and the file is written under
a temporary name and renamed (:func:`geosam.modeling.save_sam_checkpoint`), so a failure leaves
no file and an existing one is replaced only by a whole one.
"""

from __future__ import annotations

from pathlib import Path

from yacs.config import CfgNode

from geosam.engine.run_dir import build_tuned_model
from geosam.modeling import build_model, save_sam_checkpoint
from geosam.utils.publish import refuse_existing_file


def export_checkpoint(
    cfg: CfgNode, output: Path, *, weights: Path | None = None, overwrite: bool = False
) -> Path:
    """Write the model of ``cfg`` (plus trained ``weights``, from a run) to the file ``output``
    as a plain ``Sam.state_dict()``; refused if ``output`` exists, unless ``overwrite``."""
    refuse_existing_file(output, overwrite)
    model = build_model(cfg)
    if weights is not None:
        model = build_tuned_model(model, cfg, weights)
    save_sam_checkpoint(model, output)
    return output
