"""geosam: fine-tune Segment Anything on georeferenced parcels and use it in GIS."""

__version__ = "0.1.0"
