"""Benchmark fine-tuning quality on real field parcels: does geosam's fine-tuning pay off?

Issue 6's benchmark. The 30 NAIP images of ``naip-fields`` (real fields, hand-drawn polygons)
are split by image, fixed: 24 to train on, 6 held out (sorted stems, every 5th from index 2).
No SAM checkpoint can be downloaded here, so the "foundation model" is a stand-in that geosam
trains itself: the tiny SAM (configs/tiny_pretrain.yaml) trained from scratch on synthetic
scenes only, exported as an official-format checkpoint. Then, on the held-out images' tiles
and their fixed prompts (box; one positive point; three points), ``geosam evaluate`` scores

1. the box-fill baseline (the prompt box itself as the mask);
2. the stand-in, never shown a real image;
3. the stand-in after decoder-only fine-tuning on the NAIP train tiles (configs/tiny.yaml,
   cached embeddings), in one or more loss/LR variants (--decoder-variants); the best epoch
   and variant are chosen on the train images' own spatial val split, never the held-out ones;
4. the stand-in after fine-tuning decoder and image encoder (no cache, a few hundred steps,
   the chosen variant's loss);
5. the stand-in tuned for parcel maps (configs/tiny_parcel_map.yaml: every part, automatic
   mode's points among the prompts, --parcel-map-epochs epochs).

Last, the stand-in, the chosen decoder run and the parcel-map run, exported (each export tunes
its automatic-mode thresholds on the train images' val regions), go through ``geosam segment``
on the whole held-out images (scripts/bench_whole_rasters.py, issue 14): box and point prompts
on whole fields against box-fill, and automatic mode's object F1; and for the two tuned
models, automatic mode's shipped setting beside the best any setting reaches on those images
(scripts/bench_threshold_oracle.py), to tell a calibration loss from the model's limit.

Before the NAIP stages it runs issue 4's round trip on the stand-in: tile → train → export-onnx
→ ``geosam segment`` on a synthetic scene it never saw (another seed), one point inside each
parcel as the prompt, polygon IoU with the true parcels against box-fill's (each parcel's
bounding box).

It prints mIoU, Dice, boundary IoU and object F1 at IoU 0.5 per prompt kind side by side with
the difference tuned − stand-in, three times: for the masks as ``geosam segment`` and the
plugin deliver them (the prompted part of each, ``geosam evaluate``'s default), for the same
averaged over the four flips of each chip (TEST.FLIP_TTA, ``geosam segment --flip-tta``) and
for the decoder's raw masks. It writes OUT/quality.json and OUT/quality.md. Every trained
model stays under OUT (runs/*), so e.g. ``geosam evaluate --run OUT/runs/decoder-bce-lr0.001
--dataset ANY`` works later. Stages whose outputs exist are skipped (a rerun resumes) unless
--overwrite.

    python scripts/bench_quality.py [--output out/bench_quality]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_threshold_oracle
import bench_whole_rasters
import build_standin
import geopandas as gpd
from build_standin import epochs_for, geosam

from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, load_manifest, tile_dataset
from geosam.demo import box_fill_polygon_iou, polygon_iou, render_result, write_point_prompts
from geosam.engine.eval_report import BASE, BOX_FILL, TUNED
from geosam.engine.metrics import METRIC_NAMES
from geosam.modeling.prompted import PROMPT_KINDS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TILE_SIZE, OVERLAP = 256, 32
METRIC_TITLES = {"mIoU": "mIoU", "dice": "Dice", "boundary_iou": "boundary IoU", "f1_50": "F1@0.5"}
FULL_TRAINABLE = "[image_encoder,prompt_encoder,mask_decoder]"
# Decoder fine-tuning losses: configs/tiny.yaml's own (SAM's 20:1 focal + Dice), or the BCE +
# Dice at 1:1 that the stand-in was pretrained with (configs/tiny_pretrain.yaml).
LOSSES: dict[str, dict[str, object]] = {
    "focal": {},
    "bce": {"LOSS.FOCAL_WEIGHT": 1.0, "LOSS.FOCAL_ALPHA": -1.0, "LOSS.FOCAL_GAMMA": 0.0},
}


@dataclass(frozen=True)
class Scoring:
    """One way of scoring the held-out masks: its name in stage timings, eval folder suffix,
    ``geosam evaluate`` overrides, the key of its results in quality.json, its table's title."""

    name: str
    suffix: str
    overrides: tuple[str, ...]
    key: str
    title: str


# The prompted part of each mask, as `geosam segment` and the plugin deliver it (the default,
# TEST.PROMPTED_PART); the same averaged over the four flips (TEST.FLIP_TTA, as `geosam
# segment --flip-tta` delivers it); and the decoder's raw mask.
SCORINGS: tuple[Scoring, ...] = (
    Scoring(
        "prompted part",
        "",
        (),
        "results",
        "Masks as delivered (the prompted part, TEST.PROMPTED_PART):",
    ),
    Scoring(
        "flip TTA",
        "-flip-tta",
        ("TEST.FLIP_TTA", "True"),
        "results_flip_tta",
        "Masks as delivered with test-time flips (TEST.FLIP_TTA, `segment --flip-tta`):",
    ),
    Scoring(
        "raw masks",
        "-raw-masks",
        ("TEST.PROMPTED_PART", "False"),
        "results_raw_masks",
        "The decoder's raw masks (TEST.PROMPTED_PART False):",
    ),
)
# The held-out images' tiles are all in split "train" of their own dataset (--val-fraction 0).
HELDOUT_SPLIT = "train"


@dataclass
class Timings:
    """Seconds per stage, kept in ``path`` across reruns: a skipped stage keeps the time of the
    run that did it (None if unknown)."""

    path: Path
    stages: dict[str, float | None] = field(default_factory=dict)

    def run(self, name: str, done: bool, action: Callable[[], object]) -> None:
        recorded = json.loads(self.path.read_text()) if self.path.exists() else {}
        if done:
            print(f"[{name}] done already, skipped", flush=True)
            self.stages[name] = recorded.get(name)
            return
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        action()
        self.stages[name] = round(time.perf_counter() - start, 1)
        self.path.write_text(json.dumps({**recorded, name: self.stages[name]}, indent=2) + "\n")
        print(f"[{name}] {self.stages[name]:.0f} s", flush=True)


def default_data() -> Path:
    """$GEOSAM_REAL_DATA/naip-fields, else ../shared/data/naip-fields beside the checkout."""
    root = os.environ.get("GEOSAM_REAL_DATA")
    return (Path(root) if root else REPO.parent / "shared" / "data") / "naip-fields"


def split_images(stems: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, held out): sorted stems, every 5th from index 2 held out (6 of 30)."""
    ordered = sorted(stems)
    heldout = ordered[2::5]
    return [s for s in ordered if s not in heldout], heldout


def check_settings(out: Path, args: argparse.Namespace) -> None:
    """Refuse to resume in ``out`` with other settings than it was started with: stages are
    skipped when their outputs exist, so a changed setting would silently keep old results
    (and later stages would mix them with new ones). The settings are kept in
    OUT/settings.json; a folder without one takes the current settings."""
    settings = {
        key: str(value)
        for key, value in vars(args).items()
        if key not in ("output", "overwrite", "pretrain")
    }
    path = out / "settings.json"
    if path.exists() and not args.overwrite:
        before = json.loads(path.read_text())
        changed = sorted(
            key for key in settings.keys() | before.keys() if settings.get(key) != before.get(key)
        )
        if changed:
            raise SystemExit(
                f"{out} was made with other settings ({', '.join(changed)}): pass --overwrite "
                "to redo every stage, or another --output"
            )
    path.write_text(json.dumps(settings, indent=2) + "\n")


def run_finished(run_dir: Path) -> bool:
    """A geosam train run that ran to its end (metrics.json has its final evaluation)."""
    metrics = run_dir / "metrics.json"
    return metrics.exists() and "final" in json.loads(metrics.read_text())


def train(config: str, run_dir: Path, overrides: dict[str, object]) -> None:
    """``geosam train`` into ``run_dir``, replacing an unfinished run there."""
    pairs = [str(x) for key, value in overrides.items() for x in (key, value)]
    geosam(
        "train",
        "--config-file",
        str(CONFIGS / config),
        "--quiet",
        "--overwrite",
        "OUTPUT_DIR",
        str(run_dir),
        "MODEL.DEVICE",
        "cpu",
        *pairs,
    )


def tile(rasters: Sequence[Path], labels: Path, out: Path, val_fraction: float, **kw: Any) -> None:
    params = TileParams(tile_size=TILE_SIZE, overlap=OVERLAP, val_fraction=val_fraction)
    tile_dataset(
        [str(r) for r in rasters], labels, out, params, overwrite=True, progress=False, **kw
    )


def train_tiles(dataset: Path) -> int:
    return int(load_manifest(dataset)["counts"]["train_tiles"])


def pretrained_standin(args: argparse.Namespace, out: Path, timings: Timings) -> str:
    """MODEL.CHECKPOINT of the stand-in: the one geosam ships when these settings are its
    recipe, else (or with --pretrain) one pretrained here by scripts/build_standin.py into
    OUT/standin, compared with the shipped one when the recipe is the same."""
    recipe = build_standin.recipe_for(
        args.synth_size, args.synth_seed, args.pretrain_steps, args.pretrain_color_jitter
    )
    differ = build_standin.differences(recipe)
    if not differ and not args.pretrain:
        print("[stand-in] the shipped one (MODEL.CHECKPOINT standin): same recipe", flush=True)
        return "standin"
    if differ:
        print(f"[stand-in] settings differ from the shipped recipe ({', '.join(differ)})")
    built = out / "standin" / f"{build_standin.NAME}.pth"
    timings.run(
        f"pretrain stand-in ({args.pretrain_steps} steps)",
        not args.overwrite and built.exists(),
        lambda: build_standin.build(recipe, out / "standin", None),
    )
    if not differ:
        build_standin.compare(built, out / "standin" / "run")
    return str(built)


def round_trip(scene: Path, model: Path, out: Path) -> None:
    """Segment ``scene`` with ``model``, one point inside each of its parcels as the prompt,
    into ``out``/parcels.gpkg (prompts in ``out``/prompts.gpkg)."""
    out.mkdir(parents=True, exist_ok=True)
    write_point_prompts(
        gpd.read_file(scene / "parcels.gpkg", layer="parcels"), out / "prompts.gpkg"
    )
    geosam(
        "segment", str(scene / "scene.tif"), "--model", str(model),
        "--prompts", str(out / "prompts.gpkg"), "-o", str(out / "parcels.gpkg"), "--quiet",
    )  # fmt: skip


def round_trip_scores(scene: Path, out: Path) -> dict[str, float]:
    """Mean polygon IoU of the round trip's polygons and of box-fill with the true parcels;
    draws both over the scene into ``out``/parcels.png."""
    truth = gpd.read_file(scene / "parcels.gpkg", layer="parcels")
    segmented = gpd.read_file(out / "parcels.gpkg")
    ious = polygon_iou(segmented, truth)
    render_result(
        scene / "scene.tif",
        truth,
        segmented,
        out / "prompts.gpkg",
        out / "parcels.png",
        "unseen synthetic scene",
    )
    return {
        "parcels": len(truth),
        "polygons": len(segmented),
        "point_polygon_iou": round(float(ious.mean()), 4),
        "box_fill_polygon_iou": round(float(box_fill_polygon_iou(truth).mean()), 4),
        "share_above_0.5": round(float((ious > 0.5).mean()), 4),
    }


def best_val_miou(run_dir: Path) -> float:
    """The run's best mIoU on its validation split (what model_best.pth was chosen by)."""
    return float(json.loads((run_dir / "metrics.json").read_text())["best"]["mIoU"])


def load_eval(eval_dir: Path) -> dict[str, Any]:
    return json.loads((eval_dir / "metrics.json").read_text())


def collect(evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """model → prompt kind → metric, from the runs' evaluations: box-fill and the stand-in
    (the runs' common base, taken from the first) plus each run's tuned model."""
    first = next(iter(evals.values()))["models"]
    columns = {BOX_FILL: first[BOX_FILL], "stand-in": first[BASE]}
    columns.update({name: doc["models"][TUNED] for name, doc in evals.items()})
    return {
        name: {
            kind: {
                m: model["per_kind"][kind][m] for m in METRIC_NAMES if m in model["per_kind"][kind]
            }
            for kind in PROMPT_KINDS
            if kind in model["per_kind"]
        }
        for name, model in columns.items()
    }


def table(results: dict[str, dict[str, dict[str, float]]], tuned: Sequence[str]) -> str:
    """Markdown: one row per prompt kind and metric, a column per model, then tuned − stand-in."""
    names = list(results)
    head = ["prompt", "metric", *names, *(f"{t} − stand-in" for t in tuned)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for kind in PROMPT_KINDS:
        for metric in METRIC_NAMES:
            values = [results[n].get(kind, {}).get(metric) for n in names]
            if all(v is None for v in values):
                continue
            base = results["stand-in"].get(kind, {}).get(metric)
            deltas = [
                None
                if base is None or (v := results[t].get(kind, {}).get(metric)) is None
                else v - base
                for t in tuned
            ]
            cells = ["–" if v is None else f"{v:.3f}" for v in values]
            cells += ["–" if d is None else f"{d:+.3f}" for d in deltas]
            lines.append(f"| {kind} | {METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HeldOut:
    """The held-out images, their true fields and the exported models scored on them."""

    images: Sequence[Path]
    labels: Path
    models: dict[str, Path]

    def arguments(self, models: Sequence[str]) -> list[str]:
        """The arguments of a held-out script for ``models``: each as NAME=FOLDER, the images
        and the truth."""
        return [
            *(f"--model={name}={self.models[name]}" for name in models),
            "--images", *map(str, self.images),
            "--truth", str(self.labels), "--truth-layer", "fields",
        ]  # fmt: skip


def held_out_stage(
    script: Any,
    name: str,
    title: str,
    arguments: list[str],
    out: Path,
    timings: Timings,
    redo: bool,
) -> dict[str, Any]:
    """The stage ``title``: ``script`` (a held-out benchmark module whose ``run`` writes
    OUT/NAME/NAME.json) run once, and its results."""
    result_path = out / name / f"{name}.json"
    arguments = [*arguments, "-o", str(out / name)]
    timings.run(
        title,
        not redo and result_path.exists(),
        lambda: script.run(script.parse_args(arguments)),
    )
    return json.loads(result_path.read_text())


def whole_rasters(held_out: HeldOut, out: Path, timings: Timings, redo: bool) -> dict[str, Any]:
    """Issue 14's scoring of what users get: the exported models through ``geosam segment`` on
    the whole held-out images and whole fields (scripts/bench_whole_rasters.py), prompt mode
    (also with test-time flips) against box-fill and automatic mode's object F1."""
    arguments = held_out.arguments(list(held_out.models))
    arguments += ["--id-field", "field_id", "--flip-tta"]
    title = "whole held-out rasters through geosam segment (prompts, automatic mode)"
    return held_out_stage(
        bench_whole_rasters, "whole-rasters", title, arguments, out, timings, redo
    )


def threshold_oracle(
    held_out: HeldOut, tuned: Sequence[str], out: Path, timings: Timings, redo: bool
) -> dict[str, Any]:
    """How far each ``tuned`` model's shipped automatic-mode setting is from the best any
    setting reaches on the held-out images (scripts/bench_threshold_oracle.py): a small gap
    says the model, not its thresholds, limits automatic mode."""
    arguments = held_out.arguments(tuned)
    title = "automatic mode's thresholds against the best on the held-out images"
    return held_out_stage(
        bench_threshold_oracle, "threshold-oracle", title, arguments, out, timings, redo
    )


def variant(text: str) -> tuple[str, float]:
    """``LOSS:LR`` → (loss, learning rate), for --decoder-variants."""
    loss, _, lr = text.partition(":")
    if loss not in LOSSES or not lr:
        raise argparse.ArgumentTypeError(f"{text!r}: not LOSS:LR, LOSS one of {sorted(LOSSES)}")
    return loss, float(lr)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="naip-fields folder")
    parser.add_argument("--output", type=Path, default=REPO / "out" / "bench_quality")
    parser.add_argument("--synth-size", type=int, default=4096, help="synthetic scene side (px)")
    parser.add_argument("--synth-seed", type=int, default=1)
    # held-out box mIoU of the stand-in after 1,100 steps 0.579, 4,500 steps 0.627 (its
    # synthetic val mIoU still rising); steps are what lifted every figure (docs/benchmarks.md)
    parser.add_argument("--pretrain-steps", type=int, default=9000)
    parser.add_argument(
        "--pretrain-color-jitter",
        type=float,
        nargs=4,
        default=[0.4, 0.4, 0.4, 0.0],
        metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"),
        help="INPUT.COLOR_JITTER while pretraining the stand-in (configs/tiny_pretrain.yaml's; "
        "0 0 0 0: session 4's stand-in, zero-shot box mIoU 0.572 instead of 0.746)",
    )
    parser.add_argument(
        "--round-trip-size", type=int, default=2048, help="round trip's synthetic scene (px)"
    )
    parser.add_argument("--round-trip-seed", type=int, default=0)
    # 10 epochs (1,700 steps) at LR 1e-3: val mIoU still rising as the cosine schedule ended
    parser.add_argument("--finetune-epochs", type=int, default=20, help="decoder-only")
    parser.add_argument(
        "--decoder-variants",
        type=variant,
        nargs="+",
        # val mIoU on the train images with the 4,446-step stand-in: bce:1e-3 0.635, bce:3e-4
        # 0.628 (with session 2's 1,140-step stand-in focal:1e-3 0.489, bce:3e-4 0.497)
        default=[("bce", 1e-3)],
        metavar="LOSS:LR",
        help="decoder-only runs to try, each a loss (focal: configs/tiny.yaml's SAM 20:1 focal + "
        "Dice; bce: BCE + Dice 1:1, the stand-in's own) and a BASE_LR, e.g. focal:1e-3 bce:3e-4; "
        "the best on the train images' val split is kept",
    )
    # 340 steps lifted held-out box mIoU by 5.3 points, 1,700 by 10.1 (docs/benchmarks.md)
    parser.add_argument("--full-steps", type=int, default=1700, help="decoder + encoder")
    # val mIoU on the train images with the 4,446-step stand-in: 1e-3 0.667, 3e-4 0.660
    parser.add_argument("--full-lr", type=float, default=1e-3, help="decoder + encoder")
    # held-out automatic F1 0.449 after 24 epochs, 0.532 after 48 (exported, session 11)
    parser.add_argument(
        "--parcel-map-epochs",
        type=int,
        default=48,
        help="configs/tiny_parcel_map.yaml's run (about 50 s an epoch on one core)",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain the stand-in here even where the settings are the shipped one's recipe "
        "(and compare the two)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo every stage")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, args)
    images = sorted((args.data / "images").glob("*.tif"))
    labels = args.data / "fields.gpkg"
    train_stems, heldout_stems = split_images([p.stem for p in images])
    by_stem = {p.stem: p for p in images}
    naip = {"layer": "fields", "id_field": "field_id"}
    redo = args.overwrite
    timings = Timings(out / "timings.json")
    t0 = time.perf_counter()

    naip_train, naip_heldout = (out / "tiles" / n for n in ("naip-train", "naip-heldout"))
    timings.run(
        "tile NAIP train images",
        not redo and (naip_train / "manifest.json").exists(),
        lambda: tile([by_stem[s] for s in train_stems], labels, naip_train, 0.2, **naip),
    )
    timings.run(
        "tile NAIP held-out images",
        not redo and (naip_heldout / "manifest.json").exists(),
        lambda: tile([by_stem[s] for s in heldout_stems], labels, naip_heldout, 0.0, **naip),
    )

    runs = out / "runs"
    standin = pretrained_standin(args, out, timings)

    trip_scene = out / "synthetic" / f"scene-{args.round_trip_size}-seed{args.round_trip_seed}"
    if args.round_trip_seed == args.synth_seed:
        raise SystemExit("--round-trip-seed must differ from --synth-seed: a scene not trained on")
    timings.run(
        "round-trip scene",
        not redo and (trip_scene / "scene.tif").exists(),
        lambda: make_scene(trip_scene, size=args.round_trip_size, seed=args.round_trip_seed),
    )
    standin_onnx = out / "models" / "standin"
    timings.run(
        "export stand-in to ONNX",
        not redo and (standin_onnx / "manifest.json").exists(),
        lambda: geosam(
            *("export-onnx", "--config-file", str(CONFIGS / "tiny.yaml"), "-o", str(standin_onnx)),
            *("--overwrite", "MODEL.CHECKPOINT", standin),
        ),
    )
    trip_dir = out / "round-trip"
    timings.run(
        "round trip: segment, one point per parcel",
        not redo and (trip_dir / "parcels.gpkg").exists(),
        lambda: round_trip(trip_scene, standin_onnx, trip_dir),
    )
    trip = round_trip_scores(trip_scene, trip_dir)
    print(f"round trip on an unseen synthetic scene: {trip}", flush=True)

    naip_common = {
        "MODEL.CHECKPOINT": standin,
        "DATASETS.TRAIN": naip_train,
        "DATASETS.VAL": naip_train,  # its spatial val split: never the held-out images
    }
    decoder_runs = {v: runs / f"decoder-{v[0]}-lr{v[1]:g}" for v in args.decoder_variants}
    for (loss, lr), run_dir in decoder_runs.items():
        timings.run(
            f"decoder fine-tuning, {loss} loss, lr {lr:g} ({args.finetune_epochs} epochs)",
            not redo and run_finished(run_dir),
            lambda loss=loss, lr=lr, run_dir=run_dir: train(
                "tiny.yaml",
                run_dir,
                {
                    **naip_common,
                    **LOSSES[loss],
                    "SOLVER.BASE_LR": lr,
                    "SOLVER.MAX_EPOCHS": args.finetune_epochs,
                    "TEST.EVAL_PERIOD": 2,
                },
            ),
        )
    val_scores = {run_dir.name: best_val_miou(run_dir) for run_dir in decoder_runs.values()}
    chosen = max(decoder_runs, key=lambda v: val_scores[decoder_runs[v].name])
    print(f"decoder runs' best val mIoU (train images): {val_scores}", flush=True)
    print(f"chosen: {decoder_runs[chosen].name}", flush=True)

    full_epochs = epochs_for(args.full_steps, train_tiles(naip_train), 4)
    full_run = runs / f"decoder-encoder-{chosen[0]}-lr{args.full_lr:g}"
    timings.run(
        f"decoder + encoder fine-tuning, {chosen[0]} loss ({full_epochs} epochs)",
        not redo and run_finished(full_run),
        lambda: train(
            "tiny.yaml",
            full_run,
            {
                **naip_common,
                **LOSSES[chosen[0]],
                "MODEL.TRAINABLE": FULL_TRAINABLE,
                "CACHE.EMBEDDINGS": False,
                "SOLVER.BASE_LR": args.full_lr,
                "SOLVER.MAX_EPOCHS": full_epochs,
            },
        ),
    )

    parcel_run = runs / "parcel-map"
    timings.run(
        f"parcel-map fine-tuning, every part with automatic mode's points "
        f"({args.parcel_map_epochs} epochs)",
        not redo and run_finished(parcel_run),
        lambda: train(
            "tiny_parcel_map.yaml",
            parcel_run,
            {**naip_common, "SOLVER.MAX_EPOCHS": args.parcel_map_epochs},
        ),
    )

    tuned = {"decoder": decoder_runs[chosen], "decoder+encoder": full_run, "parcel map": parcel_run}
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for scoring in SCORINGS:
        evals: dict[str, dict[str, Any]] = {}
        for name, run_dir in tuned.items():
            eval_dir = out / "eval" / f"{run_dir.name}{scoring.suffix}"
            timings.run(
                f"evaluate {name} on held-out images ({scoring.name})",
                not redo and (eval_dir / "metrics.json").exists(),
                lambda run_dir=run_dir, eval_dir=eval_dir, overrides=scoring.overrides: geosam(
                    "evaluate",
                    "--run",
                    str(run_dir),
                    "--dataset",
                    str(naip_heldout),
                    "--split",
                    HELDOUT_SPLIT,
                    "-o",
                    str(eval_dir),
                    "--quiet",
                    "MODEL.DEVICE",
                    "cpu",
                    *overrides,
                ),
            )
            evals[name] = load_eval(eval_dir)
        results[scoring.key] = collect(evals)
    exported = {"stand-in": standin_onnx}
    for name, run_dir in (("decoder", decoder_runs[chosen]), ("parcel map", parcel_run)):
        exported[name] = out / "models" / run_dir.name
        timings.run(
            f"export the {name} run to ONNX (and tune its automatic-mode thresholds)",
            not redo and (exported[name] / "manifest.json").exists(),
            lambda run_dir=run_dir, onnx=exported[name]: geosam(
                "export-onnx", "--run", str(run_dir), "-o", str(onnx), "--overwrite"
            ),
        )
    held_out = HeldOut([by_stem[s] for s in heldout_stems], labels, exported)
    whole = whole_rasters(held_out, out, timings, redo)
    oracle = threshold_oracle(held_out, ["decoder", "parcel map"], out, timings, redo)
    markdown = "\n".join(
        f"{scoring.title}\n\n{table(results[scoring.key], list(tuned))}" for scoring in SCORINGS
    )
    markdown += "\nWhole held-out rasters through `geosam segment`:\n\n"
    markdown += bench_whole_rasters.table(whole)
    markdown += "\nAutomatic mode's shipped setting against the best on the held-out images:\n\n"
    markdown += bench_threshold_oracle.table(oracle)
    document = {
        "benchmark": "scripts/bench_quality.py (issue 6)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "data": str(args.data.resolve()),
        "split": {"train_images": train_stems, "heldout_images": heldout_stems},
        "tiles": {
            "size": TILE_SIZE,
            "overlap": OVERLAP,
            "naip_train": load_manifest(naip_train)["counts"],
            "naip_heldout": load_manifest(naip_heldout)["counts"],
        },
        "settings": {
            "synthetic_scene": {
                "size": args.synth_size,
                "seed": args.synth_seed,
                "resolution_m": 1.0,
            },
            "pretrain_steps": args.pretrain_steps,
            "pretrain_color_jitter": args.pretrain_color_jitter,
            "finetune_epochs": args.finetune_epochs,
            "decoder_variants": [f"{loss}:{lr:g}" for loss, lr in args.decoder_variants],
            "decoder_runs_best_val_miou": val_scores,
            "chosen_decoder_run": decoder_runs[chosen].name,
            "full_epochs": full_epochs,
            "full_lr": args.full_lr,
            "parcel_map_epochs": args.parcel_map_epochs,
            "round_trip_scene": {"size": args.round_trip_size, "seed": args.round_trip_seed},
        },
        "round_trip": trip,
        "whole_rasters": whole,
        "threshold_oracle": oracle,
        "stand-in": standin,
        "runs": {k: str(v) for k, v in tuned.items()},
        "timings_s": timings.stages,
        "this_invocation_s": round(time.perf_counter() - t0, 1),
        "total_stages_s": round(sum(t for t in timings.stages.values() if t), 1),
        **results,
    }
    (out / "quality.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "quality.md").write_text(markdown)
    print("\nstage timings (s, from the run that did the stage):")
    for name, seconds in timings.stages.items():
        print(f"  {name}: {seconds}")
    print(f"  all stages: {document['total_stages_s']:.0f} s\n")
    print(markdown)
    print(
        f"round trip (stand-in, one point per parcel, {trip['parcels']} parcels of an unseen "
        f"synthetic scene): mean polygon IoU {trip['point_polygon_iou']:.3f}, box-fill "
        f"{trip['box_fill_polygon_iou']:.3f}"
    )
    print(f"wrote {out / 'quality.json'} and {out / 'quality.md'}")


if __name__ == "__main__":
    main()
