"""The torch-free inference core (numpy, Pillow, onnxruntime): shared by CLI and QGIS plugin."""

from geosam.runtime.cache import EmbeddingCache
from geosam.runtime.model import Embedding, Prediction, SamModel
from geosam.runtime.windows import (
    GeoTransform,
    Window,
    WindowParams,
    map_to_pixel,
    pixel_to_map,
    prompt_box,
    prompt_window,
    sam_coords,
)

__all__ = [
    "Embedding",
    "EmbeddingCache",
    "GeoTransform",
    "Prediction",
    "SamModel",
    "Window",
    "WindowParams",
    "map_to_pixel",
    "pixel_to_map",
    "prompt_box",
    "prompt_window",
    "sam_coords",
]
