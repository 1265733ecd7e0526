"""What the user asked for and what they got: prompts in raster pixels, and parcels.

Kept apart from :mod:`segmenter` (which loads onnxruntime through the runtime's model) so
the map tool's state and the Processing algorithm's prompt parsing import without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from qgis.core import QgsGeometry

from .runtime.windows import Box, prompt_box


@dataclass(frozen=True)
class Prompt:
    """Clicks and an optional box in raster pixel coordinates (GDAL's: continuous, origin at
    the top-left corner); ``labels`` 1 for a click inside the parcel, 0 outside."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    box: Box | None = None

    @property
    def positive(self) -> bool:
        """Whether the prompt says where the parcel is (a click inside or a box)."""
        return self.box is not None or bool(np.any(self.labels == 1))

    @property
    def bounds(self) -> Box:
        """The bounding box of the positive clicks and the box: what the window must hold."""
        inside = self.points[self.labels == 1]
        return prompt_box(inside if len(inside) else None, self.box)

    def with_negatives(self, negatives: np.ndarray) -> Prompt:
        """This prompt plus negative clicks (N, 2)."""
        return Prompt(
            np.concatenate([self.points, negatives.reshape(-1, 2)]),
            np.concatenate([self.labels, np.zeros(len(negatives))]),
            self.box,
        )


@dataclass(frozen=True)
class Parcel:
    """A segmented parcel: its outline in the raster's CRS and the decoder's IoU estimate."""

    geometry: QgsGeometry
    score: float
