"""``geosam segment --auto`` on real Dask: a LocalCluster, a scheduler and workers started
here (one killed mid-run), and a run killed with SIGKILL then resumed; each gives the
output of the in-process run. The tiny model with random weights and no thresholds finds
arbitrary but deterministic masks, which is what an equality test needs (its pieces at window
edges are kept: few of its masks would be left otherwise)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from conftest import flat_parcels_raster
from pyproj import Transformer
from test_segment import export_tiny

from geosam.cli import cli

ORIGIN = (500_000.0, 5_000_000.0)
SIDE = 300
ARGS = ["--auto", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
ARGS += ["--block-windows", "1", "--min-area", "20", "--keep-open-pieces"]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("dask"))


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four abutting rasters, the northern two in UTM 33N, the southern two in Web
    Mercator, with parcels across their edges (4 blocks of one window each)."""
    folder = tmp_path_factory.mktemp("dask") / "mosaic"
    folder.mkdir()
    x, y = ORIGIN
    parcels = [shapely.box(x + a, y - a - 150, x + a + 200, y - a) for a in range(50, 600, 130)]
    to_mercator = Transformer.from_crs(32633, 3857, always_xy=True)
    for row in range(2):
        for col in range(2):
            origin = (x + col * SIDE, y - row * SIDE)
            path = folder / f"r{row}{col}.tif"
            if row == 0:
                flat_parcels_raster(path, parcels, origin, SIDE)
                continue
            mercator = [shapely.transform(p, lambda c: np.column_stack(
                to_mercator.transform(c[:, 0], c[:, 1]))) for p in parcels]  # fmt: skip
            flat_parcels_raster(path, mercator, to_mercator.transform(*origin), SIDE)
            with_crs(path, "EPSG:3857")
    return folder


def with_crs(path: Path, crs: str) -> None:
    import rasterio

    with rasterio.open(path, "r+") as dataset:
        dataset.crs = crs


def segment(mosaic: Path, model_dir: Path, out: Path, *extra: str):
    args = ["segment", "--quiet", str(mosaic), "--model", str(model_dir), "-o", str(out)]
    return CliRunner().invoke(cli, [*args, *ARGS, *extra])


def command(mosaic: Path, model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "geosam"), "segment", "--quiet", str(mosaic), "--model", str(model_dir),
            "-o", str(out), *ARGS, *extra]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def parcels(path: Path) -> list[tuple[str, bytes, float]]:
    frame = gpd.read_file(path)
    return sorted(
        (Path(source).name, shapely.normalize(geometry).wkb, round(score, 6))
        for source, geometry, score in zip(frame.source, frame.geometry, frame.score, strict=True)
    )


@pytest.fixture(scope="module")
def reference(mosaic: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    out = tmp_path_factory.mktemp("dask") / "in-process.gpkg"
    result = segment(mosaic, model_dir, out)
    assert result.exit_code == 0, result.output
    found = parcels(out)
    assert len(found) > 4 and len({source for source, _, _ in found}) == 4
    return found


def test_local_cluster_equals_in_process(
    mosaic: Path, model_dir: Path, reference: list, tmp_path: Path
) -> None:
    out = tmp_path / "cluster.gpkg"
    result = segment(mosaic, model_dir, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert parcels(out) == reference
    assert "peak memory per worker" in result.stdout
    assert "Dask dashboard: http://" in result.output  # the scale extra brings bokeh


def test_one_thread_equals_the_default(
    mosaic: Path, model_dir: Path, reference: list, tmp_path: Path
) -> None:
    """--threads only sets onnxruntime's threads: the parcels do not change; 0 is refused."""
    out = tmp_path / "one-thread.gpkg"
    result = segment(mosaic, model_dir, out, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert parcels(out) == reference
    result = segment(mosaic, model_dir, tmp_path / "none.gpkg", "--threads", "0")
    assert result.exit_code == 2 and "--threads must be 1 or more" in result.stderr
    assert not (tmp_path / "none.gpkg").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_parts(folder: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.parquet"))) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_scheduler_and_workers_survive_a_killed_worker(
    mosaic: Path, model_dir: Path, reference: list, tmp_path: Path
) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = environment()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = ["scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = ["worker", address, "--nthreads", "1", "--no-nanny"]
    started = [subprocess.Popen([str(BIN / "dask"), *scheduler], **quiet)]
    try:
        for _ in range(2):
            started.append(subprocess.Popen([str(BIN / "dask"), *worker], **quiet))
        out = tmp_path / "scheduler.gpkg"
        run = subprocess.Popen(command(mosaic, model_dir, out, "--scheduler", address), env=env)
        wait_for_parts(tmp_path / ".scheduler.gpkg.parts", 2, run)
        started[1].kill()
        assert run.wait(timeout=120) == 0
        assert parcels(out) == reference
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_resume_after_kill_equals_an_uninterrupted_run(
    mosaic: Path, model_dir: Path, reference: list, tmp_path: Path
) -> None:
    out = tmp_path / "resumed.gpkg"
    run = subprocess.Popen(command(mosaic, model_dir, out), env=environment())
    wait_for_parts(tmp_path / ".resumed.gpkg.parts", 3, run)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not out.exists()
    again = subprocess.run(command(mosaic, model_dir, out), env=environment(),
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming:" in again.stderr
    assert parcels(out) == reference


def test_unreachable_scheduler_is_one_line(mosaic: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "none.gpkg"
    result = segment(mosaic, model_dir, out, "--scheduler", f"tcp://127.0.0.1:{free_port()}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "--scheduler" in errors[0], result.output
    assert not out.exists() and not list(tmp_path.glob(".none*"))
