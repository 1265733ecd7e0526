"""``geosam train``: from a config to a finished run directory, on one or many processes.

The run directory is the contract with export and evaluation (see DESIGN.md): ``config.yaml``
(the frozen, merged config), ``checkpoints/`` (resumable), ``model_final.pth`` and
``model_best.pth`` (the trained parameters only, with the base checkpoint's sha256 and model
type), ``metrics.json`` and TensorBoard events in ``tb/``.

Distributed training goes through ``ignite.distributed``: started by ``torchrun`` (or any
launcher that sets the usual environment), each process joins the group; with
``nproc_per_node`` it spawns the processes itself. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import ignite.distributed as idist
import torch
import yaml
from yacs.config import CfgNode

from geosam.data.build import make_data_loader, make_dataset, prepare_embedding_cache
from geosam.engine.trainer import do_train
from geosam.modeling import build_loss, build_model
from geosam.solver import make_lr_scheduler, make_optimizer
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


def launch_training(
    cfg: CfgNode,
    resume: bool = False,
    overwrite: bool = False,
    nproc_per_node: int | None = None,
    progress: bool = True,
) -> None:
    """Check the inputs and the run directory, then train in this process, the torchrun group,
    or spawned ones. The training split is opened first, so a wrong dataset fails in a second,
    not after a model is built."""
    make_dataset(cfg, is_train=True)
    prepare_run_dir(cfg, resume, overwrite, write=_is_launcher_rank0())
    backend = None
    if nproc_per_node or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node) as parallel:
        parallel.run(_train_process, cfg, resume, progress)


def _is_launcher_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_run_dir(cfg: CfgNode, resume: bool, overwrite: bool, write: bool) -> Path:
    """Refuse to mix runs: a folder holding a run needs --resume (same config) or --overwrite."""
    run_dir = Path(cfg.OUTPUT_DIR)
    saved = run_dir / CONFIG_FILE
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / CHECKPOINT_DIR).is_dir() or not saved.is_file():
            raise GeosamError(f"--resume: {run_dir} holds no run to resume (no {CHECKPOINT_DIR}/)")
        difference = _first_difference(
            yaml.safe_load(saved.read_text()), yaml.safe_load(cfg.dump())
        )
        if difference:
            raise GeosamError(
                f"--resume: {difference} differs from {saved}; resume with the run's own config "
                f"(--config-file {saved})"
            )
        return run_dir
    if occupied and not overwrite:
        raise GeosamError(
            f"output folder {run_dir} holds another run: pass --resume to continue it, "
            "--overwrite to replace it, or set OUTPUT_DIR"
        )
    if write:
        if occupied:
            shutil.rmtree(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            saved.write_text(cfg.dump())
        except OSError as exc:
            raise GeosamError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
    return run_dir


def _first_difference(a: object, b: object, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"config key {prefix.rstrip('.')}"


def _train_process(local_rank: int, cfg: CfgNode, resume: bool, progress: bool) -> None:
    from geosam.utils.logger import setup_logger

    if idist.get_rank() > 0:
        logging.getLogger("geosam").setLevel(logging.WARNING)
    else:
        setup_logger()
    torch.manual_seed(cfg.SEED + idist.get_rank())
    device = idist.device() if cfg.MODEL.DEVICE == "auto" else torch.device(cfg.MODEL.DEVICE)
    model = build_model(cfg).to(device)
    train_cache = prepare_embedding_cache(cfg, model, is_train=True, progress=progress)
    train_loader = make_data_loader(cfg, is_train=True, cache=train_cache)
    val_loader = _val_loader_or_none(cfg, model, progress)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(train_loader))
    do_train(
        cfg,
        model,
        train_loader,
        val_loader,
        optimizer,
        scheduler,
        build_loss(cfg),
        output_dir=Path(cfg.OUTPUT_DIR),
        resume=resume,
        progress=progress,
    )


def _val_loader_or_none(
    cfg: CfgNode, model: torch.nn.Module, progress: bool
) -> torch.utils.data.DataLoader | None:
    """The validation loader, or None (with a warning) when the dataset has no val chips."""
    try:
        cache = prepare_embedding_cache(cfg, model, is_train=False, progress=progress)
        return make_data_loader(cfg, is_train=False, cache=cache)
    except GeosamError as exc:
        logger.warning("no validation: %s", exc)
        return None
