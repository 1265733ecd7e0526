"""Bad checkpoints and a missing dataset, as a new user gives them, to every command that
builds a model: one line, exit status 2, and nothing written (the new output does not exist
afterwards, an existing run is untouched, and a malicious pickle's code never runs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from geosam.cli import cli
from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, tile_dataset
from geosam.modeling import build_model, save_sam_checkpoint

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
NOT_WEIGHTS = "not a plain PyTorch weights file"


class CreatesMarker:
    """Unpickling this runs ``os.makedirs(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable, tuple[str]]:
        return os.makedirs, (str(self.marker),)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small tile dataset, and checkpoints of every bad kind beside a good tiny one."""
    root = tmp_path_factory.mktemp("bad-checkpoints")
    scene = make_scene(root / "scene", size=600, seed=5)
    params = TileParams(tile_size=256, overlap=32, split_block=1, val_fraction=0.3, seed=3)
    tile_dataset([str(scene.raster)], scene.labels, root / "tiles", params, progress=False)
    tiny = root / "sam_tiny.pth"
    save_sam_checkpoint(build_model(load_config(CONFIG)), tiny)
    truncated = root / "truncated.pth"
    truncated.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    text = root / "notes.pth"
    text.write_text("these are my notes, not a checkpoint\n")
    malicious = root / "malicious.pth"
    torch.save({"image_encoder.pos_embed": CreatesMarker(root / "pwned")}, malicious)
    return {
        "root": root,
        "tiles": root / "tiles",
        "marker": root / "pwned",
        "truncated": truncated,
        "text": text,
        "malicious": malicious,
        "tiny": tiny,
    }


# Each bad input: (config overrides, the dataset to use, what the error line must name).
BAD_INPUTS = {
    "truncated": lambda i: (["MODEL.CHECKPOINT", str(i["truncated"])], i["tiles"], NOT_WEIGHTS),
    "text": lambda i: (["MODEL.CHECKPOINT", str(i["text"])], i["tiles"], NOT_WEIGHTS),
    "malicious": lambda i: (["MODEL.CHECKPOINT", str(i["malicious"])], i["tiles"], NOT_WEIGHTS),
    "wrong_type": lambda i: (
        ["MODEL.TYPE", "vit_b", "MODEL.CHECKPOINT", str(i["tiny"])],
        i["tiles"],
        "is a tiny checkpoint but MODEL.TYPE is vit_b",
    ),
    "missing_dataset": lambda i: ([], i["root"] / "gone", str(i["root"] / "gone")),
}


def command_args(command: str, opts: list[str], dataset: Path, output: Path) -> list[str]:
    """``command`` on the tiny preset with ``opts``, ``dataset`` and a new ``output``."""
    config = ["--config-file", CONFIG]
    if command == "train":
        return ["train", "--quiet", *config, "DATASETS.TRAIN", str(dataset), "OUTPUT_DIR",
                str(output), *opts]  # fmt: skip
    if command == "evaluate":
        return ["evaluate", "--quiet", *config, "--dataset", str(dataset), "-o", str(output),
                *opts]  # fmt: skip
    if command == "export-onnx":
        return ["export-onnx", *config, "-o", str(output), "DATASETS.TRAIN", str(dataset), *opts]
    return ["export-checkpoint", *config, "-o", str(output), *opts]


def one_error_line(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


CASES = [
    (command, bad)
    for command in ("train", "evaluate", "export-onnx", "export-checkpoint")
    for bad in BAD_INPUTS
    # export-checkpoint reads no dataset: a moved dataset does not stop it
    if not (command == "export-checkpoint" and bad == "missing_dataset")
]


@pytest.mark.parametrize(("command", "bad"), CASES, ids=[f"{c}-{b}" for c, b in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    command: str, bad: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    opts, dataset, expected = BAD_INPUTS[bad](inputs)
    output = tmp_path / ("model.pth" if command == "export-checkpoint" else "out")
    error = one_error_line(command_args(command, opts, dataset, output))
    assert expected in error, error
    assert not output.exists()
    assert list(tmp_path.iterdir()) == [], "a staging folder or partial output was left"
    assert not inputs["marker"].exists(), "the malicious checkpoint's code ran"


def existing_run(folder: Path, opts: list[str], dataset: Path) -> dict[str, bytes]:
    """A run folder as train writes it (config.yaml of exactly these options, checkpoints/),
    and a file of the user's; returns every file's content."""
    cfg = load_config(CONFIG, ["DATASETS.TRAIN", str(dataset), "OUTPUT_DIR", str(folder), *opts])
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint_4.pt").write_bytes(b"resumable state")
    (folder / "config.yaml").write_text(cfg.dump())
    (folder / "notes.txt").write_text("mine")
    return contents(folder)


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
@pytest.mark.parametrize("bad", ["truncated", "malicious", "wrong_type"])
def test_a_failed_train_leaves_an_existing_run_untouched(
    flag: str, bad: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """--overwrite replaces a run only once the new one starts; --resume never rewrites it."""
    opts, dataset, expected = BAD_INPUTS[bad](inputs)
    run = tmp_path / "run"
    before = existing_run(run, opts, dataset)
    error = one_error_line([*command_args("train", opts, dataset, run), flag])
    assert expected in error, error
    assert contents(run) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert not inputs["marker"].exists()


def test_spawned_processes_report_a_bad_checkpoint_as_one_line(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """With --nproc-per-node the model is built in the spawned processes: the error still
    reaches the user as one line, and rank 0 has written nothing."""
    opts, dataset, expected = BAD_INPUTS["truncated"](inputs)
    run = tmp_path / "run"
    args = [*command_args("train", opts, dataset, run), "--nproc-per-node", "2"]
    assert expected in one_error_line(args)
    assert list(tmp_path.iterdir()) == []
