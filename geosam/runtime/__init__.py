"""The torch-free inference core (numpy, Pillow, onnxruntime): shared by CLI and QGIS plugin.

Every module here imports only the standard library, numpy, Pillow, onnxruntime and its
siblings (relatively), so ``scripts/build_plugin.py`` copies this folder into the plugin as it
is. The namespace is lazy: :mod:`geosam.runtime.errors` is imported by every geosam command and
must not load onnxruntime with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbeddingCache": ".cache",
    "Embedding": ".model",
    "Prediction": ".model",
    "Prompt": ".prompts",
    "PromptSegmenter": ".segmenter",
    "RasterReader": ".reader",
    "SamModel": ".model",
    "GeoTransform": ".windows",
    "Window": ".windows",
    "WindowParams": ".windows",
    "map_to_pixel": ".windows",
    "pixel_to_map": ".windows",
    "prompt_box": ".windows",
    "prompt_window": ".windows",
    "sam_coords": ".windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
