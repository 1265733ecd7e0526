"""geosam's user-facing exception, defined in :mod:`geosam.runtime.errors` (see why there)."""

from geosam.runtime.errors import GeosamError

__all__ = ["GeosamError"]
