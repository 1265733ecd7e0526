"""``build_transforms(cfg, is_train)``: the per-chip pipeline from a tile to a training sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from yacs.config import CfgNode

from geosam.data.transforms.color import ColorJitter
from geosam.data.transforms.dihedral import IDENTITY, allowed_variants, apply_variant, flip_variant
from geosam.data.transforms.prompts import (
    INDEX_KINDS,
    PromptSampler,
    PromptSet,
    fixed_auto_points,
    fixed_prompts,
)
from geosam.data.transforms.sam_input import SamInput
from geosam.runtime.flips import FLIPS


@dataclass
class Sample:
    """One chip ready for collation: image or cached-embedding key, prompts with targets."""

    tile_id: str
    variant: int
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    prompts: PromptSet
    image: np.ndarray | None = None
    embedding: np.ndarray | None = None
    # With cached embeddings and test-time flips: dihedral variant → cached embedding.
    view_embeddings: dict[int, np.ndarray] = field(default_factory=dict)


class ChipTransform:
    """What both transforms share: SAM's input frame, and turning their results into a Sample."""

    def __init__(self, cfg: CfgNode):
        self.sam_input = SamInput(cfg.INPUT.IMAGE_SIZE, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)

    def sample(
        self,
        tile_id: str,
        variant: int,
        image: np.ndarray | None,
        mask: np.ndarray,
        prompts: PromptSet,
    ) -> Sample:
        """A Sample from a chip (or None with a cache), its mask and prompts in chip pixels."""
        return Sample(
            tile_id=tile_id,
            variant=variant,
            original_size=mask.shape,
            input_size=self.sam_input.input_size(mask.shape),
            prompts=self.sam_input.prompts(mask, prompts),
            image=None if image is None else self.sam_input.image(image),
        )


class TrainTransform(ChipTransform):
    """A random variant of the chip, its colours jittered (INPUT.COLOR_JITTER), fresh prompts
    sampled from its mask, SAM's input frame."""

    def __init__(self, cfg: CfgNode, variants: tuple[int, ...]):
        super().__init__(cfg)
        self.variants = variants
        self.color = ColorJitter(cfg.INPUT.COLOR_JITTER)
        self.sampler = PromptSampler(
            cfg.INPUT.PROMPT_TYPES,
            cfg.INPUT.PROMPT_WEIGHTS,
            cfg.INPUT.NUM_POINTS,
            cfg.INPUT.NEGATIVE_POINTS,
            cfg.INPUT.BOX_JITTER,
            cfg.INPUT.BOX_JITTER_MAX_PX,
            cfg.INPUT.MAX_INSTANCES,
            cfg.INPUT.PROMPTS_PER_INSTANCE,
        )

    def __call__(
        self,
        tile_id: str,
        image: np.ndarray | None,
        mask: np.ndarray,
        instances: pd.DataFrame,
        rng: np.random.Generator,
    ) -> Sample:
        variant = int(rng.choice(self.variants))
        mask = np.ascontiguousarray(apply_variant(mask, variant))
        if image is not None:
            image = np.ascontiguousarray(apply_variant(image, variant))
            if self.color:
                image = self.color(image, rng)
        return self.sample(tile_id, variant, image, mask, self.sampler(mask, rng))


class EvalTransform(ChipTransform):
    """The chip as it is, with the fixed evaluation prompts of every instance from the index
    and TEST.AUTO_POINTS automatic-mode points, seeded by the tile
    (:func:`~geosam.data.transforms.prompts.fixed_auto_points`)."""

    def __init__(self, cfg: CfgNode, kinds: tuple[str, ...] = INDEX_KINDS):
        super().__init__(cfg)
        self.kinds = kinds
        self.auto_points = cfg.TEST.AUTO_POINTS

    def __call__(
        self,
        tile_id: str,
        image: np.ndarray | None,
        mask: np.ndarray,
        instances: pd.DataFrame,
        rng: np.random.Generator,
    ) -> Sample:
        prompts = fixed_prompts(instances, self.kinds)
        prompts.update(fixed_auto_points(mask, tile_id, self.auto_points))
        return self.sample(tile_id, 0, image, mask, prompts)


def training_variants(cfg: CfgNode) -> tuple[int, ...]:
    """The dihedral variants training draws from (and the embedding cache must hold)."""
    return allowed_variants(cfg.INPUT.HFLIP, cfg.INPUT.VFLIP, cfg.INPUT.ROT90)


def evaluation_variants(cfg: CfgNode) -> tuple[int, ...]:
    """The dihedral variants evaluation reads (and the validation cache must hold): the chip
    itself, and with TEST.FLIP_TTA its three mirror images after it."""
    if not cfg.TEST.FLIP_TTA:
        return (IDENTITY,)
    return tuple(flip_variant(flip_x, flip_y) for flip_x, flip_y in FLIPS)


def build_transforms(cfg: CfgNode, is_train: bool) -> TrainTransform | EvalTransform:
    if is_train:
        return TrainTransform(cfg, training_variants(cfg))
    return EvalTransform(cfg)
