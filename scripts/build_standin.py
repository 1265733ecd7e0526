"""Rebuild the stand-in geosam ships (geosam/weights/standin.pth) from the recipe on its card.

The stand-in is the tiny SAM trained from scratch on one synthetic scene (geosam/modeling/
shipped.py says what it is and why it exists). Its card, geosam/weights/standin.json, holds the
whole recipe: the scene's size and seed, the tiling, and the resolved training config (every
key, so that later edits of configs/tiny_pretrain.yaml or of the defaults do not change what
"the recipe" means). This script runs it:

    synthetic scene → geosam tile → geosam train → geosam export-checkpoint

and compares the result with the shipped file: the same sha256 (bit for bit: training is seeded
per epoch and resumes exactly, see geosam/engine/trainer.py), or, where another torch build or
CPU rounds differently, the largest weight difference and the synthetic val mIoU of both.
``--install`` writes the rebuilt checkpoint and its card into geosam/weights/ instead;
``--install --from-run RUN`` installs the export of a finished run of the same recipe (how the
shipped one was made: scripts/bench_quality.py's runs/standin). ``--steps N`` trains N steps
instead of the recipe's, a quick check that the pipeline runs, never compared or installed.

    python scripts/build_standin.py [--output out/standin] [--install [--from-run RUN] | --steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, load_manifest, tile_dataset
from geosam.modeling.checkpoint import sha256_file
from geosam.modeling.shipped import WEIGHTS_DIR, card_path

REPO = Path(__file__).resolve().parents[1]
NAME = "standin"
# Keys of the resolved config that name this machine's paths: set per build, not recipe.
PER_BUILD_KEYS = ("OUTPUT_DIR", "DATASETS.TRAIN", "CACHE.DIR")
DESCRIPTION = (
    "geosam's stand-in for a foundation model: the tiny SAM architecture (MODEL.TYPE tiny, "
    "256 px, 0.5 M parameters) trained from scratch by geosam on one synthetic farmland scene "
    "only. It is NOT Segment Anything and holds none of SAM's weights; it exists because no SAM "
    "checkpoint can be fetched at run time, so that the demo, benchmarks and tests fine-tune a "
    "model that already knows parcels. Rebuild: python scripts/build_standin.py"
)


def geosam(*args: str) -> None:
    """Run a geosam CLI command in a child process (its own checks and logging)."""
    print("  $ geosam " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "geosam", *args], check=True)


def epochs_for(steps: int, train_tiles: int, batch: int) -> int:
    """Epochs that make about ``steps`` optimiser steps over ``train_tiles`` chips."""
    return max(1, round(steps / math.ceil(train_tiles / batch)))


def recipe_for(
    scene_size: int = 4096,
    scene_seed: int = 1,
    steps: int = 9000,
    color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.0),
) -> dict[str, Any]:
    """The recipe of configs/tiny_pretrain.yaml with these settings (scripts/bench_quality.py's
    options; the defaults are the shipped stand-in's)."""
    return {
        "synthetic_scene": {"size": scene_size, "seed": scene_seed},
        "tiles": {"tile_size": 256, "overlap": 32, "val_fraction": 0.2},
        "steps": steps,
        "config_file": "configs/tiny_pretrain.yaml",
        "overrides": {"INPUT.COLOR_JITTER": [float(x) for x in color_jitter]},
    }


def differences(recipe: dict[str, Any]) -> list[str]:
    """What in ``recipe`` (from :func:`recipe_for`) differs from the shipped stand-in's."""
    shipped = json.loads(card_path(NAME).read_text())["recipe"]
    differ = [key for key in ("synthetic_scene", "tiles", "steps") if recipe[key] != shipped[key]]
    jitter = recipe["overrides"]["INPUT.COLOR_JITTER"]
    if jitter != shipped["config"]["INPUT"]["COLOR_JITTER"]:
        differ.append("color jitter")
    return differ


def build_scene_and_tiles(recipe: dict[str, Any], out: Path) -> Path:
    """The recipe's synthetic scene, tiled; returns the tile dataset (each skipped if done)."""
    scene = recipe["synthetic_scene"]
    scene_dir = out / "synthetic" / f"scene-{scene['size']}-seed{scene['seed']}"
    if not (scene_dir / "scene.tif").exists():
        make_scene(scene_dir, size=scene["size"], seed=scene["seed"])
    tiles = out / "tiles"
    if not (tiles / "manifest.json").exists():
        tile_dataset(
            [str(scene_dir / "scene.tif")],
            scene_dir / "parcels.gpkg",
            tiles,
            TileParams(**recipe["tiles"]),
            id_field="parcel_id",
            overwrite=True,
            progress=False,
        )
    return tiles


def train_config(recipe: dict[str, Any], tiles: Path, steps: int | None) -> tuple[Path, list[str]]:
    """The preset and overrides that train the recipe on ``tiles``: the card's resolved config
    when it has one (written beside the tiles as recipe.yaml), else the recipe's config file;
    epochs from the recipe's steps (or ``steps``)."""
    train_tiles = int(load_manifest(tiles)["counts"]["train_tiles"])
    epochs = epochs_for(steps or recipe["steps"], train_tiles, batch=4)
    if "config" in recipe:
        preset = tiles.parent / "recipe.yaml"
        preset.write_text(yaml.safe_dump(recipe["config"]))
    else:
        preset = REPO / recipe["config_file"]
    overrides = ["DATASETS.TRAIN", str(tiles), "MODEL.DEVICE", "cpu"]
    for key, value in recipe.get("overrides", {}).items():
        overrides += [key, str(value)]
    overrides += ["SOLVER.MAX_EPOCHS", str(epochs), "TEST.EVAL_PERIOD", str(max(1, epochs // 4))]
    return preset, overrides


def recipe_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config without the per-build paths: the recipe's training part."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in PER_BUILD_KEYS:
        section, leaf = key.split(".") if "." in key else (None, key)
        (config[section] if section else config).pop(leaf, None)
    return config


def build(recipe: dict[str, Any], out: Path, steps: int | None) -> Path:
    """Scene → tiles → train → export-checkpoint into ``out``; the checkpoint's path."""
    tiles = build_scene_and_tiles(recipe, out)
    run_dir = out / "run"
    preset, overrides = train_config(recipe, tiles, steps)
    start = time.perf_counter()
    geosam(
        "train", "--config-file", str(preset), "--quiet", "--overwrite",
        "OUTPUT_DIR", str(run_dir), *overrides,
    )  # fmt: skip
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    return export(run_dir, out)


def export(run_dir: Path, out: Path) -> Path:
    """``geosam export-checkpoint`` of ``run_dir`` into ``out``; the checkpoint's path."""
    checkpoint = out / f"{NAME}.pth"
    out.mkdir(parents=True, exist_ok=True)
    geosam("export-checkpoint", "--run", str(run_dir), "-o", str(checkpoint), "--overwrite")
    return checkpoint


def val_metrics(run_dir: Path) -> dict[str, Any]:
    """The synthetic val evaluation of a run's best weights, the ones export-checkpoint
    exports (metrics.json's "best" epoch, all its metrics)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics["best"]["iteration"]
    return next(e for e in metrics["evaluations"] if e["iteration"] == best)


def install(recipe: dict[str, Any], checkpoint: Path, run_dir: Path) -> None:
    """Copy ``checkpoint`` into geosam/weights/ and write its card."""
    target = WEIGHTS_DIR / f"{NAME}.pth"
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    card = {
        "name": NAME,
        "description": DESCRIPTION,
        "file": target.name,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
        "model_type": "tiny",
        "image_size": 256,
        "recipe": {
            **{k: v for k, v in recipe.items() if k not in ("config_file", "overrides")},
            "config": recipe_config(run_dir),
        },
        "training_data": "one synthetic scene (geosam synth, the recipe's size and seed), "
        "tiled at 256 px; no real image",
        "synthetic_val": val_metrics(run_dir),
        "built_with": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        },
    }
    card_path(NAME).write_text(json.dumps(card, indent=2) + "\n")
    print(f"installed {target} (sha256 {card['sha256']}) and {card_path(NAME)}")


def compare(checkpoint: Path, run_dir: Path) -> bool:
    """Print how the rebuilt ``checkpoint`` compares with the shipped one; True if identical."""
    card = json.loads(card_path(NAME).read_text())
    found = sha256_file(checkpoint)
    if found == card["sha256"]:
        print(f"rebuilt {checkpoint}: identical to the shipped stand-in (sha256 {found})")
        return True
    shipped = torch.load(WEIGHTS_DIR / card["file"], weights_only=True)
    rebuilt = torch.load(checkpoint, weights_only=True)
    delta = max(float((shipped[k].float() - rebuilt[k].float()).abs().max()) for k in shipped)
    before, after = card["synthetic_val"]["mIoU"], val_metrics(run_dir)["mIoU"]
    print(
        f"rebuilt {checkpoint}: sha256 {found} differs from the shipped {card['sha256']}; "
        f"largest weight difference {delta:.3g}, synthetic val mIoU {after:.4f} "
        f"(shipped {before:.4f}, difference {after - before:+.4f})"
    )
    return False


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "out" / "standin")
    parser.add_argument("--steps", type=int, help="train this many steps (a quick check)")
    parser.add_argument(
        "--from-run", type=Path, help="with --install: a finished training run of the recipe"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="write the result and its card into geosam/weights/ (without a card: the recipe "
        "of configs/tiny_pretrain.yaml, 9,000 steps on a 4,096 px scene of seed 1)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.install and args.steps:
        raise SystemExit("--steps builds a quick check, which is never installed")
    if card_path(NAME).exists():
        recipe = json.loads(card_path(NAME).read_text())["recipe"]
    else:
        recipe = recipe_for()
    if args.from_run:
        if not args.install:
            raise SystemExit("--from-run goes with --install")
        install(recipe, export(args.from_run, args.output), args.from_run)
        return
    checkpoint = build(recipe, args.output, args.steps)
    if args.install:
        install(recipe, checkpoint, args.output / "run")
    elif args.steps:
        print(f"quick check: {checkpoint} ({args.steps} steps, not comparable with the shipped)")
    else:
        sys.exit(0 if compare(checkpoint, args.output / "run") else 1)


if __name__ == "__main__":
    main()
