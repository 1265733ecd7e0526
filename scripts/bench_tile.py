"""Benchmark ``geosam tile`` against the I/O limit on a large synthetic raster.

The baseline is a bare loop over the same windows that only reads each one with rasterio and
writes it as a chip with the same GeoTIFF profile: what any tiler must at least do. geosam
additionally burns the parcels, writes the instance mask, computes boxes and prompts and the
index. Each run is a separate process; peak RSS is the sum over its process tree, sampled.

    python scripts/bench_tile.py [--size 10240] [--work /tmp/geosam-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

TILE, OVERLAP = 1024, 128


def bare_loop(raster: Path, out: Path) -> int:
    """Read every window of the tiling plan and write it as a chip; return the chip count."""
    import rasterio

    from geosam.data.tiling.grid import plan_tiles
    from geosam.data.tiling.tile_writer import GDAL_ENV, write_geotiff

    out.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(**GDAL_ENV), rasterio.open(raster) as ds:
        tiles = plan_tiles(0, ds.width, ds.height, TILE, OVERLAP, split_block=2)
        for tile in tiles:
            chip = ds.read(window=tile.window)
            transform = ds.window_transform(tile.window)
            write_geotiff(out / f"{tile.tile_id}.tif", chip, ds.crs, transform)
    return len(tiles)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB, summed over the process tree) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed with status {proc.returncode}")
    return elapsed, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="raster side (px)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geosam-bench"))
    parser.add_argument("--bare-child", nargs=2, metavar=("RASTER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        print(bare_loop(Path(args.bare_child[0]), Path(args.bare_child[1])))
        return

    from geosam.data.synthetic import make_scene

    scene_dir = args.work / f"scene-{args.size}"
    if not (scene_dir / "scene.tif").exists():
        print(f"building a {args.size}² synthetic scene in {scene_dir} ...", flush=True)
        make_scene(scene_dir, size=args.size, seed=0)
    raster, labels = scene_dir / "scene.tif", scene_dir / "parcels.gpkg"

    geosam = [
        sys.executable,
        "-m",
        "geosam",
        "tile",
        str(raster),
        "--labels",
        str(labels),
        "--tile-size",
        str(TILE),
        "--overlap",
        str(OVERLAP),
        "--quiet",
        "--overwrite",
    ]
    runs = {
        "bare read+write loop": [
            sys.executable,
            __file__,
            "--bare-child",
            str(raster),
            str(args.work / "bare"),
        ],
        "geosam tile --workers 1": [*geosam, "-o", str(args.work / "tiles1"), "--workers", "1"],
        "geosam tile --workers 2": [*geosam, "-o", str(args.work / "tiles2"), "--workers", "2"],
    }
    results = {}
    for name, command in runs.items():
        elapsed, rss = measure(command)
        results[name] = (elapsed, rss)
    manifest = json.loads((args.work / "tiles1" / "manifest.json").read_text())
    n_geosam = manifest["counts"]["tiles"]
    n_bare = len(list((args.work / "bare").glob("*.tif")))
    base_rate = n_bare / results["bare read+write loop"][0]

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; raster {args.size}x{args.size} px, "
        f"tiles {TILE} px, overlap {OVERLAP}; {manifest['counts']['instances']} instances"
    )
    print(f"{'run':<26}{'tiles':>7}{'seconds':>10}{'tiles/s':>10}{'vs bare':>9}{'peak RSS':>12}")
    for name, (elapsed, rss) in results.items():
        count = n_bare if name.startswith("bare") else n_geosam
        rate = count / elapsed
        print(
            f"{name:<26}{count:>7}{elapsed:>10.1f}{rate:>10.2f}{rate / base_rate:>8.2f}x"
            f"{rss:>9.0f} MiB"
        )


if __name__ == "__main__":
    main()
