"""``geosam improve``: train a model further on the parcels a user corrected (:mod:`.loop`)."""

from geosam.improve.loop import ImproveParams, ImproveResult, run_improve

__all__ = ["ImproveParams", "ImproveResult", "run_improve"]
