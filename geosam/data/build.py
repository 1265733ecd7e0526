"""``make_data_loader(cfg, is_train)`` and the embedding caches the loaders read.

Follows maskrcnn-benchmark's ``make_data_loader``: one call gives the loader for training or
validation, built from the config. Under ``ignite.distributed`` the loader is sharded per
process and ``DATALOADER.IMS_PER_BATCH`` is the global batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ignite.distributed as idist
import torch
from segment_anything.modeling import Sam
from yacs.config import CfgNode

from geosam.data.collate_batch import BatchCollator
from geosam.data.datasets.tile_dataset import TileDataset
from geosam.data.embedding_cache import EmbeddingCache, cache_key, fill_cache
from geosam.data.transforms.build import (
    build_transforms,
    evaluation_variants,
    training_variants,
)
from geosam.runtime.preprocess import preprocess_image
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "embeddings"


def dataset_root(cfg: CfgNode, is_train: bool) -> Path:
    root = cfg.DATASETS.TRAIN if is_train else (cfg.DATASETS.VAL or cfg.DATASETS.TRAIN)
    if not root:
        raise GeosamError("DATASETS.TRAIN is not set: pass the tile dataset folder")
    return Path(root)


def uses_embedding_cache(cfg: CfgNode) -> bool:
    """Cached embeddings are only valid while the image encoder is frozen."""
    frozen = "image_encoder" not in cfg.MODEL.TRAINABLE and cfg.MODEL.ENCODER_TRAINABLE_BLOCKS == 0
    return bool(cfg.CACHE.EMBEDDINGS) and frozen


def make_dataset(cfg: CfgNode, is_train: bool, cache: EmbeddingCache | None = None) -> TileDataset:
    return TileDataset(
        dataset_root(cfg, is_train),
        cfg.DATASETS.TRAIN_SPLIT if is_train else cfg.DATASETS.VAL_SPLIT,
        build_transforms(cfg, is_train),
        cache=cache,
        max_samples=cfg.DATALOADER.MAX_SAMPLES if is_train else 0,
        fraction=cfg.DATALOADER.FRACTION if is_train else 1.0,
        seed=cfg.SEED,
        view_variants=() if is_train else evaluation_variants(cfg)[1:],
    )


def make_data_loader(
    cfg: CfgNode, is_train: bool, cache: EmbeddingCache | None = None
) -> torch.utils.data.DataLoader:
    dataset = make_dataset(cfg, is_train, cache)
    return idist.auto_dataloader(
        dataset,
        batch_size=cfg.DATALOADER.IMS_PER_BATCH,
        shuffle=is_train,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=BatchCollator(),
        drop_last=False,
    )


def prepare_embedding_cache(
    cfg: CfgNode, model: Sam, is_train: bool, progress: bool = True
) -> EmbeddingCache | None:
    """Open (and complete) the embedding cache of the training or validation dataset.

    Training needs every variant augmentation may draw; validation the chip itself (and its
    mirror images with TEST.FLIP_TTA). Each
    process encodes its share of the missing entries, then all wait for the others.
    """
    if not uses_embedding_cache(cfg):
        return None
    if is_train and any(cfg.INPUT.COLOR_JITTER):
        raise GeosamError(
            "INPUT.COLOR_JITTER changes each chip every step, but with a frozen encoder "
            "training reads cached embeddings of the unjittered chips: set CACHE.EMBEDDINGS "
            "False to run the encoder each step, or INPUT.COLOR_JITTER [0, 0, 0, 0]"
        )
    root = dataset_root(cfg, is_train)
    dataset = make_dataset(cfg, is_train)
    cache_root = Path(cfg.CACHE.DIR) if cfg.CACHE.DIR else root / CACHE_SUBDIR
    grid = model.prompt_encoder.image_embedding_size
    shape = (model.prompt_encoder.embed_dim, *grid)
    cache = EmbeddingCache(cache_root, cache_key(cfg, model, root), shape)
    variants = training_variants(cfg) if is_train else evaluation_variants(cfg)
    todo = cache.missing(dataset.tile_ids, variants)
    mine = todo[idist.get_rank() :: idist.get_world_size()]
    size, mean, std = cfg.INPUT.IMAGE_SIZE, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD

    def load_input(tile_id: str, variant: int):
        return dataset.encoder_input(
            tile_id, variant, lambda chip: preprocess_image(chip, size, mean, std)[0]
        )

    device = next(model.parameters()).device
    # batches help a GPU; on a CPU they only add memory traffic, and were slower per chip
    # (docs/benchmarks.md, decoder fine-tuning)
    batch_size = 8 if device.type == "cuda" else 1
    fill_cache(
        model, cache, mine, load_input, device, batch_size, progress and idist.get_rank() == 0
    )
    idist.barrier()
    return cache
