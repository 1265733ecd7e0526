"""Reading SAM checkpoints and writing and reading geosam's trained weights.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint is data from
elsewhere, and unpickling anything but tensors and plain containers can run code. Everything a
user can get wrong (path, corrupt file, another model's checkpoint) is one GeosamError line.

Trained weights are what a run produces besides its resumable checkpoints: only the parameters
that trained (a few MB for a decoder instead of 375 MB-2.5 GB), plus enough metadata to refuse
them on a model they do not belong to::

    {"format": "geosam-weights/1", "model_type": "vit_b", "image_size": 1024,
     "base_checkpoint_sha256": "<hex>" or None, "trainable": ["mask_decoder"],
     "encoder_trainable_blocks": 0, "state_dict": {name: tensor, ...}}
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam
from yacs.config import CfgNode

from geosam.modeling.sam import PATCH_SIZE, get_spec, model_type_of
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_file

TRAINED_WEIGHTS_FORMAT = "geosam-weights/1"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints reach 2.5 GB).

    Memoised on path, size and modification time: the trainer and the embedding cache both ask
    for the base checkpoint's hash, and hashing ViT-H twice costs seconds.
    """
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise GeosamError(f"cannot hash {path}: file not found")
    stat = resolved.stat()
    return _sha256(resolved, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sam_checkpoint(path: str, model_type: str, image_size: int) -> dict[str, torch.Tensor]:
    """Read an official-format SAM checkpoint (a plain ``Sam.state_dict()``) for ``model_type``
    at ``image_size`` px.

    Runs before the model is built, so a wrong file fails as soon as it is read rather than
    after initialising ViT-H's 636M parameters. Checks, in the order that gives the most useful
    message: readable weights, not geosam trained weights, an encoder of ``model_type`` (width
    and depth), position embeddings for ``image_size``. :func:`load_state_dict_checked` then
    compares it key by key with the model.
    """
    state_dict = _read(path, "checkpoint")
    if state_dict.get("format") == TRAINED_WEIGHTS_FORMAT:
        raise GeosamError(
            f"checkpoint {path} holds geosam trained weights (only the trained parts of a "
            f"{state_dict.get('model_type')}), not a SAM checkpoint: set MODEL.CHECKPOINT to "
            "the base checkpoint they were trained from and load them as trained weights"
        )
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise GeosamError(f"checkpoint {path} is not a SAM state dict (names → tensors)")
    found = model_type_of(state_dict)
    if found is None:
        wanted = get_spec(model_type).official_checkpoint or f"a {model_type} state dict"
        raise GeosamError(
            f"checkpoint {path} is not a SAM checkpoint of a known type; MODEL.TYPE "
            f"{model_type} wants {wanted}"
        )
    if found != model_type:
        raise GeosamError(
            f"checkpoint {path} is a {found} checkpoint but MODEL.TYPE is {model_type}"
        )
    pos_embed = state_dict.get("image_encoder.pos_embed")
    grid = image_size // PATCH_SIZE
    if pos_embed is not None and tuple(pos_embed.shape[1:3]) != (grid, grid):
        raise GeosamError(
            f"checkpoint {path} is for {pos_embed.shape[1] * PATCH_SIZE} px inputs but "
            f"INPUT.IMAGE_SIZE is {image_size}"
        )
    return state_dict


def load_state_dict_checked(
    model: Sam, state_dict: dict[str, torch.Tensor], source: str | os.PathLike, complete: bool
) -> None:
    """``model.load_state_dict`` after checking, as one GeosamError line naming ``source``,
    that ``state_dict`` has no key the model lacks, the model's shape for each key, and, if
    ``complete``, every key of the model (a full checkpoint rather than trained parts)."""
    expected = model.state_dict()
    problems = []
    missing = sorted(expected.keys() - state_dict.keys()) if complete else []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_some(missing)})")
    unexpected = sorted(state_dict.keys() - expected.keys())
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if not problems:
        for key, value in state_dict.items():
            if value.shape != expected[key].shape:
                problems.append(
                    f"{key} has shape {tuple(value.shape)}, the model {tuple(expected[key].shape)}"
                )
                break
    if problems:
        raise GeosamError(
            f"{source} does not match the {model_type_of(expected)} architecture: "
            f"{'; '.join(problems)}"
        )
    model.load_state_dict(state_dict, strict=complete)


def save_trained_weights(
    model: Sam, cfg: CfgNode, path: str | os.PathLike, base_checkpoint_sha256: str | None
) -> None:
    """Write the parameters of ``model`` that require grad, with metadata, atomically.

    ``model`` is the bare Sam, not a DistributedDataParallel wrapper (whose names carry a
    ``module.`` prefix). ``base_checkpoint_sha256`` is :func:`sha256_file` of MODEL.CHECKPOINT,
    or None for a randomly initialised tiny model.
    """
    state_dict = {
        name: param.detach().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    if not state_dict:
        raise ValueError("model has no trainable parameters to save")
    payload = {
        "format": TRAINED_WEIGHTS_FORMAT,
        "model_type": cfg.MODEL.TYPE,
        "image_size": cfg.INPUT.IMAGE_SIZE,
        "base_checkpoint_sha256": base_checkpoint_sha256,
        "trainable": list(cfg.MODEL.TRAINABLE),
        "encoder_trainable_blocks": cfg.MODEL.ENCODER_TRAINABLE_BLOCKS,
        "state_dict": state_dict,
    }
    _save_atomically(payload, Path(path))


def save_sam_checkpoint(model: Sam, path: str | os.PathLike) -> None:
    """Write ``model``'s whole ``state_dict`` in the official checkpoint format, atomically.

    What a model trained from scratch or fully fine-tuned becomes for everything that takes a
    SAM checkpoint: MODEL.CHECKPOINT of another run (the stand-in foundation model that
    configs/tiny_pretrain.yaml trains), or ``segment_anything``'s own ``sam_model_registry``
    for the official sizes.
    """
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    _save_atomically(state_dict, Path(path))


def _save_atomically(payload: dict[str, Any], target: Path) -> None:
    with publish_file(target) as staging:
        torch.save(payload, staging)


def load_trained_weights(
    model: Sam, path: str | os.PathLike, base_checkpoint_sha256: str | None = None
) -> dict[str, Any]:
    """Load trained weights into ``model`` (already holding its base weights); return metadata.

    Refuses weights for another model type, and, when ``base_checkpoint_sha256`` is given,
    weights trained from another base checkpoint: the untrained parts would not match them.
    """
    payload = _read(path, "trained weights")
    if payload.get("format") != TRAINED_WEIGHTS_FORMAT:
        raise GeosamError(
            f"{path} is not a geosam trained-weights file ({TRAINED_WEIGHTS_FORMAT}); a full SAM "
            "checkpoint goes in MODEL.CHECKPOINT"
        )
    model_type = model_type_of(model.state_dict())
    if payload["model_type"] != model_type:
        raise GeosamError(
            f"trained weights {path} are for {payload['model_type']} but the model is {model_type}"
        )
    trained_on = payload["base_checkpoint_sha256"]
    if base_checkpoint_sha256 is not None and trained_on != base_checkpoint_sha256:
        raise GeosamError(
            f"trained weights {path} were trained from base checkpoint sha256 {trained_on} but "
            f"MODEL.CHECKPOINT has sha256 {base_checkpoint_sha256}"
        )
    load_state_dict_checked(model, payload["state_dict"], path, complete=False)
    return {key: value for key, value in payload.items() if key != "state_dict"}


def load_tuned_weights(
    model: Sam, path: str | os.PathLike, base_checkpoint_sha256: str | None
) -> dict[str, Any]:
    """:func:`load_trained_weights` for a model built from MODEL.CHECKPOINT with sha256
    ``base_checkpoint_sha256`` (None: randomly initialised), also refusing weights trained from
    a checkpoint on a random base: the parts they did not train would not match."""
    metadata = load_trained_weights(model, path, base_checkpoint_sha256)
    if base_checkpoint_sha256 is None and metadata["base_checkpoint_sha256"] is not None:
        raise GeosamError(
            f"trained weights {path} were trained from a checkpoint (sha256 "
            f"{metadata['base_checkpoint_sha256']}) but MODEL.CHECKPOINT is empty: give "
            "MODEL.CHECKPOINT /path/to/that/checkpoint"
        )
    return metadata


def _read(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """``torch.load`` of a dict, safely, with every failure as one line naming ``path``."""
    if not Path(path).is_file():
        raise GeosamError(f"{what} {path} not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch raises RuntimeError, UnpicklingError, EOFError, ... with multi-line advice to
        # retry without weights_only, which is exactly what must not be done with a stranger's
        # file. Keep the first sentence as the reason.
        reason = str(e).split("\n", 1)[0].split(". ", 1)[0].strip() or type(e).__name__
        raise GeosamError(
            f"{what} {path} is corrupt or not a plain PyTorch weights file ({reason})"
        ) from e
    if not isinstance(loaded, dict):
        raise GeosamError(f"{what} {path} holds a {type(loaded).__name__}, not a dict of weights")
    return loaded


def _some(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
