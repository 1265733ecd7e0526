"""``geosam improve``: the tiny model trained further on a synthetic scene's parcels, end to
end through the command (as the QGIS plugin runs it), bad inputs, and a cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import yaml
from click.testing import CliRunner

from geosam.cli import cli
from geosam.data.synthetic import make_scene
from geosam.engine.run_dir import CONFIG_FILE, FINAL_WEIGHTS
from geosam.export import export_onnx
from geosam.improve.report import REPORT_JSON, REPORT_MD
from geosam.improve.start import starting_point
from geosam.runtime.model import MANIFEST

REPO = Path(__file__).resolve().parents[1]
# Few steps: one epoch of the scene's nine chips, no flips (no extra embeddings to cache), no
# threshold calibration (the slowest part of an export on a CPU).
FAST = ["--epochs", "1", "--no-calibration", "--quiet"]
FAST_OPTS = ["INPUT.HFLIP", "False", "INPUT.VFLIP", "False", "INPUT.ROT90", "False"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The untuned tiny model (exported from configs/tiny.yaml, as the plugin tests' model
    is) and a 512 px synthetic scene with its parcels."""
    from geosam.config import load_config

    root = tmp_path_factory.mktemp("improve")
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"), ["SEED", "2"])
    export_onnx(cfg, root / "model")
    scene = make_scene(root / "scene", 512, 0, progress=False)
    return {"root": root, "model": root / "model", "raster": scene.raster, "parcels": scene.labels}


def geosam(*args: str | Path) -> subprocess.Popen:
    """``geosam ARGS`` in a new process, as the plugin starts it, stdout piped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "geosam", *(str(a) for a in args)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def improve_args(inputs: dict[str, Path], output: Path, parcels: Path | None = None) -> list:
    return [
        "improve", "--model", inputs["model"], "--raster", inputs["raster"],
        "--parcels", parcels or inputs["parcels"], "--layer", "parcels", "-o", output,
    ]  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_improve_end_to_end(inputs: dict[str, Path]) -> None:
    output = inputs["root"] / "model_improved"
    process = geosam(*improve_args(inputs, output), *FAST, *FAST_OPTS)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    progress = [line.split() for line in stdout.splitlines() if line.startswith("PROGRESS")]
    stages = [stage for _, _, stage in progress]
    assert stages == ["tile", "train", "evaluate", "export", "done"]
    percents = [int(percent) for _, percent, _ in progress]
    assert percents == sorted(percents) and percents[-1] == 100

    assert {"encoder.onnx", "decoder.onnx", MANIFEST, REPORT_JSON, REPORT_MD} <= {
        p.name for p in output.iterdir()
    }
    report = json.loads((output / REPORT_JSON).read_text())
    assert report["parcels"]["held_aside"] >= 1 and report["parcels"]["trained_on"] >= 1
    for side in ("before", "after"):
        for kind in ("box", "point"):
            assert 0.0 <= report[side][kind]["mIoU"] <= 1.0
            assert report[side][kind]["prompts"] >= report["parcels"]["held_aside"]
    assert "box mIoU on held-aside parcels" in stdout
    assert "| box |" in (output / REPORT_MD).read_text()

    # the new model records its run, which continues nothing (the old model was untuned)
    manifest = json.loads((output / MANIFEST).read_text())
    training = output.parent / f"{output.name}.training"
    assert manifest["run_dir"] == str((training / "run").resolve())
    assert manifest["training_dataset"] == str((training / "tiles" / "train").resolve())
    assert "auto_thresholds" not in manifest  # --no-calibration
    run_cfg = yaml.safe_load((training / "run" / CONFIG_FILE).read_text())
    assert run_cfg["MODEL"]["TUNED_WEIGHTS"] == "" and run_cfg["SOLVER"]["MAX_EPOCHS"] == 1
    assert not leftovers(inputs["root"])

    # improving the new model continues its run from the weights it was exported with
    start = starting_point(output)
    assert start.weights == training / "run" / FINAL_WEIGHTS and start.note is None
    # ... and, with the run gone, from the recorded base, saying so
    training.rename(inputs["root"] / "moved")
    try:
        gone = starting_point(output)
    finally:
        (inputs["root"] / "moved").rename(training)
    assert gone.weights is None and "is gone" in gone.note


def test_continues_from_tuned_weights(inputs: dict[str, Path], tmp_path: Path) -> None:
    """MODEL.TUNED_WEIGHTS starts a model from a run's trained weights: build_model gives the
    tuned model, which the run's base differs from."""
    import torch

    from geosam.config import load_config
    from geosam.modeling import build_model, save_trained_weights

    cfg = load_config(str(REPO / "configs" / "tiny.yaml"), ["SEED", "2"])
    tuned = build_model(cfg)
    with torch.no_grad():
        for param in tuned.mask_decoder.parameters():
            param.add_(0.5)
    save_trained_weights(tuned, cfg, tmp_path / "w.pth", None)
    weights = str(tmp_path / "w.pth")
    started = build_model(load_config(str(REPO / "configs" / "tiny.yaml"), [
        "SEED", "2", "MODEL.TUNED_WEIGHTS", weights
    ]))  # fmt: skip
    for (name, a), b in zip(tuned.state_dict().items(), started.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def write_parcels(frame: gpd.GeoDataFrame, path: Path) -> Path:
    frame.to_file(path, layer="parcels", engine="pyogrio")
    return path


@pytest.mark.parametrize("case", ["few", "outside", "no_model", "not_a_model"])
def test_bad_inputs(inputs: dict[str, Path], tmp_path: Path, case: str) -> None:
    """One line, exit status 2, nothing written."""
    parcels = gpd.read_file(inputs["parcels"], layer="parcels")
    args = improve_args(inputs, tmp_path / "new")
    expected = {
        "few": "needs at least 10",
        "outside": "lie outside --raster",
        "no_model": "is not a geosam model folder",
        "not_a_model": "is not a geosam model folder",
    }[case]
    if case == "few":
        args[6] = write_parcels(parcels.head(9), tmp_path / "few.gpkg")
    elif case == "outside":
        moved = parcels.set_geometry(parcels.geometry.translate(xoff=1e5))
        args[6] = write_parcels(moved, tmp_path / "outside.gpkg")
    elif case == "no_model":
        args[2] = tmp_path / "absent"
    else:
        args[2] = inputs["raster"].parent
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.training").exists()


def test_cancel_leaves_nothing(inputs: dict[str, Path]) -> None:
    """SIGTERM mid-training (what the plugin's Cancel sends): no model folder, no training
    folder, no staging folder."""
    output = inputs["root"] / "cancelled"
    process = geosam(*improve_args(inputs, output), *FAST, "--epochs", "50", *FAST_OPTS)
    for line in process.stdout:
        if line.startswith("PROGRESS 10 train"):
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert not output.exists()
    assert not (output.parent / f"{output.name}.training").exists()
    assert not leftovers(inputs["root"])
