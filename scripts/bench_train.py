"""Benchmark decoder fine-tuning with cached image embeddings against running the encoder.

The ViT-B SAM architecture with random weights (no checkpoint needed), decoder trainable, on
the same chips of a synthetic tile dataset, through geosam's own trainer step: seconds per
epoch when the frozen encoder's embeddings come from the cache (geosam's default) versus
running the frozen encoder on every step (what lightning-sam and most fine-tuning scripts do),
printed as a ratio, plus decoder prompts/s and the one-off cost of filling the cache.

    python scripts/bench_train.py [--chips 4] [--work /tmp/geosam-bench-train] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from ignite.engine import Events

from geosam.config import load_config
from geosam.data.build import make_data_loader, prepare_embedding_cache
from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, tile_dataset
from geosam.engine.trainer import create_trainer
from geosam.modeling import build_loss, build_sam, set_trainable
from geosam.modeling.prompted import PromptedSam
from geosam.solver import make_lr_scheduler, make_optimizer


def chips_dataset(work: Path, chips: int) -> Path:
    """A synthetic scene cut into ``chips`` 1024 px chips, all in the train split."""
    side = 1024 * round(chips**0.5)
    tiles = work / f"tiles-{side}"
    if not (tiles / "manifest.json").exists():
        scene = make_scene(work / f"scene-{side}", size=side, seed=0)
        params = TileParams(tile_size=1024, overlap=0, val_fraction=0.0)
        tile_dataset([str(scene.raster)], scene.labels, tiles, params, progress=False)
    return tiles


def time_epoch(cfg, model, device: torch.device, cached: bool) -> tuple[float, int, float]:
    """(seconds for one training epoch, prompts trained, seconds to fill the cache)."""
    start = time.perf_counter()
    cache = prepare_embedding_cache(cfg, model, is_train=True) if cached else None
    fill = time.perf_counter() - start
    loader = make_data_loader(cfg, is_train=True, cache=cache)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer, len(loader))
    net = PromptedSam(model, cfg.MODEL.MULTIMASK).to(device)
    trainer = create_trainer(cfg, net, optimizer, scheduler, build_loss(cfg), device)
    prompts = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED,
        lambda e: prompts.append(
            sum(len(p["instance_ids"]) for s in e.state.batch["prompts"] for p in s.values())
        ),
    )
    start = time.perf_counter()
    trainer.run(loader, max_epochs=1)
    return time.perf_counter() - start, sum(prompts), fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=4, help="1024 px chips (a square number)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geosam-bench-train"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 on CUDA)")
    args = parser.parse_args()
    tiles = chips_dataset(args.work, args.chips)
    cfg = load_config(
        str(Path(__file__).resolve().parents[1] / "configs" / "sam_vit_b_decoder.yaml"),
        [
            "DATASETS.TRAIN",
            str(tiles),
            "MODEL.DEVICE",
            args.device,
            "SOLVER.AMP",
            str(args.amp),
            "DATALOADER.IMS_PER_BATCH",
            "1",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MAX_INSTANCES",
            "8",
            "INPUT.HFLIP",
            "False",
            "INPUT.VFLIP",
            "False",
            "INPUT.ROT90",
            "False",
            "CACHE.DIR",
            str(args.work / "embeddings"),
        ],
    )
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_sam("vit_b", 1024, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD).to(device)
    set_trainable(model, ["mask_decoder"])
    for cache in sorted(args.work.glob("embeddings/*/*.npy")):
        cache.unlink()  # measure the fill every time

    encoder, n_enc, _ = time_epoch(cfg, model, device, cached=False)
    cached, n_dec, fill = time_epoch(cfg, model, device, cached=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {device}, amp {args.amp}; ViT-B (random weights), {args.chips} chips of "
        f"1024 px, up to 8 prompts per chip"
    )
    print(f"{'decoder training, one epoch':<40}{'seconds':>9}{'prompts/s':>11}{'speed-up':>10}")
    print(f"{'frozen encoder run every step':<40}{encoder:>9.1f}{n_enc / encoder:>11.2f}{1:>9.1f}x")
    print(
        f"{'cached embeddings (geosam)':<40}{cached:>9.1f}{n_dec / cached:>11.2f}"
        f"{encoder / cached:>9.1f}x"
    )
    print(f"filling the cache (once per chip): {fill:.1f} s, {fill / args.chips:.1f} s per chip")


if __name__ == "__main__":
    main()
