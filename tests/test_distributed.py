"""Two gloo processes on the CPU train exactly what one process trains on the same batch."""

from __future__ import annotations

from pathlib import Path

import torch

from geosam.config import load_config
from geosam.engine.launch import launch_training
from geosam.modeling import build_model

# Prompts that do not depend on the random generator (every instance, its exact box, no
# augmentation), and one global batch per epoch holding both training chips: the only
# difference between the runs is how the batch is split over processes.
DETERMINISTIC = [
    "INPUT.PROMPT_TYPES",
    "[box]",
    "INPUT.PROMPT_WEIGHTS",
    "[1.0]",
    "INPUT.BOX_JITTER",
    "0.0",
    "INPUT.HFLIP",
    "False",
    "INPUT.VFLIP",
    "False",
    "INPUT.ROT90",
    "False",
    "INPUT.MAX_INSTANCES",
    "64",
    "DATALOADER.MAX_SAMPLES",
    "2",
    "DATALOADER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_EPOCHS",
    "2",
    "SOLVER.WARMUP_ITERS",
    "0",
    "SOLVER.CLIP_GRAD_NORM",
    "0",
]


def run(tiles: Path, out: Path, nproc: int | None) -> dict[str, torch.Tensor]:
    cfg = load_config(
        "configs/tiny.yaml", ["DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(out), *DETERMINISTIC]
    )
    launch_training(cfg, nproc_per_node=nproc, progress=False)
    return torch.load(out / "model_final.pth", weights_only=True)["state_dict"]


def test_two_processes_match_one(tiles: Path, tmp_path: Path) -> None:
    single = run(tiles, tmp_path / "single", None)
    double = run(tiles, tmp_path / "double", 2)
    assert single.keys() == double.keys()
    for name, value in single.items():
        torch.testing.assert_close(double[name], value, rtol=1e-4, atol=1e-5)
    # and training did move the decoder away from its initial weights
    initial = build_model(load_config("configs/tiny.yaml")).state_dict()
    assert max((single[n] - initial[n]).abs().max().item() for n in single) > 1e-3
    # rank 0 alone wrote the run: one TensorBoard event file, one set of checkpoints
    assert len(list((tmp_path / "double" / "tb").glob("events.*"))) == 1
    single_files = sorted(p.name for p in (tmp_path / "single" / "checkpoints").iterdir())
    double_files = sorted(p.name for p in (tmp_path / "double" / "checkpoints").iterdir())
    assert single_files == double_files
