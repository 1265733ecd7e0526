"""The demo's training recipes and tiling: the stand-in, from scratch, or an official checkpoint.

Recipes are config overrides of the defaults, not presets: the demo must run from an installed
package, where configs/ is not at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yacs.config import CfgNode

from geosam.config import load_config
from geosam.data.tiling import TileParams
from geosam.data.tiling.grid import plan_tiles
from geosam.modeling.sam import SAM_SPECS
from geosam.utils.errors import GeosamError

# Training recipes, as config overrides of the defaults (the demo must run from an installed
# package, where configs/ is not at hand). The tiny one is configs/tiny_pretrain.yaml's without
# its colour jitter: the demo trains and scores on one synthetic rendering, where jitter would
# only slow learning.
TINY_RECIPE = (
    ("MODEL.TYPE", "tiny"),
    ("MODEL.TRAINABLE", "[image_encoder, prompt_encoder, mask_decoder]"),
    ("INPUT.IMAGE_SIZE", "256"),
    ("INPUT.BOX_JITTER_MAX_PX", "5"),
    ("INPUT.MAX_INSTANCES", "8"),
    ("DATALOADER.NUM_WORKERS", "0"),
    ("SOLVER.BASE_LR", "1e-3"),
    ("SOLVER.WARMUP_ITERS", "50"),
    ("LOSS.FOCAL_WEIGHT", "1.0"),
    ("LOSS.FOCAL_ALPHA", "-1.0"),
    ("LOSS.FOCAL_GAMMA", "0.0"),
)
# Fine-tuning the shipped stand-in: its own pretraining recipe (every part, BCE + Dice), from
# its weights instead of random ones, at a tenth of the rate (higher rates first unlearn:
# docs/design-notes.md), for a fraction of the steps.
STANDIN_RECIPE = (*TINY_RECIPE, ("MODEL.CHECKPOINT", "standin"), ("SOLVER.BASE_LR", "1e-4"))
STANDIN_EPOCHS = 6
# Decoder-only fine-tuning of an official checkpoint. No flips or rotations: each would be
# another encoder pass per chip to cache (10-20 s each for ViT-B on a CPU).
CHECKPOINT_RECIPE = (
    ("INPUT.IMAGE_SIZE", "1024"),
    ("INPUT.HFLIP", "False"),
    ("INPUT.VFLIP", "False"),
    ("INPUT.ROT90", "False"),
    ("DATALOADER.NUM_WORKERS", "0"),
    ("SOLVER.BASE_LR", "5e-5"),
    ("SOLVER.WARMUP_ITERS", "10"),
)


@dataclass(frozen=True)
class DemoParams:
    """The demo's knobs: an official ``checkpoint`` to fine-tune, or ``from_scratch`` (the
    tiny SAM from random weights), else the shipped stand-in. ``epochs`` and ``tile_size``
    None: the recipe's (stand-in: STANDIN_EPOCHS, from scratch: 48 epochs, 1,300 steps, both of
    256 px tiles; checkpoint: 4 epochs of 1024 px). Timings: docs/benchmarks.md."""

    checkpoint: Path | None = None
    model_type: str | None = None
    scene_size: int = 2048
    seed: int = 0
    epochs: int | None = None
    tile_size: int | None = None
    from_scratch: bool = False

    @property
    def tiny(self) -> bool:
        """Whether the model is the tiny SAM (stand-in or from scratch), not an official one."""
        return self.checkpoint is None


def checkpoint_model_type(checkpoint: Path, model_type: str | None) -> str:
    """MODEL.TYPE for ``checkpoint``: as given, or from the official file name."""
    if model_type is not None:
        return model_type
    for name, spec in SAM_SPECS.items():
        if spec.official_checkpoint and spec.official_checkpoint == checkpoint.name:
            return name
    known = ", ".join(s.official_checkpoint for s in SAM_SPECS.values() if s.official_checkpoint)
    raise GeosamError(
        f"cannot tell the model type of {checkpoint} from its name (not one of {known}): "
        "give --model-type vit_b, vit_l or vit_h"
    )


def training_config(params: DemoParams, tiles: Path, run_dir: Path) -> CfgNode:
    """The demo's training config: a recipe, the dataset, the run folder, the epochs."""
    if params.checkpoint is not None:
        if params.from_scratch:
            raise GeosamError("--from-scratch and --checkpoint exclude each other: choose one")
        if not params.checkpoint.is_file():
            raise GeosamError(f"--checkpoint {params.checkpoint} not found")
        model_type = checkpoint_model_type(params.checkpoint, params.model_type)
        recipe = (
            ("MODEL.TYPE", model_type),
            ("MODEL.CHECKPOINT", str(params.checkpoint)),
            *CHECKPOINT_RECIPE,
        )
        epochs, eval_period = params.epochs or 4, 1
    else:
        recipe, epochs = (
            (TINY_RECIPE, params.epochs or 48)
            if params.from_scratch
            else (STANDIN_RECIPE, params.epochs or STANDIN_EPOCHS)
        )
        # a few evaluations, each a pass over the val tiles: they choose the best epoch
        eval_period = max(1, epochs // (4 if params.from_scratch else 2))
    opts = [item for pair in recipe for item in pair]
    opts += ["DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run_dir), "SEED", str(params.seed)]
    opts += ["SOLVER.MAX_EPOCHS", str(epochs), "TEST.EVAL_PERIOD", str(eval_period)]
    return load_config(None, opts)


def tile_params(params: DemoParams) -> TileParams:
    """The demo's tiling: 256 px tiles in split blocks of 2 × 2 tiles for the tiny model;
    1024 px tiles in blocks of one tile for a checkpoint, so that the default 2,048 px scene
    has four blocks, one of them for validation (blocks of 2 × 2 would make it one block and
    leave no val split). Refuses a scene too small for two blocks."""
    tile_size = params.tile_size or (256 if params.tiny else 1024)
    split_block = 2 if params.tiny else 1
    tiling = TileParams(
        tile_size=tile_size, overlap=tile_size // 8, split_block=split_block, seed=params.seed
    )
    size = params.scene_size
    planned = plan_tiles(0, size, size, tile_size, tiling.overlap, split_block)
    if len({tile.block for tile in planned}) < 2:
        raise GeosamError(
            f"--scene-size {size} leaves no validation area with {tile_size} px tiles "
            f"(one split block of {split_block * tile_size} px): use a larger --scene-size"
        )
    return tiling
