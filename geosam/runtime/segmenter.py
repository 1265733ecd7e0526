"""Prompt → window → embedding → mask: the inference loop of ``geosam segment`` and the plugin.

:class:`PromptSegmenter` holds a model, a raster reader (:class:`~.reader.RasterReader`: the
CLI's rasterio one or the plugin's GDAL one) and the embeddings of windows already encoded.
Its steps are separate methods because the plugin's map tool runs the slow one,
:meth:`~PromptSegmenter.encode`, in a QgsTask and the others on the main thread, which owns
the cache; :func:`segment_prompts` runs them all for a batch of prompts (``geosam segment``,
the Processing algorithm), visiting prompts in spatial order so that the next prompt usually
lies in a window already encoded, and says for each prompt what it gave: a
:class:`PromptMask` or a :class:`Skip` with its reason (:mod:`.reasons`). Turning masks into
polygons (shapely, OGR) is the front ends' part.

Imports onnxruntime through :mod:`.model` only for typing; the plugin imports this module
after checking that onnxruntime loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import reasons
from .cache import EmbeddingCache
from .errors import GeosamError
from .prompts import Prompt, context_margin, inside, spatial_order, window_points
from .reader import RasterReader
from .windows import (
    Box,
    GeoTransform,
    Window,
    WindowParams,
    cut_by_window,
    prompt_box,
    prompt_window,
    sam_coords,
)

if TYPE_CHECKING:
    from .model import Embedding, Prediction, SamModel

# Embeddings kept for further prompts: 64 ViT-B windows at 1024 px.
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class PromptMask:
    """What a prompt gave: ``mask`` (H, W) bool on its window's output grid, nodata pixels
    cleared, ``geotransform`` that grid's (GDAL order, to polygonize it with), ``score`` the
    decoder's IoU estimate."""

    prompt: Prompt
    window: Window
    mask: np.ndarray
    geotransform: GeoTransform
    score: float


@dataclass(frozen=True)
class Skip:
    """A prompt that gave no mask: ``reason`` one of :mod:`.reasons`, ``detail`` the error
    that made it so, if any (for a log line)."""

    prompt: Prompt
    reason: str
    detail: str = ""


class PromptSegmenter:
    """A model and a raster reader, with the embeddings of windows already encoded.

    ``cache`` may be shared by several segmenters (the plugin keeps one across rasters and
    models): entries are keyed by the reader's ``cache_id`` and the model folder.
    """

    def __init__(
        self,
        model: SamModel,
        reader: RasterReader,
        cache: EmbeddingCache | None = None,
        params: WindowParams | None = None,
    ) -> None:
        self.model = model
        self.reader = reader
        self.cache = cache if cache is not None else EmbeddingCache(CACHE_BYTES)
        self.params = params or WindowParams()
        self.raster_id: Hashable = (reader.cache_id, str(model.model_dir))
        self.encoded = 0

    def locate(self, prompt: Prompt) -> tuple[Window, Embedding | None]:
        """The window for ``prompt`` and its embedding if cached (None: encode it first).

        A cached window answers when it holds the prompt with the context prompt_window
        would have given it; otherwise a new window is centred on the prompt. GeosamError
        for a prompt without a positive part or off the raster.
        """
        if not prompt.positive:
            raise GeosamError("click inside the parcel (left button) or drag a box around it first")
        if not inside(prompt, self.reader.size):
            raise GeosamError(
                f"the prompt lies outside {self.reader.description}: click on the image"
            )
        return self._locate_bounds(prompt.bounds)

    def _locate_bounds(self, bounds: Box) -> tuple[Window, Embedding | None]:
        """The cached window that holds ``bounds`` with context at the scale the window
        centred on it would have, or that window."""
        centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        window = prompt_window(
            bounds,
            self.reader.size,
            self.reader.pixel_size_m(*centre),
            self.model.ground_resolution_m,
            self.model.input_size,
            self.params,
        )
        margin = context_margin(bounds, self.params)
        found = self.cache.find(self.raster_id, bounds, margin, self.reader.size, max(window.scale))
        if found is not None:
            return found
        return window, self.cache.get((self.raster_id, window.key))

    def encode(self, window: Window) -> Embedding:
        """Read and encode ``window``: the slow step, safe to run off the main thread."""
        embedding = self.model.encode(self.reader.read(window))
        self.encoded += 1
        return embedding

    def remember(self, window: Window, embedding: Embedding) -> None:
        """Cache an embedding :meth:`encode` made (on the thread that owns the cache)."""
        self.cache.put((self.raster_id, window.key), embedding)

    def predict(self, prompt: Prompt, window: Window, embedding: Embedding) -> PromptMask:
        """``prompt`` decoded on ``window``'s embedding, nodata pixels removed from the mask
        (which may be empty)."""
        prediction = decode_prompt(self.model, embedding, window, prompt)
        mask = prediction.mask
        valid = self.reader.valid(window)
        if valid is not None:
            mask = mask & valid
        geotransform = window.transform(self.reader.geotransform)
        return PromptMask(prompt, window, mask, geotransform, prediction.score)

    def ensure(self, window: Window, embedding: Embedding | None) -> Embedding:
        """What :meth:`locate` found, encoded and remembered if it was not cached."""
        if embedding is None:
            embedding = self.encode(window)
            self.remember(window, embedding)
        return embedding

    def grow(self, result: PromptMask, grown: int = 0) -> tuple[Window, Embedding | None] | None:
        """Where to ask again when ``result``'s mask is cut by an edge of its window inside
        the raster (a parcel larger than the window, prompted by a point or a box the parcel
        overflows): the window holding the prompt and the whole mask with context, coarser
        as it must be, and its embedding if cached. None when the mask is whole, the window
        already is the whole raster, or ``result`` came from a window grown ``grown`` =
        ``params.max_grow`` times already (a mask that keeps reaching its window's edge is
        the model spilling, not a parcel)."""
        mask, window = result.mask, result.window
        if grown >= self.params.max_grow or not mask.any():
            return None
        if not cut_by_window(mask, window, self.reader.size):
            return None
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        corners = window.output_to_pixel(
            np.array([[cols[0], rows[0]], [cols[-1] + 1, rows[-1] + 1]])
        )
        bounds = prompt_box(corners, result.prompt.bounds)
        grown = self._locate_bounds(bounds)
        return None if grown[0] == window else grown

    def segment(self, prompt: Prompt) -> PromptMask:
        """All steps on the calling thread, encoding only a window not cached; a mask cut by
        its window's edge is asked for again on a larger window (:meth:`grow`), at most
        ``params.max_grow`` times."""
        window, embedding = self.locate(prompt)
        result = self.predict(prompt, window, self.ensure(window, embedding))
        grown = 0
        while (larger := self.grow(result, grown)) is not None:
            result = self.predict(prompt, larger[0], self.ensure(*larger))
            grown += 1
        return result


def decode_prompt(
    model: SamModel, embedding: Embedding, window: Window, prompt: Prompt
) -> Prediction:
    """Decode ``prompt`` (the clicks ``window`` holds, and its box) in the window's image."""
    points, labels = window_points(prompt, window)
    box = None
    if prompt.box is not None:
        box = sam_coords(window.pixel_to_output(np.reshape(prompt.box, (2, 2)))).reshape(4)
    return model.decode(
        embedding,
        points=sam_coords(window.pixel_to_output(points)) if len(points) else None,
        labels=labels if len(points) else None,
        box=box,
    )


def segment_prompts(
    segmenter: PromptSegmenter,
    prompts: Sequence[Prompt],
    negatives: np.ndarray | None = None,
    min_score: float | None = None,
    skipped: Counter[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    what: str = "prompts",
) -> Iterator[PromptMask | Skip]:
    """Each of ``prompts`` (positive) with the ``negatives`` (N, 2) its window holds, in
    spatial order: a :class:`PromptMask`, or a :class:`Skip` counted in ``skipped`` by
    reason. ``progress(done, total)`` is called after each prompt; ``cancelled()`` is asked
    before each, and stops the loop when true.

    GeosamError before any work when every prompt lies outside the raster (``what`` names
    them in the message): the prompts and the raster do not cover the same area.
    """
    skipped = Counter() if skipped is None else skipped
    reader, model = segmenter.reader, segmenter.model
    if not any(inside(prompt, reader.size) for prompt in prompts):
        raise GeosamError(
            f"all {len(prompts)} {what} lie outside {reader.description}: "
            "check that they cover the same area"
        )
    width, height = reader.size
    centre_pixel_m = reader.pixel_size_m(width / 2, height / 2)
    order = spatial_order(prompts, model.input_size, model.ground_resolution_m, centre_pixel_m[1])
    negatives = np.zeros((0, 2)) if negatives is None else negatives
    for done, prompt in enumerate(order):
        if cancelled is not None and cancelled():
            return
        result = _segment_one(segmenter, prompt.with_negatives(negatives), min_score)
        if isinstance(result, Skip):
            skipped[result.reason] += 1
        yield result
        if progress is not None:
            progress(done + 1, len(order))


def _segment_one(
    segmenter: PromptSegmenter, prompt: Prompt, min_score: float | None
) -> PromptMask | Skip:
    if not inside(prompt, segmenter.reader.size):
        return Skip(prompt, reasons.OUTSIDE)
    result = segmenter.segment(prompt)
    if min_score is not None and result.score < min_score:
        return Skip(prompt, reasons.BELOW_SCORE)
    if not result.mask.any():
        return Skip(prompt, reasons.EMPTY)
    return result
