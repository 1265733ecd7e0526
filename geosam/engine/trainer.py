"""``do_train``: fine-tune SAM on prompted chips with pytorch-ignite, resumably.

What it writes into the run directory (OUTPUT_DIR; its layout and file names are
:mod:`geosam.engine.run_dir`'s): resumable checkpoints (the trained parameters only, optimizer,
LR scheduler, trainer position, best-model and early-stopping state, evaluation history, AMP
loss scaler and the caller's extras; the newest two are kept, see below), metrics.json (every
validation result, the best, and once training ends the final one), TensorBoard events (train
loss terms, gradient norm, learning rate per iteration; validation metrics overall and per
prompt kind), and the trained weights alone at the best validation mIoU so far and at the end.

Only rank 0 writes files; every process evaluates its shard of the validation data.

``do_train`` only wires named steps, as detectron2's ``build_hooks`` and ignite's
``setup_common_training_handlers`` do: the best model (:func:`attach_best_model`), early
stopping, what a checkpoint holds (:func:`resumable_state`), resuming (:func:`restore`), logging,
validation (:class:`Validation`), the steps around each epoch in their order
(:func:`attach_epoch_steps`), the run itself (:func:`run_training`) and the final files
(:func:`write_final`).

Kill-safety: ignite's DiskSaver writes each checkpoint to a temporary file and renames it, so a
``checkpoint_*.pt`` is never partial. But its Checkpoint deletes the oldest kept file *before*
writing the new one, so with one file kept a kill between the two would leave none: two are
kept, and the older survives any kill. Resuming takes the newest checkpoint that loads (falling
back to the older one if the newest cannot be read, e.g. after a crash of the machine rather than
the process) and removes temporary files a killed save left behind.

Reproducible resume: the schedule is a function of the iteration (geosam.solver), and every
epoch starts by seeding the global RNGs with SEED + epoch (and the distributed sampler with the
epoch), so a resumed run draws the same data order, augmentations and prompts as an
uninterrupted one, and ends with the same parameters. That holds for loaders whose randomness
comes from torch's global RNG when their iterator is created (shuffling samplers, worker
seeds); persistent workers keep their own RNG state across epochs and break it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import (
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    ProgressBar,
    TensorboardLogger,
)
from ignite.handlers.checkpoint import BaseSaveHandler
from ignite.metrics import RunningAverage
from ignite.utils import manual_seed
from segment_anything.modeling import Sam
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from geosam.engine.inference import (
    amp_dtype,
    autocast,
    create_evaluator,
    resolve_device,
    run_evaluation,
)
from geosam.engine.run_dir import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    FINAL_WEIGHTS,
    METRICS_FILE,
    TENSORBOARD_DIR,
    base_checkpoint_sha256,
)
from geosam.modeling.checkpoint import (
    load_state_dict_checked,
    save_trained_weights,
)
from geosam.modeling.losses import SamLoss
from geosam.modeling.prompted import DecodedPrompts, PromptedSam, batch_to_device
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_file

logger = logging.getLogger("geosam.engine")

# Resumable checkpoints kept on disk; two, so that one is always intact (see module docstring).
CHECKPOINTS_KEPT = 2
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)\.pt")


class NonFiniteError(ArithmeticError):
    """The loss, the gradients or the parameters became NaN or infinite at an iteration."""

    def __init__(self, iteration: int, what: str, value: float) -> None:
        state = "NaN" if math.isnan(value) else "infinite"
        super().__init__(f"{what} became {state} at iteration {iteration}")
        self.iteration = iteration


# ---------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------


def create_trainer(
    cfg: CfgNode,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loss_fn: SamLoss,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
) -> Engine:
    """An ignite Engine whose step trains ``net`` (a :class:`PromptedSam`, possibly wrapped in
    DistributedDataParallel) on one batch. No handlers: :func:`do_train` adds them.

    The step: decode every prompt under autocast (:func:`~geosam.engine.inference.amp_dtype`),
    take the loss over all prompts (:func:`_mean_losses`), then backpropagate and step the
    optimizer and the LR scheduler (:func:`_optimize`). A non-finite loss, or non-finite
    gradients without a loss scaler (with one they are the scaler's business), raise
    :class:`NonFiniteError` before the parameters change.

    The output is a dict of floats: ``loss``, its terms ``loss_focal``, ``loss_dice``,
    ``loss_iou`` (unweighted), and ``grad_norm`` (before clipping).
    """
    dtype = amp_dtype(cfg, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = cfg.SOLVER.CLIP_GRAD_NORM if cfg.SOLVER.CLIP_GRAD_NORM > 0 else math.inf

    def step(engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        net.train()
        batch = batch_to_device(batch, device)
        with autocast(dtype, device):
            decoded = net(batch)
        if not decoded:
            raise ValueError(
                f"training batch of tiles {batch['tile_ids']} holds no prompts; the training "
                "loader must yield chips with at least one instance"
            )
        iteration = engine.state.iteration
        terms = _mean_losses(loss_fn, decoded, iteration, device)
        grad_norm = _optimize(
            terms["loss"], optimizer, scheduler, scaler, params, max_norm, iteration
        )
        return {name: value.item() for name, value in terms.items()} | {
            "grad_norm": grad_norm.item()
        }

    return Engine(step)


def _summed_losses(loss_fn: SamLoss, decoded: list[DecodedPrompts]) -> dict[str, torch.Tensor]:
    """The loss and its terms summed over every prompt (``num_masks=1``), over all kinds."""
    sums: dict[str, torch.Tensor] = {}
    for item in decoded:
        terms = loss_fn(item.low_res_logits, item.iou_predictions, item.targets, num_masks=1.0)
        for name, value in terms.items():
            sums[name] = sums[name] + value if name in sums else value
    return sums


def _mean_losses(
    loss_fn: SamLoss, decoded: list[DecodedPrompts], iteration: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The loss and its terms summed over all prompts and kinds, normalised by the number of
    prompts over all processes divided by the world size, as SAM normalises by the number of
    masks. The count travels in one all-reduce that also carries whether any process saw a
    non-finite loss, so that all processes raise :class:`NonFiniteError` together."""
    sums = _summed_losses(loss_fn, decoded)
    count = sum(len(item) for item in decoded)
    stats = torch.tensor(
        [count, float(not torch.isfinite(sums["loss"]))], dtype=torch.float64, device=device
    )
    stats = idist.all_reduce(stats)
    if stats[1] > 0:
        local = sums["loss"].item()
        raise NonFiniteError(iteration, "loss", math.nan if math.isfinite(local) else local)
    num_masks = stats[0].item() / idist.get_world_size()
    return {name: value / num_masks for name, value in sums.items()}


def _optimize(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler | None,
    params: list[torch.Tensor],
    max_norm: float,
    iteration: int,
) -> torch.Tensor:
    """Backpropagate ``loss`` (through ``scaler`` for fp16), clip the gradient norm to
    ``max_norm``, step the optimizer and then the per-iteration LR scheduler; the gradient norm
    before clipping. Without a scaler, non-finite gradients raise before the optimizer steps."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if scaler is None:
        if not torch.isfinite(grad_norm):
            raise NonFiniteError(iteration, "gradients", grad_norm.item())
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    return grad_norm


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds
# ---------------------------------------------------------------------------------------------


class TrainedParameters:
    """The parameters of ``model`` that train, as a stateful object for ignite's Checkpoint.

    A resumable checkpoint then holds a decoder's 16 MB rather than all of ViT-H's 2.5 GB; the
    frozen rest comes from MODEL.CHECKPOINT again on resume.
    """

    def __init__(self, model: Sam) -> None:
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            name: param.detach()
            for name, param in self.model.named_parameters()
            if param.requires_grad
        }

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        trained = set(self.state_dict())
        if set(state_dict) != trained:
            raise GeosamError(
                "the checkpoint trained other parameters than MODEL.TRAINABLE and "
                "MODEL.ENCODER_TRAINABLE_BLOCKS select now: resume with the run's config.yaml"
            )
        load_state_dict_checked(self.model, dict(state_dict), "the checkpoint", complete=False)


class MetricsHistory:
    """Every validation result of the run, kept in the checkpoint so a resumed run's
    metrics.json still lists the evaluations before the interruption."""

    def __init__(self) -> None:
        self.evaluations: list[dict[str, Any]] = []
        self.stopped_early = False

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": list(self.evaluations), "stopped_early": self.stopped_early}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.evaluations = list(state_dict["evaluations"])
        self.stopped_early = bool(state_dict["stopped_early"])

    def best(self) -> dict[str, Any] | None:
        """The first evaluation with the highest mIoU (as the best checkpoint keeps it)."""
        return max(self.evaluations, key=lambda e: e["mIoU"], default=None)

    def document(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        """metrics.json's content."""
        best = self.best()
        document: dict[str, Any] = {
            "evaluations": self.evaluations,
            "best": None if best is None else {k: best[k] for k in ("epoch", "iteration", "mIoU")},
        }
        if final is not None:
            document["final"] = final
        return document


def resumable_state(
    model: Sam,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    trainer: Engine,
    best_model: Checkpoint,
    history: MetricsHistory,
    stopper: EarlyStopping | None,
    scaler: torch.amp.GradScaler | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Everything a resumed run needs to go on as if never interrupted, by checkpoint key: the
    trained parameters, optimizer, LR scheduler, trainer position, best score so far, evaluation
    history, early-stopping count and AMP loss scaler (the last two where used), and the
    caller's ``extra`` stateful objects (e.g. a sampler), which may not take the trainer's keys.
    """
    state: dict[str, Any] = {
        "model": TrainedParameters(model),
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "trainer": trainer,
        "best_model": best_model,
        "history": history,
    }
    if stopper is not None:
        state["early_stopping"] = stopper
    if scaler is not None:
        state["grad_scaler"] = scaler
    for key, value in (extra or {}).items():
        if key in state:
            raise ValueError(f"checkpoint_extra key {key!r} is reserved by the trainer")
        state[key] = value
    return state


# ---------------------------------------------------------------------------------------------
# The steps do_train wires
# ---------------------------------------------------------------------------------------------


class _TrainedWeightsSaver(BaseSaveHandler):
    """Writes ``model_best.pth`` when ignite's best-score Checkpoint decides to save.

    The best model is only ever used for inference, so instead of a second resumable checkpoint
    it is the trained-weights file of the run-directory contract, overwritten in place.
    """

    def __init__(self, model: Sam, cfg: CfgNode, path: Path, base_sha256: str | None) -> None:
        self.model, self.cfg, self.path, self.base_sha256 = model, cfg, path, base_sha256

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() == 0:
            save_trained_weights(self.model, self.cfg, self.path, self.base_sha256)

    def remove(self, filename: str) -> None:
        """Nothing to remove: the next best overwrites the same file."""


def attach_best_model(
    evaluator: Engine, model: Sam, cfg: CfgNode, path: Path, base_sha256: str | None
) -> Checkpoint:
    """Write ``path`` (model_best.pth) whenever a validation's mIoU beats every earlier one.

    ignite's best-score Checkpoint decides; its state (the best score) goes into the resumable
    checkpoint, so a resumed run still compares with the best from before the interruption.
    """
    best_model = Checkpoint(
        {"model": TrainedParameters(model)},
        _TrainedWeightsSaver(model, cfg, path, base_sha256),
        filename_prefix="best",
        score_function=Checkpoint.get_default_score_fn("mIoU"),
        score_name="val_mIoU",
        n_saved=1,
    )
    evaluator.add_event_handler(Events.COMPLETED, best_model)
    return best_model


def attach_early_stopping(cfg: CfgNode, evaluator: Engine, trainer: Engine) -> EarlyStopping | None:
    """Stop ``trainer`` after SOLVER.EARLY_STOPPING_PATIENCE validations without a better mIoU
    (None when the patience is 0: no early stopping)."""
    if cfg.SOLVER.EARLY_STOPPING_PATIENCE <= 0:
        return None
    score = Checkpoint.get_default_score_fn("mIoU")
    stopper = EarlyStopping(cfg.SOLVER.EARLY_STOPPING_PATIENCE, score, trainer)
    evaluator.add_event_handler(Events.COMPLETED, stopper)
    return stopper


def restore(
    last_checkpoint: Checkpoint, to_load: Mapping[str, Any], output_dir: Path, resume: bool
) -> None:
    """With ``resume``, load the newest readable checkpoint of ``output_dir``; without it,
    refuse a folder that holds checkpoints, so an earlier run is neither mixed into this one
    nor deleted by its checkpointing."""
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    if resume:
        resumed_from = _resume(last_checkpoint, to_load, checkpoint_dir)
        state = to_load["trainer"].state
        logger.info(
            "resumed from %s (epoch %d, iteration %d)", resumed_from, state.epoch, state.iteration
        )
    elif _checkpoint_files(checkpoint_dir):
        raise GeosamError(
            f"{output_dir} holds checkpoints of an earlier run: resume it or use another OUTPUT_DIR"
        )


def attach_logging(
    trainer: Engine,
    optimizer: torch.optim.Optimizer,
    output_dir: Path,
    resume: bool,
    progress: bool,
) -> TensorboardLogger | None:
    """The running-average loss, then on rank 0 a progress bar showing it (with ``progress``)
    and TensorBoard logging of every iteration's loss terms, gradient norm and learning rate.

    The running average is attached on every process: ignite reduces it over processes at each
    iteration, and every process must join. A resumed run's TensorBoard log drops the events a
    killed run logged after the checkpoint it resumes from. Returns rank 0's TensorBoard logger
    (None elsewhere), which the caller closes.
    """
    RunningAverage(output_transform=lambda output: output["loss"]).attach(trainer, "loss")
    if idist.get_rank() != 0:
        return None
    if progress:
        ProgressBar(persist=True).attach(trainer, metric_names=["loss"])
    purge_step = trainer.state.iteration + 1 if resume else None
    tb_logger = TensorboardLogger(log_dir=output_dir / TENSORBOARD_DIR, purge_step=purge_step)
    tb_logger.attach_output_handler(
        trainer,
        event_name=Events.ITERATION_COMPLETED,
        tag="train",
        output_transform=lambda output: output,
    )
    tb_logger.attach_opt_params_handler(
        trainer, event_name=Events.ITERATION_STARTED, optimizer=optimizer, param_name="lr"
    )
    return tb_logger


class Validation:
    """The validation step, a trainer handler: score the model on the validation loader, add
    the result to the run's history (so the next checkpoint and metrics.json hold it), log it,
    and on rank 0 write metrics.json and the TensorBoard scalars.

    Every process evaluates its shard of the validation data; the evaluator's handlers (best
    model, early stopping) run as it completes.
    """

    def __init__(
        self,
        evaluator: Engine,
        loader: DataLoader,
        history: MetricsHistory,
        output_dir: Path,
        tb_logger: TensorboardLogger | None,
    ) -> None:
        self.evaluator, self.loader, self.history = evaluator, loader, history
        self.output_dir, self.tb_logger = output_dir, tb_logger

    def attach(self, trainer: Engine, eval_period: int, before_training: bool) -> None:
        """Validate every ``eval_period`` epochs (never, if 0) and, ``before_training``, first
        of all: the untrained model is the bar fine-tuning has to clear, and model_best.pth
        stays the base decoder if no epoch beats it."""
        if before_training:
            trainer.add_event_handler(Events.STARTED, self)
        if eval_period:
            trainer.add_event_handler(Events.EPOCH_COMPLETED(every=eval_period), self)

    def __call__(self, trainer: Engine) -> None:
        metrics = run_evaluation(self.evaluator, self.loader)
        epoch, iteration = trainer.state.epoch, trainer.state.iteration
        self.history.evaluations.append({"epoch": epoch, "iteration": iteration, **metrics})
        self.history.stopped_early = self.history.stopped_early or trainer.should_terminate
        logger.info(
            "epoch %d: val mIoU %.4f, Dice %.4f, boundary IoU %.4f, F1@0.5 %.4f (%d prompts)",
            epoch,
            metrics["mIoU"],
            metrics["dice"],
            metrics["boundary_iou"],
            metrics["f1_50"],
            metrics["count"],
        )
        if idist.get_rank() == 0:
            _write_json(self.output_dir / METRICS_FILE, self.history.document())
            _log_validation(self.tb_logger, metrics, iteration)

    def ensure_final(self, trainer: Engine) -> None:
        """Validate the final model unless the last evaluation already was of it (a run that
        validates every epoch, or a finished run resumed)."""
        last = self.history.evaluations[-1] if self.history.evaluations else None
        if last is None or last["iteration"] != trainer.state.iteration:
            self(trainer)


def seed_epoch(trainer: Engine, seed: int, loader: DataLoader) -> None:
    """Seed the global RNGs with ``seed`` + epoch and the distributed sampler with the epoch:
    a resumed run then draws the same data, augmentations and prompts as an uninterrupted one
    (see the module docstring)."""
    manual_seed(seed + trainer.state.epoch)
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(trainer.state.epoch - 1)


def check_finite_parameters(trainer: Engine, model: Sam) -> None:
    """Raise :class:`NonFiniteError` if a trained parameter is NaN or infinite, before the
    epoch's checkpoint could save it."""
    for param in TrainedParameters(model).state_dict().values():
        if not torch.isfinite(param).all():
            raise NonFiniteError(trainer.state.iteration, "parameters", math.nan)


def _is_checkpoint_epoch(trainer: Engine, epoch: int, period: int) -> bool:
    """An epoch that ends with a checkpoint: every ``period``-th, the last, and one where
    training stops early (an ignite event filter)."""
    return epoch % period == 0 or epoch == trainer.state.max_epochs or trainer.should_terminate


def attach_epoch_steps(
    cfg: CfgNode,
    trainer: Engine,
    train_loader: DataLoader,
    model: Sam,
    validation: Validation | None,
    last_checkpoint: Checkpoint,
    resume: bool,
) -> None:
    """The steps around each epoch, in the order they must run.

    It starts by seeding (:func:`seed_epoch`). It ends by checking the parameters first, so that
    a NaN is never checkpointed; then validating, so that the checkpoint holds the epoch's
    evaluation, best score and early-stopping count, and sees an early stop; then saving the
    checkpoint (every SOLVER.CHECKPOINT_PERIOD epochs, at the last and at an early stop).
    """
    trainer.add_event_handler(Events.EPOCH_STARTED, seed_epoch, cfg.SEED, train_loader)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, check_finite_parameters, model)
    if validation is not None:
        validation.attach(trainer, cfg.TEST.EVAL_PERIOD, before_training=not resume)
    checkpoint_epoch = partial(_is_checkpoint_epoch, period=cfg.SOLVER.CHECKPOINT_PERIOD)
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED(event_filter=checkpoint_epoch), last_checkpoint
    )


def run_training(
    cfg: CfgNode,
    trainer: Engine,
    train_loader: DataLoader,
    history: MetricsHistory,
    validation: Validation | None,
    last_checkpoint: Checkpoint,
) -> None:
    """Train to SOLVER.MAX_EPOCHS (not at all if the checkpoint is of a finished or early
    stopped run), then validate the final model if that is not done yet.

    NaN or infinite values stop the run with a GeosamError that names the last good checkpoint,
    the one a resumed run would start from.
    """
    try:
        if trainer.state.epoch >= cfg.SOLVER.MAX_EPOCHS or history.stopped_early:
            logger.info("the checkpoint is of a finished run: nothing left to train")
        else:
            trainer.run(train_loader, max_epochs=cfg.SOLVER.MAX_EPOCHS)
        if validation is not None:
            validation.ensure_final(trainer)
    except NonFiniteError as e:
        path = last_checkpoint.last_checkpoint
        last_good = f"the last good checkpoint is {path}" if path else "no checkpoint was saved yet"
        raise GeosamError(f"{e}; {last_good}") from e


def write_final(
    cfg: CfgNode,
    model: Sam,
    trainer: Engine,
    history: MetricsHistory,
    output_dir: Path,
    base_sha256: str | None,
) -> dict[str, Any]:
    """metrics.json's final content, with the final position and evaluation; rank 0 writes it
    and model_final.pth."""
    final = {
        "epoch": trainer.state.epoch,
        "iteration": trainer.state.iteration,
        "stopped_early": history.stopped_early,
        "metrics": history.evaluations[-1] if history.evaluations else None,
    }
    document = history.document(final)
    if idist.get_rank() == 0:
        save_trained_weights(model, cfg, output_dir / FINAL_WEIGHTS, base_sha256)
        _write_json(output_dir / METRICS_FILE, document)
    return document


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def do_train(
    cfg: CfgNode,
    model: Sam,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loss_fn: SamLoss,
    *,
    output_dir: str | os.PathLike,
    resume: bool,
    checkpoint_extra: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` (the bare Sam from ``build_model``) for SOLVER.MAX_EPOCHS epochs, writing
    the run directory ``output_dir`` (module docstring). ``optimizer`` and ``scheduler`` come
    from :mod:`geosam.solver` (the scheduler stepped per iteration). Runs as a single process or
    as one of an ``idist.Parallel`` / torchrun launch (loaders made with ``idist.auto_dataloader``).

    Without a ``val_loader`` there is no evaluation, no model_best.pth and no early stopping.
    ``resume`` continues from the newest checkpoint in ``output_dir``; without it, a directory
    holding checkpoints is refused. ``checkpoint_extra``: more stateful objects saved in and
    restored from the checkpoints under their keys. ``progress``: a progress bar on rank 0.
    Returns metrics.json's content. A NaN or infinite loss raises GeosamError naming the last
    good checkpoint (:func:`run_training`).
    """
    output_dir = Path(output_dir)
    device = resolve_device(cfg)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype(cfg, device) == torch.float16 else None
    base_sha256 = base_checkpoint_sha256(cfg)
    net = _distribute(cfg, PromptedSam(model, cfg.MODEL.MULTIMASK), device)
    trainer = create_trainer(cfg, net, optimizer, scheduler, loss_fn, device, scaler)
    evaluator = create_evaluator(cfg, model, device)
    history = MetricsHistory()

    best_model = attach_best_model(evaluator, model, cfg, output_dir / BEST_WEIGHTS, base_sha256)
    stopper = attach_early_stopping(cfg, evaluator, trainer)
    to_save = resumable_state(
        model, optimizer, scheduler, trainer, best_model, history, stopper, scaler, checkpoint_extra
    )
    saver = DiskSaver(output_dir / CHECKPOINT_DIR, require_empty=False)
    last_checkpoint = Checkpoint(to_save, saver, n_saved=CHECKPOINTS_KEPT)
    restore(last_checkpoint, to_save, output_dir, resume)

    tb_logger = attach_logging(trainer, optimizer, output_dir, resume, progress)
    validation = None
    if val_loader is not None:
        validation = Validation(evaluator, val_loader, history, output_dir, tb_logger)
    elif idist.get_rank() == 0:
        logger.warning("no validation split: model_best.pth is not written, no early stopping")
    attach_epoch_steps(cfg, trainer, train_loader, model, validation, last_checkpoint, resume)
    try:
        run_training(cfg, trainer, train_loader, history, validation, last_checkpoint)
    finally:
        if tb_logger is not None:
            tb_logger.close()
    return write_final(cfg, model, trainer, history, output_dir, base_sha256)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _distribute(cfg: CfgNode, net: PromptedSam, device: torch.device) -> nn.Module:
    """``net`` on ``device``; wrapped in DistributedDataParallel under a distributed launch.

    Single-process runs do not go through ``idist.auto_model``: on a machine with several GPUs
    it would wrap the model in DataParallel, which cannot split our batches of per-image prompt
    dicts. Launch one process per GPU instead. A trainable prompt encoder leaves the embeddings
    of absent prompt kinds unused in a step, which DDP must be told about.
    """
    if idist.get_world_size() > 1:
        return idist.auto_model(net, find_unused_parameters="prompt_encoder" in cfg.MODEL.TRAINABLE)
    return net.to(device)


def _checkpoint_files(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def _resume(last_checkpoint: Checkpoint, to_load: Mapping[str, Any], directory: Path) -> Path:
    """Load the newest readable checkpoint in ``directory`` into ``to_load``; return its path.

    ``last_checkpoint`` is told which files it now keeps (the loaded one and older ones), so it
    goes on deleting the oldest; an unreadable newer file is left for the resumed run to
    overwrite when it reaches that iteration again.
    """
    if idist.get_rank() == 0 and directory.is_dir():
        for leftover in directory.glob("tmp*"):
            # DiskSaver's temporary file of a save that was killed.
            leftover.unlink(missing_ok=True)
    found = _checkpoint_files(directory)
    if not found:
        raise GeosamError(f"cannot resume: no checkpoint in {directory}")
    for index, (_, path) in enumerate(found):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            logger.warning("skipping unreadable checkpoint %s (%s)", path, str(e).split("\n")[0])
            continue
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=state)
        except (KeyError, ValueError) as e:
            raise GeosamError(
                f"cannot resume from {path}: it was written with other settings ({e}); resume "
                "with the run's config.yaml"
            ) from e
        kept = found[index : index + CHECKPOINTS_KEPT]
        last_checkpoint.load_state_dict(
            {"_saved": [(iteration, file.name) for iteration, file in reversed(kept)]}
        )
        return path
    raise GeosamError(f"cannot resume: no checkpoint in {directory} could be read")


def _log_validation(tb_logger: TensorboardLogger, metrics: Mapping[str, Any], step: int) -> None:
    """Validation means to TensorBoard: ``val/<metric>`` and ``val_<kind>/<metric>``."""
    groups = {"val": metrics, **{f"val_{k}": v for k, v in metrics["per_kind"].items()}}
    for tag, values in groups.items():
        for name, value in values.items():
            if name not in ("per_kind", "count") and value is not None:
                tb_logger.writer.add_scalar(f"{tag}/{name}", value, step)


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (:func:`~geosam.utils.publish.publish_file`)."""
    with publish_file(path) as staging:
        staging.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
