"""SAM models: building them by config, their checkpoints, freezing, and the training loss.

Importing this package imports torch and segment_anything; the rest of geosam that must run
without torch (tiling, runtime) never imports it.
"""

from geosam.modeling.build import build_model, count_parameters, set_trainable
from geosam.modeling.checkpoint import (
    load_state_dict_checked,
    load_trained_weights,
    load_tuned_weights,
    read_sam_checkpoint,
    save_sam_checkpoint,
    save_trained_weights,
    sha256_file,
)
from geosam.modeling.losses import SamLoss, build_loss
from geosam.modeling.sam import SAM_SPECS, SamSpec, build_sam, get_spec, model_type_of

__all__ = [
    "SAM_SPECS",
    "SamLoss",
    "SamSpec",
    "build_loss",
    "build_model",
    "build_sam",
    "count_parameters",
    "get_spec",
    "load_state_dict_checked",
    "load_trained_weights",
    "load_tuned_weights",
    "model_type_of",
    "read_sam_checkpoint",
    "save_sam_checkpoint",
    "save_trained_weights",
    "set_trainable",
    "sha256_file",
]
