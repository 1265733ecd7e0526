"""A memory-bounded LRU of image embeddings, so further prompts nearby skip the encoder.

Encoding is the expensive step (seconds for ViT-B on a CPU), decoding takes milliseconds. A
user clicking around one field, or ``geosam segment`` walking prompts in spatial order, mostly
lands inside a window already encoded: :meth:`EmbeddingCache.find` returns that window's
embedding when the new prompt lies inside it with enough margin to be segmented whole.
Entries are bounded by total bytes, not count, since embeddings of different models differ
in size (ViT-B at 1024 px: 4 MiB each).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from .model import Embedding
from .windows import Box, Window

# (raster id, Window.key): the raster id is the caller's (a path, a QGIS layer id plus
# the model it was encoded with); the window key includes the output shape.
CacheKey = tuple[Hashable, tuple[int, int, int, int, int, int]]


class EmbeddingCache:
    """Embeddings by (raster id, window), least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[CacheKey, Embedding] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self.entries

    def get(self, key: CacheKey) -> Embedding | None:
        """The cached embedding of ``key``, or None (a miss)."""
        if key not in self.entries:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key: CacheKey, embedding: Embedding) -> None:
        """Cache ``embedding``; an entry larger than ``max_bytes`` on its own is not kept."""
        if key in self.entries:
            self.nbytes -= self.entries.pop(key).nbytes
        if embedding.nbytes > self.max_bytes:
            return
        self.entries[key] = embedding
        self.nbytes += embedding.nbytes
        while self.nbytes > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def find(
        self,
        raster_id: Hashable,
        box: Box,
        margin: float,
        raster_size: tuple[int, int] | None = None,
        max_scale: float = float("inf"),
    ) -> tuple[Window, Embedding] | None:
        """A cached window of ``raster_id`` holding ``box`` (pixel coordinates) with ``margin``
        pixels around it (clipped to ``raster_size`` when given, see
        :meth:`Window.contains`), no coarser than ``max_scale`` source pixels per output
        pixel (a window grown for a large parcel must not answer a small one at its coarse
        scale), most recently used first; None (a miss) if there is none.
        """
        for key in reversed(self.entries):
            window = Window(*key[1])
            if (
                key[0] == raster_id
                and max(window.scale) <= max_scale * (1 + 1e-9)
                and window.contains(box, margin, raster_size)
            ):
                self.hits += 1
                self.entries.move_to_end(key)
                return window, self.entries[key]
        self.misses += 1
        return None

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0
