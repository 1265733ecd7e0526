"""Pictures to look at: instance masks and prompts over their chips.

Matplotlib with the Agg backend only, so rendering works on headless machines and in CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from scipy import ndimage


def instance_outlines(mask: np.ndarray) -> np.ndarray:
    """Boolean image of the pixels on the border of each instance (ids differ from a neighbour)."""
    grown = ndimage.grey_dilation(mask, size=3)
    shrunk = ndimage.grey_erosion(mask, size=3)
    return (mask > 0) & ((grown != mask) | (shrunk != mask))


def draw_instances(
    ax: Axes,
    chip: np.ndarray,
    mask: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    points: Sequence[Sequence[float]] = (),
    title: str = "",
) -> None:
    """Draw an (H, W, 3) chip with coloured instance fills, outlines, boxes and points."""
    ax.imshow(chip)
    if mask.max() > 0:
        palette = np.random.default_rng(0).uniform(0.2, 1.0, size=(int(mask.max()) + 1, 3))
        overlay = np.zeros((*mask.shape, 4))
        overlay[..., :3] = palette[mask]
        overlay[..., 3] = np.where(mask > 0, 0.25, 0.0)
        overlay[instance_outlines(mask)] = (1.0, 1.0, 0.0, 1.0)
        ax.imshow(overlay, interpolation="nearest")
    for x0, y0, x1, y1 in boxes:
        corner, width, height = (x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1
        ax.add_patch(Rectangle(corner, width, height, fill=False, ec="cyan", lw=0.8))
    if len(points):
        xy = np.asarray(points)
        ax.scatter(xy[:, 0], xy[:, 1], s=12, c="red", edgecolors="white", linewidths=0.5)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
