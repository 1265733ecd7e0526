"""Training and evaluation transforms: geometric variants, prompt sampling, SAM's input frame."""

from geosam.data.transforms.build import build_transforms
from geosam.data.transforms.dihedral import allowed_variants, apply_variant

__all__ = ["allowed_variants", "apply_variant", "build_transforms"]
