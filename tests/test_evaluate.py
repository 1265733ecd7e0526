"""geosam evaluate: base, tuned and box-fill side by side, outputs, and bad input.

One small synthetic tile dataset and two short training runs (decoder only, and decoder plus
the last encoder block) are shared by the module; each evaluation takes a few seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geosam.cli import cli
from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, tile_dataset
from geosam.engine.eval_report import Example, metrics_table, select_examples
from geosam.engine.evaluate import box_fill_masks, evaluate_box_fill
from geosam.engine.launch import launch_training

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
TRAIN_OPTS = ["SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_ITERS", "2"]
OUTPUTS = {"metrics.json", "metrics.md", "examples.png"}


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["evaluate", "--quiet", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def evaluate_ok(*args: str) -> tuple[str, str]:
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    return stdout, stderr


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600 px synthetic scene cut into nine 256 px tiles, about a third of them in val."""
    root = tmp_path_factory.mktemp("evaluate")
    scene = make_scene(root / "scene", size=600, seed=5)
    params = TileParams(tile_size=256, overlap=32, split_block=1, val_fraction=0.3, seed=3)
    tile_dataset([str(scene.raster)], scene.labels, root / "tiles", params, progress=False)
    return root / "tiles"


def train(dataset: Path, output_dir: Path, *opts: str) -> Path:
    cfg = load_config(
        CONFIG, ["DATASETS.TRAIN", str(dataset), "OUTPUT_DIR", str(output_dir), *TRAIN_OPTS, *opts]
    )
    launch_training(cfg, progress=False)
    return output_dir


@pytest.fixture(scope="module")
def run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(dataset, tmp_path_factory.mktemp("runs") / "decoder")


@pytest.fixture(scope="module")
def evaluated(run: Path, dataset: Path) -> tuple[Path, str]:
    """The run evaluated with the defaults (output beside the run), and what it printed."""
    stdout, _ = evaluate_ok("--run", str(run), "--dataset", str(dataset), "--examples", "4")
    return run / "eval-tiles-val", stdout


def flat(summary: dict) -> dict[str, float]:
    """An inference summary's means and counts, overall and per kind, as one flat dict."""
    groups = {"all": summary, **summary["per_kind"]}
    names = ("mIoU", "dice", "boundary_iou", "count")
    return {f"{group}/{name}": values[name] for group, values in groups.items() for name in names}


def val_instances(dataset: Path) -> pd.DataFrame:
    instances = pd.read_parquet(dataset / "instances.parquet")
    return instances[instances.split == "val"]


# ---------------------------------------------------------------------------------------------
# A run evaluated
# ---------------------------------------------------------------------------------------------


def test_outputs_are_written_and_consistent(evaluated, run: Path, dataset: Path) -> None:
    out, stdout = evaluated
    assert {p.name for p in out.iterdir()} == OUTPUTS
    document = read_json(out / "metrics.json")
    assert document["dataset"] == str(dataset.resolve()) and document["split"] == "val"
    assert document["weights"]["path"] == str((run / "model_best.pth").resolve())
    assert document["weights"]["note"] is None and document["geosam_version"]
    models = document["models"]
    assert set(models) == {"box_fill", "base", "tuned"}
    n = len(val_instances(dataset))
    for name in ("base", "tuned"):
        assert models[name]["count"] == 3 * n
        assert {k: v["count"] for k, v in models[name]["per_kind"].items()} == {
            "box": n, "point": n, "points": n,
        }  # fmt: skip
    assert list(models["box_fill"]["per_kind"]) == ["box"]
    assert "mIoU" not in models["box_fill"]
    for key in ("mIoU", "dice", "boundary_iou"):
        assert document["delta"][key] == pytest.approx(models["tuned"][key] - models["base"][key])

    table = metrics_table(models)
    assert table in (out / "metrics.md").read_text() and table in stdout
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()]
    first_rows = {row[0]: row for row in rows[2:] if row and row[0]}  # each kind's mIoU row
    assert list(first_rows) == ["box", "point", "points", "all"]
    assert first_rows["box"][3] == f"{models['box_fill']['per_kind']['box']['mIoU']:.3f}"
    assert first_rows["point"][3] == first_rows["all"][3] == "n/a"
    assert str(out / "examples.png") in stdout


def test_tuned_is_the_runs_best_and_base_its_epoch_zero(evaluated, run: Path) -> None:
    out, _ = evaluated
    models = read_json(out / "metrics.json")["models"]
    history = read_json(run / "metrics.json")
    (best,) = [e for e in history["evaluations"] if e["epoch"] == history["best"]["epoch"]]
    (untrained,) = [e for e in history["evaluations"] if e["epoch"] == 0]
    # the same prompts and weights as the trainer's validations: the same scores
    assert flat(models["tuned"]) == pytest.approx(flat(best))
    assert flat(models["base"]) == pytest.approx(flat(untrained))
    assert any(e["mIoU"] != untrained["mIoU"] for e in history["evaluations"])


def test_box_fill_equals_an_independent_computation(evaluated, dataset: Path) -> None:
    """Chips are 256 px and so is the tiny model's input: boxes and masks need no scaling."""
    out, _ = evaluated
    ious, dices = [], []
    tiles = pd.read_parquet(dataset / "tiles.parquet").set_index("tile_id")
    for instance in val_instances(dataset).itertuples():
        with rasterio.open(dataset / tiles.at[instance.tile_id, "mask"]) as src:
            truth = src.read(1) == instance.instance_id
        box = np.zeros_like(truth)
        box[instance.box_y0 : instance.box_y1 + 1, instance.box_x0 : instance.box_x1 + 1] = True
        inter, union = (truth & box).sum(), (truth | box).sum()
        ious.append(inter / union)
        dices.append(2 * inter / (truth.sum() + box.sum()))
    box_fill = read_json(out / "metrics.json")["models"]["box_fill"]["per_kind"]["box"]
    assert box_fill["count"] == len(ious)
    assert box_fill["mIoU"] == pytest.approx(np.mean(ious))
    assert box_fill["dice"] == pytest.approx(np.mean(dices))


def test_the_examples_panel_is_an_image_of_one_row_per_example(evaluated) -> None:
    out, _ = evaluated
    image = matplotlib.image.imread(out / "examples.png")
    height, width = image.shape[:2]
    # 4 rows of 4 panels (chip, truth, base, tuned), each panel about as tall as wide
    assert 0.7 < height / width < 1.5
    assert image[..., :3].std() > 0.05


def test_untuned_model_matches_the_runs_base(evaluated, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "untuned"
    stdout, _ = evaluate_ok(
        "--config-file", CONFIG, "--dataset", str(dataset), "-o", str(out), "--examples", "2"
    )
    assert {p.name for p in out.iterdir()} == OUTPUTS
    document = read_json(out / "metrics.json")
    assert document["weights"] is None and "delta" not in document
    assert set(document["models"]) == {"box_fill", "base"}
    # the same config and seed: the run's base model, rebuilt
    run_document = read_json(evaluated[0] / "metrics.json")
    assert document["models"]["base"] == run_document["models"]["base"]
    assert "| box-fill | base |\n" in stdout


def test_best_falls_back_to_final_and_says_so(run: Path, dataset: Path, tmp_path: Path) -> None:
    partial = tmp_path / "run"
    partial.mkdir()
    for name in ("config.yaml", "model_final.pth"):
        shutil.copy(run / name, partial / name)
    stdout, stderr = evaluate_ok(
        "--run", str(partial), "--dataset", str(dataset), "--examples", "0"
    )
    out = partial / "eval-tiles-val"
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.md"}
    weights = read_json(out / "metrics.json")["weights"]
    assert weights["path"].endswith("model_final.pth") and weights["requested"] == "best"
    assert "model_best.pth" in weights["note"] and "model_best.pth" in stdout + stderr
    assert "model_best.pth" in (out / "metrics.md").read_text()


def test_a_run_that_trained_the_encoder_gets_its_own_embeddings(
    dataset: Path, tmp_path: Path
) -> None:
    run = train(dataset, tmp_path / "run", "MODEL.ENCODER_TRAINABLE_BLOCKS", "1")
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    evaluate_ok(
        "--run", str(run), "--dataset", str(dataset), "--weights", "final", "-o", str(out),
        "--examples", "1", "CACHE.DIR", str(cache),
    )  # fmt: skip
    folders = sorted(cache.iterdir())
    assert len(folders) == 2  # the base encoder's embeddings and the tuned one's
    tile = val_instances(dataset).tile_id.iloc[0]
    base, tuned = (np.load(folder / f"{tile}.v0.npy") for folder in folders)
    assert not np.allclose(base, tuned)
    # training validated with the encoder running live; evaluation with its cached embeddings
    final = read_json(run / "metrics.json")["final"]["metrics"]
    tuned_scores = read_json(out / "metrics.json")["models"]["tuned"]
    assert flat(tuned_scores) == pytest.approx(flat(final), abs=1e-3)


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------


def test_box_fill_masks_cover_the_boxes_pixels_at_any_scale() -> None:
    box = torch.tensor([[2.0, 1.0, 5.0, 4.0]])
    expected = np.zeros((8, 10), bool)
    expected[1:5, 2:6] = True
    np.testing.assert_array_equal(box_fill_masks(box, (8, 10), (8, 10))[0].numpy(), expected)
    # a (4, 5) chip at twice the size: the box of pixels x 1..2, y 0..1, scaled by 2
    original = np.zeros((4, 5), bool)
    original[0:2, 1:3] = True
    scaled = box_fill_masks(torch.tensor([[2.0, 0.0, 4.0, 2.0]]), (8, 10), (4, 5))[0]
    np.testing.assert_array_equal(scaled.numpy(), np.kron(original, np.ones((2, 2), bool)))


def test_box_fill_scores_a_hand_made_case() -> None:
    """An L-shaped parcel of 12 px in its 4 × 4 box, and a square one filling its box."""
    targets = torch.zeros(2, 16, 16, dtype=torch.bool)
    targets[0, 2:6, 3:7] = True
    targets[0, 2:4, 5:7] = False  # 16 - 4 = 12 px
    targets[1, 9:12, 9:12] = True
    batch = {
        "input_sizes": torch.tensor([[12, 16]]),
        "original_sizes": torch.tensor([[12, 16]]),
        "prompts": [
            {
                "box": {
                    "boxes": torch.tensor([[3.0, 2.0, 6.0, 5.0], [9.0, 9.0, 11.0, 11.0]]),
                    "targets": targets,
                    "instance_ids": torch.tensor([1, 2]),
                },
                "point": {"coords": torch.zeros(2, 1, 2), "targets": targets},
            }
        ],
    }
    result = evaluate_box_fill([batch])
    assert list(result) == ["per_kind"] and list(result["per_kind"]) == ["box"]
    box = result["per_kind"]["box"]
    assert box["count"] == 2
    assert box["mIoU"] == pytest.approx((12 / 16 + 1.0) / 2)
    assert box["dice"] == pytest.approx((2 * 12 / (12 + 16) + 1.0) / 2)


def test_examples_spread_over_the_gain_deterministically() -> None:
    keys = [("t1", "box", i) for i in range(1, 11)]
    base = [{"tile_id": t, "kind": k, "instance_id": i, "iou": 0.5} for t, k, i in keys]
    tuned = [dict(r, iou=0.5 + (r["instance_id"] - 5) / 10) for r in base]
    chosen = select_examples({"base": base, "tuned": tuned[::-1]}, 3)
    assert [e.instance_id for e in chosen] == [1, 5, 10]  # worst, middle, best gain
    assert chosen[0] == Example("t1", "box", 1, {"base": 0.5, "tuned": pytest.approx(0.1)})
    assert select_examples({"base": base, "tuned": tuned}, 3) == chosen
    assert len(select_examples({"base": base}, 50)) == 10
    assert select_examples({"base": base}, 0) == []


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------


def fake_weights(path: Path, **metadata: object) -> None:
    payload = {
        "format": "geosam-weights/1",
        "model_type": "tiny",
        "image_size": 256,
        "base_checkpoint_sha256": None,
        "trainable": ["mask_decoder"],
        "encoder_trainable_blocks": 0,
        "state_dict": {},
        **metadata,
    }
    torch.save(payload, path)


def run_copy(run: Path, tmp_path: Path, weights: bool = True) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    if weights:
        shutil.copy(run / "model_best.pth", copy / "model_best.pth")
    return copy


def dataset_copy(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiles"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("embeddings"))
    return copy


def bad_run_without_config(run, dataset, tmp_path):
    return ["--run", str(tmp_path), "--dataset", str(dataset)], "no config.yaml"


def bad_run_without_weights(run, dataset, tmp_path):
    copy = run_copy(run, tmp_path, weights=False)
    return ["--run", str(copy), "--dataset", str(dataset)], "no model_best.pth or model_final"


def bad_not_a_dataset(run, dataset, tmp_path):
    return ["--run", str(run), "--dataset", str(tmp_path)], "not a geosam tile dataset"


def bad_dataset_version(run, dataset, tmp_path):
    copy = dataset_copy(dataset, tmp_path)
    manifest = read_json(copy / "manifest.json")
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "geosam-tiles/0"}))
    return ["--run", str(run), "--dataset", str(copy)], "geosam-tiles/0"


def bad_split_absent(run, dataset, tmp_path):
    return ["--run", str(run), "--dataset", str(dataset), "--split", "test"], "'test'"


def bad_split_empty(run, dataset, tmp_path):
    copy = dataset_copy(dataset, tmp_path)
    tiles = pd.read_parquet(copy / "tiles.parquet")
    tiles.loc[tiles.split == "val", "n_instances"] = 0
    tiles.to_parquet(copy / "tiles.parquet")
    return ["--run", str(run), "--dataset", str(copy)], "no 'val' chips with parcels"


def bad_weights_model_type(run, dataset, tmp_path):
    copy = run_copy(run, tmp_path, weights=False)
    fake_weights(copy / "model_best.pth", model_type="vit_b")
    return ["--run", str(copy), "--dataset", str(dataset)], "vit_b"


def bad_weights_base_checkpoint(run, dataset, tmp_path):
    copy = run_copy(run, tmp_path, weights=False)
    fake_weights(copy / "model_best.pth", base_checkpoint_sha256="ab" * 32)
    return ["--run", str(copy), "--dataset", str(dataset)], "MODEL.CHECKPOINT is empty"


def bad_output_not_writable(run, dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    return ["--run", str(run), "--dataset", str(dataset), "-o", str(blocker / "out")], "is a file"


def bad_run_and_config(run, dataset, tmp_path):
    args = ["--run", str(run), "--config-file", CONFIG, "--dataset", str(dataset)]
    return args, "either --run"


def bad_neither_run_nor_config(run, dataset, tmp_path):
    return ["--dataset", str(dataset)], "either --run"


def bad_config_without_output(run, dataset, tmp_path):
    return ["--config-file", CONFIG, "--dataset", str(dataset)], "-o"


def bad_unknown_override(run, dataset, tmp_path):
    return ["--run", str(run), "--dataset", str(dataset), "MODEL.TYPO", "1"], "MODEL.TYPO"


@pytest.mark.parametrize(
    "case",
    [
        bad_run_without_config,
        bad_run_without_weights,
        bad_not_a_dataset,
        bad_dataset_version,
        bad_split_absent,
        bad_split_empty,
        bad_weights_model_type,
        bad_weights_base_checkpoint,
        bad_output_not_writable,
        bad_run_and_config,
        bad_neither_run_nor_config,
        bad_config_without_output,
        bad_unknown_override,
    ],
    ids=lambda case: case.__name__.removeprefix("bad_"),
)
def test_bad_input_is_one_line_and_writes_nothing(case, run, dataset, tmp_path: Path) -> None:
    args, expected = case(run, dataset, tmp_path)
    before = sorted(run.iterdir())
    code, _, stderr = run_cli(*args)
    errors = [line for line in stderr.splitlines() if line.startswith("geosam: error:")]
    assert code == 2, stderr
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert expected in errors[0], errors[0]
    assert sorted(run.iterdir()) == before
    assert not list(tmp_path.rglob("eval-*")) and not list(tmp_path.rglob(".eval-*"))
