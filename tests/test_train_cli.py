"""geosam train from the command line: a run directory, resume rules, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from geosam.cli import cli

FAST = ["SOLVER.MAX_EPOCHS", "1", "DATALOADER.IMS_PER_BATCH", "4"]


def train(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["train", "--quiet", "--config-file", "configs/tiny.yaml", *args]
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr


def one_error(code: int, stderr: str, *expected: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("geosam: error:")]
    assert code == 2, stderr
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    for text in expected:
        assert text in errors[0], errors[0]


def test_a_run_directory_and_its_resume_rules(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, stderr = train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run), *FAST)
    assert code == 0, stderr
    for name in ("config.yaml", "metrics.json", "model_final.pth", "model_best.pth"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("*.pt"))
    assert list((run / "tb").iterdir())
    weights = torch.load(run / "model_final.pth", weights_only=True)
    assert weights["model_type"] == "tiny"
    assert all(k.startswith("mask_decoder.") for k in weights["state_dict"])
    assert "mIoU" in json.dumps(json.loads((run / "metrics.json").read_text()))

    one_error(
        *train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run), *FAST),
        "holds another run",
        "--resume",
        "--overwrite",
    )
    one_error(
        *train(
            "DATASETS.TRAIN",
            str(tiles),
            "OUTPUT_DIR",
            str(run),
            *FAST,
            "SOLVER.BASE_LR",
            "0.5",
            "--resume",
        ),
        "SOLVER.BASE_LR",
        "config.yaml",
    )
    code, stderr = train(
        "DATASETS.TRAIN",
        str(tiles),
        "OUTPUT_DIR",
        str(run),
        "SOLVER.MAX_EPOCHS",
        "2",
        "DATALOADER.IMS_PER_BATCH",
        "4",
        "--overwrite",
    )
    assert code == 0, stderr
    epochs = [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["evaluations"]]
    assert epochs == [0, 1, 2]


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (["SOLVER.BASE_LRR", "1"], ("SOLVER.BASE_LRR", "SOLVER.BASE_LR")),
        (["SOLVER.BASE_LR", "fast"], ("SOLVER.BASE_LR", "float")),
        (["MODEL.TYPE", "vit_b", "MODEL.CHECKPOINT", "/nope/sam.pth"], ("/nope/sam.pth",)),
        (["DATASETS.TRAIN_SPLIT", "nope"], ("no 'nope' chips",)),
    ],
)
def test_bad_config(
    tiles: Path, tmp_path: Path, opts: list[str], expected: tuple[str, ...]
) -> None:
    run = tmp_path / "run"
    one_error(*train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run), *FAST, *opts), *expected)


def test_corrupt_checkpoint(tiles: Path, tmp_path: Path) -> None:
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(b"not a checkpoint")
    one_error(
        *train(
            "DATASETS.TRAIN",
            str(tiles),
            "OUTPUT_DIR",
            str(tmp_path / "run"),
            "MODEL.TYPE",
            "vit_b",
            "MODEL.CHECKPOINT",
            str(bad),
        ),
        str(bad),
    )


def test_unwritable_output_fails_before_training(tiles: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    one_error(
        *train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(blocker / "run"), *FAST),
        "is a file",
    )


def test_not_a_tile_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    one_error(
        *train("DATASETS.TRAIN", str(folder), "OUTPUT_DIR", str(tmp_path / "run")),
        "not a geosam tile dataset",
    )


def test_unsupported_dataset_version(tiles: Path, tmp_path: Path) -> None:
    manifest = json.loads((tiles / "manifest.json").read_text())
    manifest["format"] = "geosam-tiles/99"
    (tiles / "manifest.json").write_text(json.dumps(manifest))
    one_error(
        *train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(tmp_path / "run")),
        "geosam-tiles/99",
        "re-run geosam tile",
    )


def test_resume_without_a_run(tiles: Path, tmp_path: Path) -> None:
    one_error(
        *train("DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(tmp_path / "none"), "--resume"),
        "no run to resume",
    )


def test_nan_loss_stops_with_one_line(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, stderr = train(
        "DATASETS.TRAIN",
        str(tiles),
        "OUTPUT_DIR",
        str(run),
        *FAST,
        "SOLVER.BASE_LR",
        "1e30",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CLIP_GRAD_NORM",
        "0",
    )
    one_error(code, stderr, "NaN")


def test_a_model_trained_from_scratch_becomes_a_checkpoint_to_fine_tune(
    tiles: Path, tmp_path: Path
) -> None:
    """configs/tiny_pretrain.yaml trains every part; export-checkpoint writes the official
    format, which configs/tiny.yaml then loads as MODEL.CHECKPOINT like a real SAM's."""
    pretrain = tmp_path / "pretrain"
    code, stderr = _invoke(
        "train", "--quiet", "--config-file", "configs/tiny_pretrain.yaml",
        "DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(pretrain), *FAST,
    )  # fmt: skip
    assert code == 0, stderr
    weights = torch.load(pretrain / "model_final.pth", weights_only=True)["state_dict"]
    assert {name.split(".")[0] for name in weights} == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }

    checkpoint = tmp_path / "sam_tiny_pretrained.pth"
    export = ["export-checkpoint", "--run", str(pretrain), "--weights", "final", "-o"]
    code, stderr = _invoke(*export, str(checkpoint))
    assert code == 0, stderr
    state_dict = torch.load(checkpoint, weights_only=True)
    assert "format" not in state_dict  # a plain Sam.state_dict(), buffers included
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in state_dict
    for name, tensor in weights.items():
        assert torch.equal(state_dict[name], tensor), name
    one_error(*_invoke(*export, str(checkpoint)), "exists", "--overwrite")

    run = tmp_path / "tuned"
    code, stderr = train(
        "DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run), "MODEL.CHECKPOINT",
        str(checkpoint), *FAST,
    )  # fmt: skip
    assert code == 0, stderr
    tuned = torch.load(run / "model_final.pth", weights_only=True)
    assert tuned["base_checkpoint_sha256"] is not None


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr
