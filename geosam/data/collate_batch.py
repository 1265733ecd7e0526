"""Collating samples with a variable number of prompts per chip into one batch dict.

Chips (or their embeddings) stack into one tensor; prompts cannot, since each chip has its own
count of each kind, so they stay a list with one dict of tensors per chip. See the batch
contract in :mod:`geosam.modeling.prompted`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from geosam.data.transforms.build import Sample


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.bool_:
        return torch.from_numpy(array)
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(array.astype(np.float32))


class BatchCollator:
    """``collate_fn`` for :class:`~geosam.data.datasets.TileDataset` loaders."""

    def __call__(self, samples: Sequence[Sample]) -> dict:
        batch: dict = {
            "tile_ids": [s.tile_id for s in samples],
            "variants": [s.variant for s in samples],
            "input_sizes": torch.tensor([s.input_size for s in samples], dtype=torch.long),
            "original_sizes": torch.tensor([s.original_size for s in samples], dtype=torch.long),
            "prompts": [
                {
                    kind: {k: _tensor(v) for k, v in arrays.items()}
                    for kind, arrays in s.prompts.items()
                }
                for s in samples
            ],
        }
        if samples[0].embedding is not None:
            batch["embeddings"] = torch.from_numpy(np.stack([s.embedding for s in samples])).float()
            batch["view_embeddings"] = {
                variant: torch.from_numpy(np.stack([s.view_embeddings[variant] for s in samples]))
                for variant in samples[0].view_embeddings
            }
        else:
            batch["images"] = torch.from_numpy(np.stack([s.image for s in samples]))
        return batch
