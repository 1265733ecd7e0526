"""Image embeddings of a frozen encoder, computed once per chip and variant, kept on disk.

With the image encoder frozen, its output for a chip never changes, and on a CPU one ViT-B
chip costs as much as several whole decoder steps (docs/design-notes.md). So each (chip,
dihedral variant) is encoded once, stored as fp16 beside the dataset, and training reads
embeddings instead of images.

A cache lives in a folder named by the hash of its *key*: the model type, a hash of the image
encoder's weights, the preprocessing (input size, pixel mean/std) and a hash of the tile
dataset's manifest. Anything that would change an embedding changes the key, so a stale cache is
never found; the key is also written to ``key.json`` and compared on open, so a foreign folder is
refused rather than used. Each embedding is written to a temporary file and renamed, so a run
that is interrupted while building resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from tqdm import tqdm
from yacs.config import CfgNode

from geosam.data.tiling.manifest import MANIFEST
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "geosam-embeddings/1"
KEY_FILE = "key.json"


def encoder_sha256(model: Sam) -> str:
    """A hash of the image encoder's weights: whatever their origin, equal weights, equal hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.image_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(cfg: CfgNode, model: Sam, dataset_dir: str | Path) -> dict:
    """Everything an embedding depends on."""
    manifest = Path(dataset_dir) / MANIFEST
    return {
        "format": CACHE_FORMAT,
        "model_type": cfg.MODEL.TYPE,
        "encoder_sha256": encoder_sha256(model),
        "image_size": cfg.INPUT.IMAGE_SIZE,
        "pixel_mean": list(cfg.INPUT.PIXEL_MEAN),
        "pixel_std": list(cfg.INPUT.PIXEL_STD),
        "dataset_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }


class EmbeddingCache:
    """One cache folder: ``<tile_id>.v<variant>.npy`` fp16 arrays of shape (C, h, w)."""

    def __init__(self, root: str | Path, key: dict, embedding_shape: tuple[int, int, int]):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.directory = Path(root) / digest
        self.key = key
        self.embedding_shape = tuple(embedding_shape)
        key_path = self.directory / KEY_FILE
        if key_path.exists():
            found = json.loads(key_path.read_text())
            if found != key:
                raise GeosamError(
                    f"embedding cache {self.directory} was built for another model or dataset: "
                    "delete it, or point CACHE.DIR elsewhere"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(key_path, json.dumps(key, indent=2).encode())

    def path(self, tile_id: str, variant: int) -> Path:
        return self.directory / f"{tile_id}.v{variant}.npy"

    def missing(self, tile_ids: Sequence[str], variants: Sequence[int]) -> list[tuple[str, int]]:
        return [(t, v) for t in tile_ids for v in variants if not self.path(t, v).exists()]

    def load(self, tile_id: str, variant: int) -> np.ndarray:
        path = self.path(tile_id, variant)
        try:
            array = np.load(path)
        except FileNotFoundError:
            raise GeosamError(
                f"embedding cache {self.directory} has no entry for {tile_id} variant {variant}: "
                "rebuild it (geosam train builds missing entries)"
            ) from None
        if array.shape != self.embedding_shape or array.dtype != np.float16:
            raise GeosamError(f"embedding cache entry {path} is damaged: delete it to rebuild")
        return array

    def save(self, tile_id: str, variant: int, embedding: np.ndarray) -> None:
        path = self.path(tile_id, variant)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, embedding.astype(np.float16))
        tmp.replace(path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@torch.no_grad()
def fill_cache(
    model: Sam,
    cache: EmbeddingCache,
    todo: Sequence[tuple[str, int]],
    load_input: Callable[[str, int], np.ndarray],
    device: torch.device,
    batch_size: int = 4,
    progress: bool = True,
) -> None:
    """Encode the (tile, variant) pairs in ``todo``; ``load_input(tile, variant)`` gives the
    (3, S, S) encoder input. Runs the encoder in eval mode and fp32 on every device, so an
    embedding does not depend on where the cache was built."""
    if not todo:
        return
    logger.info("caching %d image embeddings in %s", len(todo), cache.directory)
    was_training = model.image_encoder.training
    model.image_encoder.eval()
    bar = tqdm(total=len(todo), unit="emb", desc="embeddings", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            inputs = torch.from_numpy(np.stack([load_input(t, v) for t, v in chunk])).to(device)
            embeddings = model.image_encoder(inputs).float().cpu().numpy()
            for (tile_id, variant), embedding in zip(chunk, embeddings, strict=True):
                cache.save(tile_id, variant, embedding)
            bar.update(len(chunk))
    finally:
        bar.close()
        model.image_encoder.train(was_training)
