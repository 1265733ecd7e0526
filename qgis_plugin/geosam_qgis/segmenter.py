"""Prompt → window → embedding → mask → parcel geometry: the plugin's inference path.

The map tool and the Processing algorithm both go through :class:`Segmenter`, as the CLI goes
through geosam/segment/pipeline.py, over the same runtime (copied into this plugin by
scripts/build_plugin.py). The steps are separate methods because the map tool runs the slow
one, :meth:`Segmenter.encode`, in a QgsTask and the others on the main thread, while the
algorithm runs them all in its own thread through :meth:`Segmenter.segment`.

Windows follow the positive part of a prompt (its clicks inside and its box); negative clicks
inside the chosen window are added to it. A negative click only means something in the image
it was made on, and a far negative click must not drag the window off the parcel.

This module imports onnxruntime (through the runtime's model); import it only after
:func:`geosam_qgis.dependencies.require_onnxruntime`.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from qgis.core import QgsGeometry, QgsPointXY

from .polygonize import mask_to_geometry, prompted_parts
from .prompts import Parcel, Prompt
from .raster_reader import RasterWindows
from .runtime.cache import EmbeddingCache
from .runtime.errors import GeosamError
from .runtime.model import Embedding, SamModel
from .runtime.windows import Window, WindowParams, pixel_to_map, prompt_window, sam_coords

# Embeddings kept for further clicks: 64 ViT-B windows at 1024 px.
CACHE_BYTES = 256 * 2**20


class Segmenter:
    """A model and a raster, with the embeddings of windows already encoded."""

    def __init__(
        self,
        model: SamModel,
        raster: RasterWindows,
        cache: EmbeddingCache | None = None,
        params: WindowParams | None = None,
    ) -> None:
        self.model = model
        self.raster = raster
        self.cache = cache if cache is not None else EmbeddingCache(CACHE_BYTES)
        self.params = params or WindowParams()
        # Embeddings depend on the raster, the model and how the raster is read.
        self.raster_id: Hashable = (raster.source, str(model.model_dir), tuple(raster.bands))

    def check_inside(self, prompt: Prompt) -> None:
        """GeosamError unless every click lies on the raster and the box overlaps it."""
        width, height = self.raster.size
        x, y = prompt.points[:, 0], prompt.points[:, 1]
        clicks_inside = bool(np.all((x >= 0) & (x <= width) & (y >= 0) & (y <= height)))
        box_inside = prompt.box is None or (
            prompt.box[0] < width
            and prompt.box[2] > 0
            and prompt.box[1] < height
            and prompt.box[3] > 0
        )
        if not (clicks_inside and box_inside):
            raise GeosamError(
                f"the prompt lies outside raster layer {self.raster.name}: click on the image"
            )

    def locate(self, prompt: Prompt) -> tuple[Window, Embedding | None]:
        """The window for ``prompt`` and its embedding if cached (None: encode it first).

        A cached window answers when it holds the prompt with the context prompt_window
        would have given it; otherwise a new window is centred on the prompt. GeosamError
        for a prompt off the raster or too large for the model.
        """
        if not prompt.positive:
            raise GeosamError("click inside the parcel (left button) or drag a box around it first")
        self.check_inside(prompt)
        bounds = prompt.bounds
        extent = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
        margin = self.params.margin * extent + self.params.min_margin_px
        found = self.cache.find(self.raster_id, bounds, margin, self.raster.size)
        if found is not None:
            return found
        centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        window = prompt_window(
            bounds,
            self.raster.size,
            self.raster.pixel_size_m(*centre),
            self.model.ground_resolution_m,
            self.model.input_size,
            self.params,
        )
        return window, None

    def encode(self, window: Window) -> Embedding:
        """Read and encode ``window``: the slow step, safe to run off the main thread."""
        return self.model.encode(self.raster.read(window))

    def remember(self, window: Window, embedding: Embedding) -> None:
        """Cache an embedding :meth:`encode` made (on the thread that owns the cache)."""
        self.cache.put((self.raster_id, window.key), embedding)

    def predict(
        self, prompt: Prompt, window: Window, embedding: Embedding, simplify: float = 0.0
    ) -> Parcel | None:
        """The parcel under ``prompt`` in ``window``, simplified by ``simplify`` map units of
        the raster's CRS; None when the mask is empty (after removing nodata pixels)."""
        held = np.array([window.contains((x, y, x, y)) for x, y in prompt.points], dtype=bool)
        points, labels = prompt.points[held], prompt.labels[held]
        box = None
        if prompt.box is not None:
            box = sam_coords(window.pixel_to_output(np.reshape(prompt.box, (2, 2)))).reshape(4)
        prediction = self.model.decode(
            embedding,
            points=sam_coords(window.pixel_to_output(points)) if len(points) else None,
            labels=labels if len(points) else None,
            box=box,
        )
        mask = prediction.mask
        valid = self.raster.valid(window)
        if valid is not None:
            mask = mask & valid
        gt = self.raster.geotransform
        geometry = mask_to_geometry(mask, window.transform(gt), simplify)
        if geometry is None:
            return None
        clicks = pixel_to_map(gt, prompt.points[prompt.labels == 1])
        box = None
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            corners = pixel_to_map(gt, np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)]))
            box = QgsGeometry.fromPolygonXY([[QgsPointXY(*xy) for xy in corners]])
        return Parcel(prompted_parts(geometry, clicks, box), prediction.score)

    def segment(self, prompt: Prompt, simplify: float = 0.0) -> Parcel | None:
        """All steps on the calling thread, encoding only windows not cached."""
        window, embedding = self.locate(prompt)
        if embedding is None:
            embedding = self.encode(window)
            self.remember(window, embedding)
        return self.predict(prompt, window, embedding, simplify)

    def half_pixel(self, window: Window) -> float:
        """Half a window pixel in map units: a simplification that removes the staircase of
        pixel edges without moving an outline by more than half a pixel."""
        gt = window.transform(self.raster.geotransform)
        return 0.5 * min(abs(gt[1]), abs(gt[5]))
