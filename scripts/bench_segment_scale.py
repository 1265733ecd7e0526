"""Whole regions on Dask: ``geosam segment --auto`` with 1 and 2 workers, side by side.

A synthetic mosaic of ``--grid`` x ``--grid`` abutting rasters of ``--size``² pixels at 1 m (one
``geosam synth`` scene cut along a grid, so parcels cross the raster edges as they do between
a county's quarter-quads) is segmented in automatic mode by the model in ``--model`` (any exported
folder: the stand-in, ``geosam demo``'s DIR/model) three ways, in turns: ``--workers 1``
in-process as a user runs it (onnxruntime's default threads: every core), ``--workers 1
--threads 1`` (one core: the unit that workers scale) and ``--workers 2`` (a LocalCluster of
two single-threaded workers). Each run is a fresh ``geosam segment`` process,
so the figures include starting the cluster and loading the model, as a user's run does.
``--repeat N`` runs the three ways N times in turns (this VM's speed drifts by ±15% over
minutes, more than a run lasts): the table shows each way's median run and the speed-ups
are printed per round, so that one slow pass of the machine is seen as such.
Printed: km²/hour, parcels/s and the speed-up of 2 workers over 1; the peak memory of each
worker, also for a mosaic of ``--small-size`` rasters, to show that it follows the window
and block size, not the raster's; and the same run projected for ViT-B windows: the windows
of a 1024 px model at 1 m over the same mosaic (its tiling, as ``geosam segment`` lays it
out) times ``--vit-b-window-s`` seconds per window (encoder plus its point grid on this
machine's CPU, measured with scripts/bench_runtime.py), divided among the workers.

    python scripts/bench_segment_scale.py --model demo/model -o out/bench_scale
"""

from __future__ import annotations

import argparse
import itertools
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

from geosam.runtime.auto import auto_tiling

SUMMARY = re.compile(
    r"(?P<parcels>\d+) polygons from (?P<windows>\d+) windows.*?\n"
    r"(?P<rasters>\d+) rasters .*?(?P<km2>[\d.e+]+) km².*?peak memory per worker: "
    r"(?P<peaks>[\d, ]+) MiB",
    re.S,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="Exported model folder.")
    parser.add_argument("-o", "--output", type=Path, required=True, help="Work folder.")
    parser.add_argument("--grid", type=int, default=2, help="Mosaic of GRID x GRID rasters.")
    parser.add_argument("--size", type=int, default=4096, help="Raster side in pixels.")
    parser.add_argument("--small-size", type=int, default=2048, help="Smaller raster side.")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--block-windows", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of the three ways.")
    parser.add_argument("--pred-iou-thresh", type=float, help="Default: the model's.")
    parser.add_argument("--stability-thresh", type=float, help="Default: the model's.")
    parser.add_argument(
        "--vit-b-window-s",
        type=float,
        default=30.0,
        help="Seconds per ViT-B 1024² window: encoder 9.7 s + 16² point grid 20.5 s "
        "(docs/benchmarks.md, runtime).",
    )
    return parser.parse_args()


def mosaic(folder: Path, grid: int, size: int) -> Path:
    """``grid`` x ``grid`` abutting rasters of ``size``² px in ``folder``, cut from one
    synthetic scene (made once, then reused)."""
    scene = folder / "scene"
    if not (scene / "scene.tif").exists():
        subprocess.run(
            [sys.executable, "-m", "geosam", "synth", "-o", str(scene),
             "--size", str(grid * size), "--seed", "100"],
            check=True, capture_output=True,
        )  # fmt: skip
    with rasterio.open(scene / "scene.tif") as source:
        for row, col in itertools.product(range(grid), repeat=2):
            path = folder / "rasters" / f"r{row}c{col}.tif"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            window = Window(col * size, row * size, size, size)
            profile = {**source.profile, "width": size, "height": size,
                       "transform": source.window_transform(window)}  # fmt: skip
            with rasterio.open(path, "w", **profile) as out:
                out.write(source.read(window=window))
                out.colorinterp = source.colorinterp
    return folder / "rasters"


# (workers, onnxruntime threads per worker): in-process as a user runs it (all cores), one
# single-threaded process (the unit the workers scale), two workers of one thread each
RUNS = ((1, "default"), (1, "1"), (2, "1"))


def cpu_seconds() -> float:
    """CPU seconds of this script's finished child processes and theirs (a run's workers):
    beside the wall seconds, it shows whether a run had its cores to itself."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(rasters: str, args: argparse.Namespace, workers: int, threads: str, out: Path) -> dict:
    """One ``geosam segment --auto`` process; its summary figures and wall seconds."""
    command = [sys.executable, "-m", "geosam", "segment", "--quiet", rasters, "--auto",
               "--model", str(args.model), "-o", str(out), "--workers", str(workers),
               "--points-per-side", str(args.points_per_side),
               "--block-windows", str(args.block_windows), "--overwrite"]  # fmt: skip
    if threads != "default":
        command += ["--threads", threads]
    for option in ("pred_iou_thresh", "stability_thresh"):
        if getattr(args, option) is not None:
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    started, used = time.perf_counter(), cpu_seconds()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    seconds, used = time.perf_counter() - started, cpu_seconds() - used
    found = SUMMARY.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"geosam segment failed:\n{done.stdout}{done.stderr[-2000:]}")
    peaks = [int(p) for p in found["peaks"].split(",")]
    return {
        "workers": workers,
        "threads": threads,
        "seconds": seconds,
        "cpu": used,
        "parcels": int(found["parcels"]),
        "windows": int(found["windows"]),
        "km2": float(found["km2"]),
        "peak_mib": max(peaks),
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median wall seconds among ``runs`` of one way."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rows, rounds = [], []
    for size in (args.size, args.small_size):
        folder = mosaic(args.output / f"mosaic-{size}", args.grid, size)
        runs: dict[tuple[int, str], list[dict]] = {way: [] for way in RUNS}
        for _ in range(args.repeat):
            for workers, threads in RUNS:
                out = args.output / f"parcels-{size}-{workers}-{threads}.gpkg"
                runs[workers, threads].append(run(str(folder), args, workers, threads, out))
            if size == args.size:
                rounds.append([runs[way][-1]["seconds"] for way in RUNS])
        rows += [{"size": size, **median_run(runs[way])} for way in RUNS]
    print(
        "| raster side | workers | threads each | s | CPU s | km²/h | parcels/s | windows "
        "| peak MiB / worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['workers']} | {r['threads']} | {r['seconds']:.0f} | "
            f"{r['cpu']:.0f} | "
            f"{r['km2'] / r['seconds'] * 3600:.1f} | {r['parcels'] / r['seconds']:.2f} | "
            f"{r['windows']} | {r['peak_mib']} |"
        )
    print(f"\n{args.size} px, 2 workers / 1 worker of one thread and / 1 in-process with "
          "onnxruntime's default threads, per round:")  # fmt: skip
    for number, (default_s, one_s, two_s) in enumerate(rounds, 1):
        print(f"  round {number}: {one_s / two_s:.2f}x, {default_s / two_s:.2f}x "
              f"({default_s:.0f} s, {one_s:.0f} s, {two_s:.0f} s)")  # fmt: skip
    one = rows[1]  # the median one-thread run, for the projection
    vit_b = args.grid**2 * len(auto_tiling((args.size, args.size), (1.0, 1.0), 1.0, 1024))
    for workers in (1, 2):
        hours = vit_b * args.vit_b_window_s / workers / 3600
        print(
            f"ViT-B projection, {workers} worker(s): {vit_b} windows of 1024 m x "
            f"{args.vit_b_window_s:g} s = {hours:.2f} h for {one['km2']:.1f} km² "
            f"({one['km2'] / hours:.1f} km²/h)"
        )


if __name__ == "__main__":
    main()
