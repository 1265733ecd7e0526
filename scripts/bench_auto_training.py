"""Benchmark training with automatic-mode points ("auto" prompts) against training without.

Automatic mode keeps a mask when the IoU head predicts a high IoU. Trained on parcel prompts
alone, the head never sees a point on a road or a hedge, so junk masks score like parcels.
This trains the tiny SAM from scratch with the demo's recipe (`geosam demo`, configs/
tiny_pretrain.yaml without colour jitter) on the demo's synthetic scene, twice for the same
steps: once with the default prompt kinds, once with a share of "auto" prompts added. Both
runs validate TEST.AUTO_POINTS seeded automatic-mode points per val chip, so both report the
IoU head's ROC AUC for "the point's mask finds its parcel" against the rest. Printed side by
side: per-kind val mIoU (box and point must not get worse) and that AUC.

With ``--base-checkpoint`` (a stand-in from ``geosam export-checkpoint``, e.g. of this
script's own default run) the two variants instead fine-tune that model's decoder on cached
embeddings (configs/tiny.yaml with BCE + Dice, as scripts/bench_quality.py tunes the stand-in):
the realistic case, since from scratch the empty targets keep the model longer in its
predict-nothing start (docs/design-notes.md, "The tiny SAM").

With ``--segment`` both models are exported and run through ``geosam segment --auto`` on a
scene of another seed at a few thresholds: polygons written, parcels found (best IoU >= 0.5),
precision of the polygons, and mean best IoU per true parcel.

    python scripts/bench_auto_training.py [--work /tmp/geosam-bench-auto] [--epochs 32]
        [--auto-weight 0.25] [--base-checkpoint tiny.pth --runs-tag tuned] [--segment]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.data.tiling import tile_dataset
from geosam.demo import ID_FIELD, DemoParams, tile_params, training_config
from geosam.engine.launch import launch_training

# The default prompt kinds and weights, and the same with "auto" prompts added at a weight.
BASE_KINDS = ("box", "point", "points")
BASE_WEIGHTS = (0.5, 0.25, 0.25)
AUTO_POINTS_PER_CHIP = 16
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# scripts/bench_quality.py's decoder recipe for the stand-in: BCE + Dice at 1:1.
DECODER_RECIPE = ("LOSS.FOCAL_WEIGHT", "1.0", "LOSS.FOCAL_ALPHA", "-1.0", "LOSS.FOCAL_GAMMA", "0.0")
# (predicted IoU, stability) thresholds for --segment: SAM's own, and looser ones.
THRESHOLDS = ((0.88, 0.95), (0.7, 0.9), (0.5, 0.8), (0.3, 0.7))


def variant_opts(name: str, auto_weight: float) -> list:
    """Config overrides (``merge_from_list`` values) of a variant."""
    kinds, weights = list(BASE_KINDS), list(BASE_WEIGHTS)
    if name == "auto":
        kinds.append("auto")
        weights.append(auto_weight)
    return [
        "INPUT.PROMPT_TYPES", kinds,
        "INPUT.PROMPT_WEIGHTS", weights,
        "TEST.AUTO_POINTS", AUTO_POINTS_PER_CHIP,
    ]  # fmt: skip


def train_variant(
    name: str, tiles: Path, run: Path, epochs: int, auto_weight: float, base: Path | None
) -> dict:
    """Train one variant (one torch thread: the two run side by side); its metrics.json."""
    import torch

    torch.set_num_threads(1)
    if not (run / "model_final.pth").exists():  # a finished run is not trained again
        if base is None:
            cfg = training_config(DemoParams(epochs=epochs), tiles, run)
        else:
            opts = ["MODEL.CHECKPOINT", str(base), "DATASETS.TRAIN", str(tiles)]
            opts += ["OUTPUT_DIR", str(run), "SOLVER.MAX_EPOCHS", str(epochs), *DECODER_RECIPE]
            cfg = load_config(str(CONFIGS / "tiny.yaml"), opts)
        cfg.defrost()
        cfg.merge_from_list(variant_opts(name, auto_weight))
        cfg.freeze()
        launch_training(cfg, progress=False)
    return json.loads((run / "metrics.json").read_text())


def training_table(documents: dict[str, dict]) -> str:
    """Per-kind val mIoU and the automatic-mode points' figures, final model, per variant."""
    names = list(documents)
    lines = [
        "| val (final model) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    finals = {name: doc["final"]["metrics"] for name, doc in documents.items()}
    rows = [(f"{kind} mIoU", kind, "mIoU") for kind in BASE_KINDS]
    rows += [
        ("auto points: IoU-head ROC AUC", "auto", "iou_auc"),
        ("auto points: object F1@0.5", "auto", "f1_50"),
        ("auto points: mIoU (empty = right off parcels)", "auto", "mIoU"),
    ]
    for title, kind, key in rows:
        cells = [f"{finals[name]['per_kind'][kind][key]:.3f}" for name in names]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("| overall mIoU | " + " | ".join(f"{finals[n]['mIoU']:.3f}" for n in names) + " |")
    steps = [str(documents[n]["final"]["iteration"]) for n in names]
    lines.append("| steps | " + " | ".join(steps) + " |")
    return "\n".join(lines)


def auto_history(documents: dict[str, dict]) -> str:
    """The IoU head's AUC at each evaluation, per variant."""
    lines = []
    for name, doc in documents.items():
        values = [
            f"{e['iteration']}: {e['per_kind']['auto']['iou_auc']:.3f}" for e in doc["evaluations"]
        ]
        lines.append(f"{name}: " + ", ".join(values))
    return "\n".join(lines)


def score_parcel_map(found: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict[str, float]:
    """Each true parcel's best IoU with any polygon; parcels with one >= 0.5 are found, and a
    polygon is right when its best IoU with a parcel is >= 0.5."""
    if found.empty:
        return {"polygons": 0, "recall": 0.0, "precision": float("nan"), "mean_best_iou": 0.0}
    found = found.to_crs(truth.crs)
    left, right = found.sindex.query(truth.geometry, predicate="intersects")
    a, b = truth.geometry.to_numpy()[left], found.geometry.to_numpy()[right]
    iou = shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))
    best_truth = np.zeros(len(truth))
    np.maximum.at(best_truth, left, iou)
    best_found = np.zeros(len(found))
    np.maximum.at(best_found, right, iou)
    return {
        "polygons": len(found),
        "recall": float((best_truth >= 0.5).mean()),
        "precision": float((best_found >= 0.5).mean()),
        "mean_best_iou": float(best_truth.mean()),
    }


def segment_auto(geosam: str, run: Path, scene, work: Path) -> list[dict]:
    """Export ``run`` and segment ``scene`` automatically at each of THRESHOLDS."""
    model = work / f"model-{run.name}"
    if not (model / "decoder.onnx").exists():
        subprocess.run([geosam, "export-onnx", "--run", str(run), "-o", str(model)], check=True)
    truth = gpd.read_file(scene.labels)
    results = []
    for iou_thresh, stability in THRESHOLDS:
        out = work / f"auto-{run.name}-{iou_thresh}-{stability}.gpkg"
        command = [
            geosam, "segment", str(scene.raster), "--model", str(model), "--auto", "-o", str(out),
            "--pred-iou-thresh", str(iou_thresh), "--stability-thresh", str(stability),
            "--overwrite", "--quiet",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        found = gpd.read_file(out) if done.returncode == 0 and out.exists() else gpd.GeoDataFrame()
        results.append({"thresholds": (iou_thresh, stability), **score_parcel_map(found, truth)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/geosam-bench-auto"))
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--auto-weight", type=float, default=0.25)
    parser.add_argument("--scene-size", type=int, default=2048)
    parser.add_argument("--base-checkpoint", type=Path)
    parser.add_argument("--runs-tag", default="scratch", help="Run folders: run-<tag>-<variant>.")
    parser.add_argument("--segment", action="store_true")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    tiles = work / "tiles"
    if not (tiles / "manifest.json").exists():
        scene = make_scene(work / "scene", args.scene_size, 0, progress=False)
        params = tile_params(DemoParams(scene_size=args.scene_size))
        tile_dataset([str(scene.raster)], scene.labels, tiles, params, id_field=ID_FIELD)
    names = ("default", "auto")
    with ProcessPoolExecutor(len(names)) as pool:
        futures = {
            name: pool.submit(
                train_variant,
                name,
                tiles,
                work / f"run-{args.runs_tag}-{name}",
                args.epochs,
                args.auto_weight,
                args.base_checkpoint,
            )
            for name in names
        }
        documents = {name: future.result() for name, future in futures.items()}
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor()}")
    print(f"{args.epochs} epochs; auto weight {args.auto_weight}, default weights {BASE_WEIGHTS}")
    print(training_table(documents))
    print("IoU-head AUC by step:\n" + auto_history(documents))
    if args.segment:
        geosam = str(Path(sys.executable).with_name("geosam"))
        unseen = make_scene(work / "scene-unseen", 1024, 1, progress=False)
        for name in names:
            for row in segment_auto(geosam, work / f"run-{args.runs_tag}-{name}", unseen, work):
                print(name, json.dumps(row))


if __name__ == "__main__":
    main()
