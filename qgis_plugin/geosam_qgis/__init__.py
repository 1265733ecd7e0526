"""geosam for QGIS: segment parcels by clicking, with a fine-tuned SAM exported to ONNX.

QGIS calls :func:`classFactory` to load the plugin. Everything here imports relatively: the
runtime is the copy bundled in this folder (scripts/build_plugin.py), never a ``geosam``
package from site-packages, which may be an unrelated project of that name.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    from .plugin import GeosamPlugin

    return GeosamPlugin(iface)
