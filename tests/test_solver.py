"""AdamW parameter groups and the warm-up + cosine / multistep learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from geosam.config import load_config
from geosam.modeling import build_model
from geosam.solver import make_lr_scheduler, make_optimizer
from geosam.utils.errors import GeosamError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_cfg(*opts: str):
    return load_config(str(CONFIGS / "tiny.yaml"), list(opts))


def lr_sequence(cfg, iters_per_epoch: int, steps: int, start=None) -> list[float]:
    """The learning rate of each of ``steps`` iterations, on a throwaway parameter; ``start``:
    (optimizer, scheduler) state dicts to resume from."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = make_lr_scheduler(cfg, optimizer, iters_per_epoch)
    if start is not None:
        optimizer.load_state_dict(start[0])
        scheduler.load_state_dict(start[1])
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_groups_hold_only_trainable_parameters_with_norms_and_biases_undecayed():
    cfg = tiny_cfg("SOLVER.WEIGHT_DECAY", "0.05", "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert {name: group["weight_decay"] for name, group in groups.items()} == {
        "decay": 0.05,
        "no_decay": 0.0,
    }
    names = {id(p): name for name, p in model.named_parameters()}
    in_group = {name: {names[id(p)] for p in group["params"]} for name, group in groups.items()}
    decoder = {name for name, p in model.named_parameters() if p.requires_grad}
    assert in_group["decay"] | in_group["no_decay"] == decoder
    assert all(name.startswith("mask_decoder.") for name in decoder)
    assert "mask_decoder.transformer.norm_final_attn.weight" in in_group["no_decay"]
    assert "mask_decoder.output_upscaling.1.weight" in in_group["no_decay"]  # LayerNorm2d
    assert "mask_decoder.iou_prediction_head.layers.0.bias" in in_group["no_decay"]
    assert "mask_decoder.iou_prediction_head.layers.0.weight" in in_group["decay"]
    assert optimizer.defaults["lr"] == cfg.SOLVER.BASE_LR
    assert optimizer.defaults["betas"] == (0.9, 0.999)


def test_nothing_trainable_is_a_config_error():
    cfg = tiny_cfg("MODEL.TRAINABLE", "[]")
    model = build_model(cfg)
    with pytest.raises(GeosamError, match=r"MODEL\.TRAINABLE"):
        make_optimizer(cfg, model)


def test_linear_warmup_then_cosine_to_zero():
    cfg = tiny_cfg(
        "SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_ITERS", "4", "SOLVER.WARMUP_FACTOR", "0.01",
        "SOLVER.MAX_EPOCHS", "3", "SOLVER.LR_SCHEDULER", "cosine",
    )  # fmt: skip
    rates = lr_sequence(cfg, iters_per_epoch=4, steps=13)
    warmup = [0.1 * (0.01 + (1 - 0.01) * i / 4) for i in range(4)]
    assert rates[:4] == pytest.approx(warmup)
    # Cosine over the 8 iterations after warm-up: 1 at the peak, 0 at iteration 12 (the end).
    cosine = [0.1 * 0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(9)]
    assert rates[4:] == pytest.approx(cosine)
    assert rates[4] == pytest.approx(0.1) and rates[8] == pytest.approx(0.05)
    assert rates[12] == pytest.approx(0.0)


def test_multistep_at_epoch_milestones():
    cfg = tiny_cfg(
        "SOLVER.BASE_LR", "1.0", "SOLVER.WARMUP_ITERS", "2", "SOLVER.WARMUP_FACTOR", "0.5",
        "SOLVER.MAX_EPOCHS", "4", "SOLVER.LR_SCHEDULER", "multistep", "SOLVER.STEPS", "[1, 3]",
        "SOLVER.GAMMA", "0.1",
    )  # fmt: skip
    rates = lr_sequence(cfg, iters_per_epoch=3, steps=12)
    expected = [0.5, 0.75, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    assert rates == pytest.approx(expected)


def test_steps_must_increase():
    cfg = tiny_cfg("SOLVER.LR_SCHEDULER", "multistep", "SOLVER.STEPS", "[5, 3]")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(GeosamError, match=r"SOLVER\.STEPS"):
        make_lr_scheduler(cfg, optimizer, 10)


@pytest.mark.parametrize("schedule", ["cosine", "multistep"])
def test_resumed_scheduler_continues_the_same_schedule(schedule):
    cfg = tiny_cfg(
        "SOLVER.LR_SCHEDULER", schedule, "SOLVER.WARMUP_ITERS", "5", "SOLVER.MAX_EPOCHS", "4",
        "SOLVER.STEPS", "[2]",
    )  # fmt: skip
    uninterrupted = lr_sequence(cfg, iters_per_epoch=5, steps=20)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = make_lr_scheduler(cfg, optimizer, 5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    saved = (optimizer.state_dict(), scheduler.state_dict())
    assert lr_sequence(cfg, 5, 13, start=saved) == uninterrupted[7:]
