"""``geosam segment``: an exported model run over a raster at GIS prompts (or over all of it,
``--auto``), parcels written out.

Built on :mod:`geosam.runtime` (the same core as the QGIS plugin) plus rasterio and geopandas
for reading windows and writing polygons; see :mod:`geosam.segment.pipeline`.
"""

from geosam.segment.auto import segment_auto
from geosam.segment.pipeline import SegmentParams, SegmentResult, segment

__all__ = ["SegmentParams", "SegmentResult", "segment", "segment_auto"]
