"""Which bands of a raster a model reads, and with which stretch: one check for every reader.

``geosam segment`` reads rasters with rasterio and the QGIS plugin with GDAL's own bindings
(QGIS's Python has no rasterio), but both must feed the model the bands and the uint8 mapping
it was trained on, and refuse the same rasters with the same reasons. So the decision is made
here, on what a reader can tell of a raster (band count, colour interpretations, whether it is
8-bit), and the readers only do the I/O. Band numbers are 1-based, as GDAL and rasterio count.

:func:`model_image` is the last step both share, from stretched bands to the encoder's image.
No I/O and no rasterio or GDAL: this folder is copied into the QGIS plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GeosamError

# Colour interpretations by their lower-case names, which rasterio's ColorInterp and GDAL's
# GetColorInterpretationName share.
RGB = ("red", "green", "blue")
# The stretch methods a manifest may name: uint8 as it is, or this raster's percentiles.
STRETCH_METHODS = ("none", "percentile")


def model_bands(manifest: Mapping[str, Any], colours: Sequence[str], raster: str) -> list[int]:
    """The 1 or 3 band numbers the model reads from ``raster`` (a name for messages), whose
    bands have the colour interpretations ``colours`` (one per band, any case).

    The manifest's ``bands`` when it names them (the training tiles' choice); otherwise the
    choice ``geosam tile`` makes without ``--bands``, which is what an untuned model's
    manifest means: a 1-band raster is grey, a raster whose colour interpretation names red,
    green and blue gives those (RGBN imagery gives RGB), any other with 3 or more bands its
    first three. GeosamError when the raster lacks the bands.
    """
    count = len(colours)
    bands = manifest.get("bands")
    if bands:
        if max(bands) > count:
            raise GeosamError(
                f"the model reads bands {','.join(map(str, bands))} but {raster} has {count}: "
                "give a raster of the sensor the model was trained on"
            )
        return list(bands)
    if count == 1:
        return [1]
    names = [colour.lower() for colour in colours]
    if all(colour in names for colour in RGB):
        return [names.index(colour) + 1 for colour in RGB]
    if count >= 3:
        return [1, 2, 3]
    raise GeosamError(
        f"{raster} has {count} bands but the model reads RGB (3 bands) or grey (1 band)"
    )


def stretch_method(manifest: Mapping[str, Any], dtype: str, raster: str) -> str:
    """The manifest's stretch method for ``raster`` whose selected bands are of ``dtype``
    (its name as the reader's library spells it; 8-bit is ``uint8`` or ``Byte``).

    ``"none"`` means the model saw uint8 pixels as they are, so any other dtype is refused
    rather than cast: cast uint16 values look like noise to the model. ``"percentile"`` is
    recomputed on each raster by the reader, since another scene's numbers would map this
    one's pixels differently from how training saw its own.
    """
    method = (manifest.get("stretch") or {}).get("method", "none")
    if method not in STRETCH_METHODS:
        raise GeosamError(
            f"the model's stretch method {method!r} is unknown to this geosam: update it"
        )
    if method == "none" and dtype.lower() not in ("uint8", "byte"):
        raise GeosamError(
            f"{raster} is {dtype} but the model was trained on 8-bit images without a "
            "stretch: convert it (gdal_translate -ot Byte -scale, or in QGIS Raster → "
            "Conversion → Translate, output Byte with scaling) or use a model tuned on this "
            "kind of raster"
        )
    return method


def model_image(bands: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The (H, W, 3) uint8 image the encoder takes, from a window's selected and stretched
    (1 or 3, H, W) uint8 ``bands``: a grey band repeated as RGB, and pixels outside ``valid``
    (H, W) set to 0, as tiling writes nodata into training chips."""
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    if valid is not None:
        bands[:, ~valid] = 0
    return np.ascontiguousarray(bands.transpose(1, 2, 0))
