"""A split of a tile dataset (see geosam.data.tiling) as a torch Dataset of chips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch

from geosam.data.embedding_cache import EmbeddingCache
from geosam.data.tiling.manifest import INSTANCES, TILES, load_manifest
from geosam.data.transforms.build import Sample
from geosam.data.transforms.dihedral import apply_variant
from geosam.utils.errors import GeosamError

Transform = Callable[
    [str, np.ndarray | None, np.ndarray, pd.DataFrame, np.random.Generator], Sample
]


class TileDataset(torch.utils.data.Dataset):
    """The chips of one split that hold at least one instance.

    With an embedding cache, items carry the cached embedding of the chosen variant instead of
    the image, and chips are not even read; ``view_variants`` are further variants whose
    cached embeddings each item carries too (test-time flips). ``max_samples`` and
    ``fraction`` take a seeded subset of the chips (the smaller of the two wins), for quick
    runs and learning curves.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform,
        cache: EmbeddingCache | None = None,
        max_samples: int = 0,
        fraction: float = 1.0,
        seed: int = 0,
        view_variants: tuple[int, ...] = (),
    ) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        tiles = pd.read_parquet(self.root / TILES)
        known = sorted(tiles["split"].unique())
        tiles = tiles[(tiles["split"] == split) & (tiles["n_instances"] > 0)]
        if tiles.empty:
            raise GeosamError(
                f"tile dataset {self.root} has no {split!r} chips with parcels "
                f"(splits present: {', '.join(known) or 'none'})"
            )
        tiles = tiles.sort_values("tile_id").reset_index(drop=True)
        keep = len(tiles)
        if not 0 < fraction <= 1:
            raise GeosamError(f"DATALOADER.FRACTION {fraction} must be in (0, 1]")
        keep = max(1, round(keep * fraction))
        if max_samples > 0:
            keep = min(keep, max_samples)
        if keep < len(tiles):
            chosen = np.sort(np.random.default_rng(seed).permutation(len(tiles))[:keep])
            tiles = tiles.iloc[chosen].reset_index(drop=True)
        self.tiles = tiles
        instances = pd.read_parquet(self.root / INSTANCES)
        instances = instances[instances["tile_id"].isin(tiles["tile_id"])]
        self.instances = {k: g.sort_values("instance_id") for k, g in instances.groupby("tile_id")}
        self.transform = transform
        self.cache = cache
        self.view_variants = view_variants

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def tile_ids(self) -> list[str]:
        return self.tiles["tile_id"].tolist()

    def read_chip(self, index: int) -> np.ndarray:
        """The (H, W, 3) uint8 chip."""
        with rasterio.open(self.root / self.tiles.at[index, "chip"]) as ds:
            return np.moveaxis(ds.read(), 0, -1)

    def read_mask(self, index: int) -> np.ndarray:
        with rasterio.open(self.root / self.tiles.at[index, "mask"]) as ds:
            return ds.read(1)

    def encoder_input(self, tile_id: str, variant: int, preprocess: Callable) -> np.ndarray:
        """The encoder input of a chip's variant, for building the embedding cache."""
        index = self.tile_ids.index(tile_id)
        chip = np.ascontiguousarray(apply_variant(self.read_chip(index), variant))
        return preprocess(chip)

    def __getitem__(self, index: int) -> Sample:
        tile_id = self.tiles.at[index, "tile_id"]
        # torch seeds its generator per DataLoader worker; drawing from it keeps runs seeded
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        image = None if self.cache is not None else self.read_chip(index)
        sample = self.transform(tile_id, image, self.read_mask(index), self.instances[tile_id], rng)
        if self.cache is not None:
            sample.embedding = self.cache.load(tile_id, sample.variant)
            sample.view_embeddings = {v: self.cache.load(tile_id, v) for v in self.view_variants}
        return sample
