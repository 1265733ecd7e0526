"""``geosam segment``: an exported model run over rasters at GIS prompts (or over all of them,
``--auto``, as a region in blocks on Dask), parcels written out.

Built on :mod:`geosam.runtime` (the same core as the QGIS plugin) plus rasterio and geopandas
for reading windows and writing polygons; see :mod:`geosam.segment.pipeline` (prompts) and
:mod:`geosam.segment.region` (automatic mode).
"""

from geosam.segment.auto import segment_auto
from geosam.segment.pipeline import SegmentParams, SegmentResult, segment
from geosam.segment.region import RegionOptions, RegionResult, segment_region

__all__ = [
    "RegionOptions",
    "RegionResult",
    "SegmentParams",
    "SegmentResult",
    "segment",
    "segment_auto",
    "segment_region",
]
