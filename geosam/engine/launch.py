"""``geosam train``: from a config to a finished run folder, on one or many processes.

The run folder's layout, the contract with export and evaluation, is in
:mod:`geosam.engine.run_dir`. It is checked before anything is built (a taken folder fails in a
second) but written only once the model, the data and the optimizer are: a run that cannot
start (a corrupt, foreign or malicious checkpoint, a missing dataset) leaves no folder behind,
and with ``--overwrite`` the old run stays until the new one starts. A resumed run's folder is
never rewritten. A failure once training has started keeps the folder: it holds what the
error names (the last good checkpoint, the TensorBoard curves of a diverging loss).

Distributed training goes through ``ignite.distributed``: started by ``torchrun`` (or any
launcher that sets the usual environment), each process joins the group; with
``nproc_per_node`` it spawns the processes itself. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ignite.distributed as idist
import torch
from torch.multiprocessing import ProcessRaisedException
from yacs.config import CfgNode

from geosam.data.build import make_data_loader, make_dataset, prepare_embedding_cache
from geosam.engine.run_dir import check_run_dir, create_run_dir
from geosam.engine.trainer import do_train
from geosam.modeling import build_loss, build_model
from geosam.solver import make_lr_scheduler, make_optimizer
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)


def launch_training(
    cfg: CfgNode,
    resume: bool = False,
    overwrite: bool = False,
    nproc_per_node: int | None = None,
    progress: bool = True,
) -> None:
    """Check the inputs and the run folder, then train in this process, the torchrun group,
    or spawned ones. The training split is opened first, so a wrong dataset fails in a second,
    not after a model is built."""
    make_dataset(cfg, is_train=True)
    check_run_dir(cfg, resume, overwrite)
    backend = None
    if nproc_per_node or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node) as parallel:
        try:
            parallel.run(_train_process, cfg, resume, progress)
        except ProcessRaisedException as exc:
            message = _geosam_error_message(exc)
            if message is None:
                raise
            raise GeosamError(message) from None


def _geosam_error_message(exc: ProcessRaisedException) -> str | None:
    """The message of the GeosamError a spawned process raised, if that is what it raised, so
    it reaches the user as the same one line as in a single process: an exception crosses the
    process boundary only as its traceback's text, whose last line is ``<class>: <message>``."""
    last = str(exc).strip().splitlines()[-1]
    prefix = f"{GeosamError.__module__}.{GeosamError.__qualname__}: "
    return last.removeprefix(prefix) if last.startswith(prefix) else None


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
    if not resume and idist.get_rank() == 0:
        create_run_dir(cfg)
    # the other ranks start training (and rank 0's checkpoint saver) in the folder it made
    idist.barrier()
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
