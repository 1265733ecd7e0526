"""Training on pytorch-ignite: decoding, learning, checkpoints, resuming, NaN and SIGKILL.

Batches are made by hand in the data loader's format, with cached "embeddings" as a frozen
encoder would give: each chip's embedding is one random vector per parcel on a background
vector, parcels aligned to the 16 px embedding grid, so the tiny model's decoder can learn to
segment them exactly. The module also runs as a script: the training run a test kills.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint

from geosam.config import load_config
from geosam.engine.inference import inference
from geosam.engine.run_dir import CHECKPOINT_DIR
from geosam.engine.trainer import TrainedParameters, create_trainer, do_train
from geosam.modeling import SAM_SPECS, SamLoss, build_loss, build_model, load_trained_weights
from geosam.modeling.prompted import PromptedSam, decode_batch, predict_masks
from geosam.solver import make_lr_scheduler, make_optimizer
from geosam.utils.errors import GeosamError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZE = 256  # tiny.yaml's INPUT.IMAGE_SIZE: 16x16 embeddings, 64x64 low-resolution masks
GRID = SIZE // 16
EMBED_DIM = SAM_SPECS["tiny"].prompt_embed_dim
# 4 epochs of 2 iterations; evaluation and a checkpoint after every epoch.
RUN_OPTS = ("SOLVER.MAX_EPOCHS", "4", "SOLVER.WARMUP_ITERS", "3", "TEST.EVAL_PERIOD", "1")
CALLS_PER_ITERATION = 2  # one image per batch, prompt kinds box and point: two loss calls


def tiny_cfg(*opts: str):
    return load_config(str(CONFIGS / "tiny.yaml"), [*RUN_OPTS, *opts])


def parcel_batch(
    seed: int, images: int = 1, with_points: bool = False, with_auto: bool = False
) -> dict:
    """A batch of ``images`` chips with two rectangular parcels each, prompted by their box and
    their centre point (and, with ``with_points``, two positives, one negative, one pad; with
    ``with_auto``, automatic-mode points: both centres and two points on no parcel)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings, prompts = [], []
    for _ in range(images):
        embedding = torch.randn(EMBED_DIM, 1, 1, generator=generator).repeat(1, GRID, GRID)
        boxes, targets = [], []
        for left, top in ((1, 1), (9, 8)):
            width, height = torch.randint(3, 7, (2,), generator=generator).tolist()
            embedding[:, top : top + height, left : left + width] = torch.randn(
                EMBED_DIM, 1, 1, generator=generator
            )
            x0, y0, x1, y1 = 16 * left, 16 * top, 16 * (left + width), 16 * (top + height)
            target = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            target[y0:y1, x0:x1] = True
            boxes.append([x0, y0, x1, y1])
            targets.append(target)
        boxes_t, targets_t = torch.tensor(boxes, dtype=torch.float32), torch.stack(targets)
        centres = (boxes_t[:, :2] + boxes_t[:, 2:]) / 2
        ids = torch.tensor([1, 2])
        chip = {
            "box": {"boxes": boxes_t, "targets": targets_t, "instance_ids": ids},
            "point": {
                "coords": centres[:, None],
                "labels": torch.ones(2, 1),
                "targets": targets_t,
                "instance_ids": ids,
            },
        }
        if with_points:
            outside = torch.tensor([[200.0, 20.0], [20.0, 250.0]])
            chip["points"] = {
                "coords": torch.stack(
                    [centres, boxes_t[:, :2] + 8, outside, torch.zeros(2, 2)], dim=1
                ),
                "labels": torch.tensor([[1.0, 1.0, 0.0, -1.0]] * 2),
                "targets": targets_t,
                "instance_ids": ids,
            }
        if with_auto:
            # Parcels span at most grid cells 1-7 and 8-15: these two points are off both.
            junk = torch.tensor([[200.0, 40.0], [40.0, 200.0]])
            chip["auto"] = {
                "coords": torch.cat([centres, junk])[:, None],
                "labels": torch.ones(4, 1),
                "targets": torch.cat([targets_t, torch.zeros_like(targets_t)]),
                "instance_ids": torch.tensor([1, 2, 0, 0]),
            }
        embeddings.append(embedding)
        prompts.append(chip)
    return {
        "tile_ids": [f"tile{seed}_{i}" for i in range(images)],
        "variants": [0] * images,
        "embeddings": torch.stack(embeddings).half(),  # the cache stores fp16
        "input_sizes": torch.tensor([[SIZE, SIZE]] * images),
        "original_sizes": torch.tensor([[SIZE, SIZE]] * images),
        "prompts": prompts,
    }


BATCHES = [parcel_batch(0), parcel_batch(1)]


class ScriptedLoss(SamLoss):
    """The configured loss, recording the learning rate at each call; from call ``fail_at``
    (0-based) on it returns NaN, raises, or hangs (``mode``) to simulate what goes wrong."""

    def __init__(self, cfg, optimizer, fail_at: int | None = None, mode: str = "") -> None:
        loss = build_loss(cfg)
        super().__init__(
            loss.focal_weight,
            loss.dice_weight,
            loss.iou_weight,
            loss.focal_alpha,
            loss.focal_gamma,
            loss.mask_threshold,
        )
        self.optimizer, self.fail_at, self.mode = optimizer, fail_at, mode
        self.lrs: list[float] = []

    def forward(self, *args, **kwargs):
        if self.fail_at is not None and len(self.lrs) >= self.fail_at:
            if self.mode == "crash":
                raise KeyboardInterrupt("simulated interruption")
            if self.mode == "hang":
                Path(os.environ["GEOSAM_TEST_MARKER"]).touch()
                time.sleep(600)
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        out = super().forward(*args, **kwargs)
        if self.mode == "nan" and self.fail_at is not None and len(self.lrs) > self.fail_at:
            out["loss"] = out["loss"] * math.nan
        return out


def train(cfg, output_dir: Path, resume: bool = False, fail_at=None, mode="", batches=BATCHES):
    """Build everything from ``cfg`` as the CLI does and train; (model, loss, metrics doc)."""
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(batches))
    loss = ScriptedLoss(cfg, optimizer, fail_at, mode)
    document = do_train(
        cfg,
        model,
        batches,
        batches,
        optimizer,
        scheduler,
        loss,
        output_dir=output_dir,
        resume=resume,
    )
    return model, loss, document


def trained(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in TrainedParameters(model).state_dict().items()}


def assert_same_parameters(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def checkpoints(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / CHECKPOINT_DIR).iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its final parameters, learning rates and metrics."""
    output_dir = tmp_path_factory.mktemp("reference")
    model, loss, document = train(tiny_cfg(), output_dir)
    return {"params": trained(model), "lrs": loss.lrs, "document": document, "dir": output_dir}


def test_decode_batch_one_result_per_image_and_kind():
    cfg = tiny_cfg()
    model = build_model(cfg)
    batch = parcel_batch(3, images=2, with_points=True)
    decoded = decode_batch(model, batch, multimask=True)
    assert [(d.image_index, d.kind) for d in decoded] == [
        (i, kind) for i in (0, 1) for kind in ("box", "point", "points")
    ]
    for item in decoded:
        outputs = 3 if item.kind == "point" else 1
        assert item.low_res_logits.shape == (2, outputs, SIZE // 4, SIZE // 4)
        assert item.iou_predictions.shape == (2, outputs)
        assert item.targets.shape == (2, SIZE, SIZE)
    assert decode_batch(model, batch, multimask=False)[1].low_res_logits.shape[1] == 1

    # The mask a user gets: the best-rated output, upscaled, cropped to the resized image.
    point = decoded[1]
    point.input_size = (200, 256)
    logits, score = predict_masks(point, SIZE)
    assert logits.shape == (2, 200, 256)
    best = point.iou_predictions.argmax(1)
    assert torch.equal(score, point.iou_predictions.max(1).values)
    upscaled = torch.nn.functional.interpolate(
        point.low_res_logits[torch.arange(2), best][:, None],
        (SIZE, SIZE),
        mode="bilinear",
        align_corners=False,
    )[:, 0, :200]
    torch.testing.assert_close(logits, upscaled)


@pytest.mark.parametrize("multimask", [True, False])
def test_decode_batch_groups_images_yet_matches_one_decoder_call_per_image(multimask):
    """Prompts of a kind from all images share one decoder call; each image's result is what
    SAM's decoder gives for that image alone, gradients to the embeddings included."""
    model = build_model(tiny_cfg())
    batch = parcel_batch(3, images=2, with_points=True)
    batch["embeddings"] = torch.randn(batch["embeddings"].shape, requires_grad=True)
    # Images with different numbers of prompts of a kind, and a kind only one image has.
    batch["prompts"][1]["box"] = {k: v[:1] for k, v in batch["prompts"][1]["box"].items()}
    del batch["prompts"][0]["points"]
    decoded = decode_batch(model, batch, multimask=multimask)
    grouped = torch.autograd.grad(sum(d.low_res_logits.sum() for d in decoded), batch["embeddings"])
    image_pe = model.prompt_encoder.get_dense_pe()
    alone_total = 0
    for item in decoded:
        prompt = batch["prompts"][item.image_index][item.kind]
        points = (prompt["coords"], prompt["labels"]) if "coords" in prompt else None
        sparse, dense = model.prompt_encoder(points=points, boxes=prompt.get("boxes"), masks=None)
        logits, iou = model.mask_decoder(
            image_embeddings=batch["embeddings"][item.image_index : item.image_index + 1],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask and item.kind == "point",
        )
        torch.testing.assert_close(item.low_res_logits, logits)
        torch.testing.assert_close(item.iou_predictions, iou)
        alone_total = alone_total + logits.sum()
    alone = torch.autograd.grad(alone_total, batch["embeddings"])
    torch.testing.assert_close(grouped[0], alone[0])


def test_frozen_encoder_runs_without_graph_and_decoder_gets_gradients():
    cfg = tiny_cfg()
    model = build_model(cfg)
    batch = parcel_batch(4)
    batch["images"] = torch.randn(1, 3, SIZE, SIZE)
    del batch["embeddings"]
    decoded = PromptedSam(model, multimask=True)(batch)
    sum(item.low_res_logits.sum() + item.iou_predictions.sum() for item in decoded).backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert all(p.grad is not None for p in model.mask_decoder.parameters())


def test_loss_decreases():
    cfg = tiny_cfg("SOLVER.MAX_EPOCHS", "15")
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(BATCHES))
    trainer = create_trainer(
        cfg, PromptedSam(model, True), optimizer, scheduler, build_loss(cfg), torch.device("cpu")
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))
    trainer.run(BATCHES, max_epochs=15)
    assert len(losses) == 30
    assert set(losses[0]) == {"loss", "loss_focal", "loss_dice", "loss_iou", "grad_norm"}
    first, last = losses[0]["loss"], sum(out["loss"] for out in losses[-4:]) / 4
    assert last < 0.5 * first


def test_loss_scaler_path_steps():
    # fp16 autocast needs CUDA; the GradScaler branch of the step runs on the CPU too.
    cfg = tiny_cfg()
    model = build_model(cfg)
    before = trained(model)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(BATCHES))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer = create_trainer(
        cfg, PromptedSam(model, True), optimizer, scheduler, build_loss(cfg), torch.device("cpu"),
        scaler,
    )  # fmt: skip
    trainer.run(BATCHES, max_epochs=1)
    assert scaler.get_scale() == 2.0**10  # no overflow, so no step skipped
    # A bias has no weight decay: it moved by its (unscaled) gradient.
    name = "mask_decoder.iou_prediction_head.layers.0.bias"
    assert not torch.equal(before[name], trained(model)[name])
    assert scheduler.last_epoch == 2


def test_inference_records_every_prompt():
    cfg = tiny_cfg()
    result = inference(cfg, build_model(cfg), BATCHES, keep_records=True)
    assert result["count"] == len(result["records"]) == 8
    assert result["per_kind"]["box"]["count"] == result["per_kind"]["point"]["count"] == 4
    record = result["records"][0]
    assert record.keys() == {
        "tile_id", "variant", "kind", "instance_id", "predicted_iou", "iou", "dice",
        "boundary_iou", "matched", "predicted", "targets",
    }  # fmt: skip
    assert (record["tile_id"], record["kind"], record["instance_id"]) == ("tile0_0", "box", 1)
    mean = sum(r["iou"] for r in result["records"]) / 8
    assert result["mIoU"] == pytest.approx(mean)


def test_overfits_two_batches_and_writes_the_run_directory(tmp_path):
    # A constant learning rate (no step within the run): the fastest way to IoU > 0.9.
    cfg = tiny_cfg(
        "SOLVER.MAX_EPOCHS", "30", "SOLVER.LR_SCHEDULER", "multistep", "SOLVER.STEPS", "[100]",
        "TEST.EVAL_PERIOD", "5", "SOLVER.CHECKPOINT_PERIOD", "5",
    )  # fmt: skip
    model, _, document = train(cfg, tmp_path)
    best = document["best"]
    assert best["mIoU"] > 0.9, document["evaluations"]
    assert [e["epoch"] for e in document["evaluations"]] == [0, 5, 10, 15, 20, 25, 30]
    assert document["final"]["epoch"] == 30 and not document["final"]["stopped_early"]
    assert set(document["final"]["metrics"]["per_kind"]) == {"box", "point"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == document
    assert checkpoints(tmp_path) == ["checkpoint_50.pt", "checkpoint_60.pt"]
    assert any((tmp_path / "tb").iterdir())

    # model_best.pth holds the best evaluation's weights, model_final.pth the last ones.
    final = document["final"]["metrics"]
    for name, expected in (("model_best.pth", best["mIoU"]), ("model_final.pth", final["mIoU"])):
        fresh = build_model(cfg)
        meta = load_trained_weights(fresh, tmp_path / name)
        assert meta["model_type"] == "tiny" and meta["base_checkpoint_sha256"] is None
        assert inference(cfg, fresh, BATCHES)["mIoU"] == pytest.approx(expected)
    assert_same_parameters(trained(fresh), trained(model))


def test_auto_points_teach_the_iou_head_to_rank_parcels_above_junk(tmp_path):
    """Trained with automatic-mode points, junk points' masks score below the parcels' (the
    IoU head's ROC AUC, in metrics.json per evaluation): a predicted-IoU threshold drops them."""
    cfg = tiny_cfg(
        "SOLVER.MAX_EPOCHS", "30", "SOLVER.LR_SCHEDULER", "multistep", "SOLVER.STEPS", "[100]",
        "TEST.EVAL_PERIOD", "10", "TEST.AUTO_POINTS", "4",
    )  # fmt: skip
    batches = [parcel_batch(seed, with_auto=True) for seed in (0, 1)]
    model, _, document = train(cfg, tmp_path, batches=batches)
    auto = document["final"]["metrics"]["per_kind"]["auto"]
    assert auto["count"] == 8 and auto["iou_auc"] == 1.0, document["evaluations"]
    # The overall figures (and the best checkpoint's choice) are the box and point prompts'.
    assert document["final"]["metrics"]["count"] == 8
    assert all("iou_auc" in e["per_kind"]["auto"] for e in document["evaluations"])
    records = inference(cfg, model, batches, keep_records=True, progress=False)["records"]
    auto_records = [r for r in records if r["kind"] == "auto"]
    junk = [r["predicted_iou"] for r in auto_records if r["instance_id"] == 0]
    parcels = [r["predicted_iou"] for r in auto_records if r["instance_id"] > 0]
    assert len(junk) == len(parcels) == 4
    assert max(junk) < 0.2 < 0.7 < min(parcels)


def test_checkpoint_round_trip(reference):
    cfg = tiny_cfg()
    newest = reference["dir"] / CHECKPOINT_DIR / "checkpoint_8.pt"
    state = torch.load(newest, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "history"} <= set(state)
    assert state["trainer"]["iteration"] == 8 and state["trainer"]["max_epochs"] == 4
    # Only the trained decoder is in the checkpoint, not the frozen encoder.
    assert all(name.startswith("mask_decoder.") for name in state["model"])

    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(BATCHES))
    Checkpoint.load_objects(
        {"model": TrainedParameters(model), "optimizer": optimizer, "lr_scheduler": scheduler},
        state,
    )
    assert_same_parameters(trained(model), reference["params"])
    assert scheduler.last_epoch == 8
    assert optimizer.state_dict()["state"][0]["step"].item() == 8


def test_resume_after_interruption_continues_the_same_run(reference, tmp_path):
    cfg = tiny_cfg()
    crash_at = 5 * CALLS_PER_ITERATION  # in epoch 3, after the checkpoint of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, fail_at=crash_at, mode="crash")
    assert checkpoints(tmp_path) == ["checkpoint_2.pt", "checkpoint_4.pt"]

    model, loss, document = train(cfg, tmp_path, resume=True)
    assert loss.lrs == reference["lrs"][4 * CALLS_PER_ITERATION :]
    assert_same_parameters(trained(model), reference["params"])
    assert document == reference["document"]
    assert checkpoints(tmp_path) == ["checkpoint_6.pt", "checkpoint_8.pt"]


def test_resume_skips_an_unreadable_checkpoint_and_leftovers(reference, tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, fail_at=5 * CALLS_PER_ITERATION, mode="crash")
    # As after a machine crash: the newest file truncated, a temporary file left behind.
    newest = tmp_path / CHECKPOINT_DIR / "checkpoint_4.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    (tmp_path / CHECKPOINT_DIR / "tmpabc123").write_bytes(b"partial")

    model, _, _ = train(cfg, tmp_path, resume=True)
    assert_same_parameters(trained(model), reference["params"])
    assert checkpoints(tmp_path) == ["checkpoint_6.pt", "checkpoint_8.pt"]


def test_run_directory_is_not_reused_or_resumed_by_accident(reference, tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(GeosamError, match="holds checkpoints of an earlier run"):
        train(cfg, reference["dir"])
    with pytest.raises(GeosamError, match="cannot resume: no checkpoint"):
        train(cfg, tmp_path, resume=True)
    # Resuming a finished run trains no further.
    model, loss, document = train(cfg, reference["dir"], resume=True)
    assert loss.lrs == []
    assert_same_parameters(trained(model), reference["params"])
    assert document == reference["document"]


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg()
    nan_at = 5 * CALLS_PER_ITERATION  # iteration 6, in epoch 3
    with pytest.raises(GeosamError) as info:
        train(cfg, tmp_path, fail_at=nan_at, mode="nan")
    last = tmp_path / CHECKPOINT_DIR / "checkpoint_4.pt"
    assert str(info.value) == f"loss became NaN at iteration 6; the last good checkpoint is {last}"
    assert checkpoints(tmp_path) == ["checkpoint_2.pt", "checkpoint_4.pt"]
    assert not (tmp_path / "model_final.pth").exists()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values())

    # Resuming with a sane loss goes on from there.
    _, _, document = train(cfg, tmp_path, resume=True)
    assert document["final"]["iteration"] == 8


def test_early_stopping(tmp_path):
    # Learning rate 0: validation never improves on the untrained model's (epoch 0), so
    # patience 1 stops after the first epoch's evaluation.
    cfg = tiny_cfg("SOLVER.BASE_LR", "0.0", "SOLVER.EARLY_STOPPING_PATIENCE", "1")
    _, _, document = train(cfg, tmp_path)
    assert document["final"]["epoch"] == 1 and document["final"]["stopped_early"]
    assert checkpoints(tmp_path) == ["checkpoint_2.pt"]
    # A resumed early-stopped run stays stopped.
    _, loss, resumed = train(cfg, tmp_path, resume=True)
    assert loss.lrs == [] and resumed == document


def test_eval_period_zero_scores_only_before_and_after_training(tmp_path):
    _, _, document = train(tiny_cfg("TEST.EVAL_PERIOD", "0"), tmp_path)
    assert [e["iteration"] for e in document["evaluations"]] == [0, 8]
    assert document["final"]["iteration"] == 8


def test_sigkill_mid_training_resumes(reference, tmp_path):
    marker = tmp_path / "hanging"
    env = {**os.environ, "GEOSAM_TEST_MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    with (tmp_path / "child.log").open("w") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, str(tmp_path / "run")], env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert marker.exists(), (tmp_path / "child.log").read_text()[-2000:]
    assert child.returncode == -signal.SIGKILL
    assert checkpoints(tmp_path / "run") == ["checkpoint_2.pt", "checkpoint_4.pt"]

    model, _, document = train(tiny_cfg(), tmp_path / "run", resume=True)
    assert_same_parameters(trained(model), reference["params"])
    assert document == reference["document"]


if __name__ == "__main__":
    # The run test_sigkill_mid_training_resumes kills: it hangs in epoch 3, after the epoch-2
    # checkpoint, until killed.
    torch.set_num_threads(1)
    train(tiny_cfg(), Path(sys.argv[1]), fail_at=5 * CALLS_PER_ITERATION, mode="hang")
