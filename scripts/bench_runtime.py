"""Benchmark the torch-free runtime against PyTorch, and ``geosam segment`` end to end.

1. Per-prompt decoder latency, onnxruntime (geosam.runtime.SamModel.decode) vs PyTorch
   (prompt encoder + mask decoder + SAM's postprocessing), on the same cached embedding: the
   cost of each click once a window is encoded.
2. Encoder latency both ways, and prompt → polygon latency with a cached embedding (decode +
   polygonize: what the QGIS plugin does per click near an earlier one).
3. ``geosam segment`` throughput (parcels/s) on a synthetic scene with one box per parcel.
4. ``segment --auto``'s cost per window beside the encoder's: one window's point grid
   through the decoder and automatic mode's filters (``--auto-points`` per side).
5. Test-time flips (``--flip-tta``) against the plain runtime: encoder, decoder and ``geosam
   segment`` each with the four views, as a ratio to one view (about 4x is the views' work).

The ViT-B architecture is exported with random weights saved in the official checkpoint format
(speed does not depend on the weights). ``--baseline MODEL_DIR`` also times 1. and 4. on
another model folder of the same architecture (say, one exported before a change to the
export), in the same run; decoders are timed in turns, so a change is compared under the
same machine load.

    OMP_NUM_THREADS=1 python scripts/bench_runtime.py [--model vit_b] [--work DIR]
        [--baseline MODEL_DIR] [--segment-model MODEL_DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import torch

from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.export import export_onnx
from geosam.modeling import build_sam
from geosam.runtime import SamModel
from geosam.runtime.auto import AutoParams, auto_tiling, window_masks
from geosam.runtime.preprocess import preprocess_image, scale_coords
from geosam.segment import SegmentParams, segment
from geosam.segment.polygons import mask_to_polygon

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_times(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of ``repeat`` calls of each of ``fns``, timed in turns (one call of each per
    round), so load from other processes on a shared machine weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 1):  # round 0 warms up
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def exported_model(work: Path, model_type: str) -> tuple[Path, torch.nn.Module]:
    """A model folder for ``model_type`` with random weights, and the same model in torch."""
    torch.manual_seed(0)
    if model_type == "tiny":
        cfg = load_config(str(CONFIGS / "tiny.yaml"))
    else:
        checkpoint = work / f"sam_{model_type}_random.pth"
        mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
        if not checkpoint.exists():
            torch.save(build_sam(model_type, 1024, mean, std).state_dict(), checkpoint)
        cfg = load_config(
            str(CONFIGS / "sam_vit_b_decoder.yaml"),
            ["MODEL.TYPE", model_type, "MODEL.CHECKPOINT", str(checkpoint)],
        )
    model_dir = work / f"model-{model_type}"
    if not (model_dir / "manifest.json").exists():
        export_onnx(cfg, model_dir, overwrite=True)
    from geosam.modeling import build_model

    return model_dir, build_model(cfg).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "tiny"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/geosam-bench-runtime"))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--auto-points", type=int, default=AutoParams.points_per_side)
    parser.add_argument("--baseline", type=Path, help="a model folder to time beside")
    parser.add_argument(
        "--segment-model",
        type=Path,
        help="model folder for 3. and 5.'s segment runs (default: the tiny model with random "
        "weights, whose speckle masks make polygonizing dominate: give a trained one, e.g. "
        "bench_quality's OUT/models/standin, to time flips as users meet them)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir, sam = exported_model(args.work, args.model)
    runtime = SamModel.load(model_dir, threads=1)
    flipped = SamModel.load(model_dir, threads=1, flip_tta=True)
    size = runtime.input_size

    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    box = np.array([size * 0.3, size * 0.3, size * 0.6, size * 0.55])
    embedding = runtime.encode(image)
    flipped_embedding = flipped.encode(image)
    features = torch.from_numpy(embedding.array)

    @torch.no_grad()
    def torch_decode() -> torch.Tensor:
        boxes = torch.from_numpy(scale_coords(box.reshape(2, 2), (size, size), size)).reshape(1, 4)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes.float(), masks=None)
        low, _ = sam.mask_decoder(
            image_embeddings=features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return sam.postprocess_masks(low, (size, size), (size, size)) > 0

    @torch.no_grad()
    def torch_encode() -> torch.Tensor:
        return sam.image_encoder(torch.from_numpy(preprocess_image(image, size)[0])[None])

    def ort_decode() -> object:
        return runtime.decode(embedding, box=box)

    # Random weights decode speckle, whose thousands of fragments no trained model produces:
    # the polygon step is timed on a parcel-shaped mask (an ellipse filling the box) instead.
    yy, xx = np.mgrid[:size, :size]
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
    parcel = ((xx - centre[0]) / half[0]) ** 2 + ((yy - centre[1]) / half[1]) ** 2 <= 1

    def click_to_polygon() -> object:
        runtime.decode(embedding, box=box)
        return mask_to_polygon(parcel, (500000.0, 1.0, 0.0, 5e6, 0.0, -1.0), 1.0)

    slow = 2 if args.model != "tiny" else args.repeat
    tile = next(auto_tiling((size, size), (1.0, 1.0), None, size).windows())
    auto = AutoParams(points_per_side=args.auto_points, skip_found=False)  # every point's cost
    auto_window = f"auto mode, {auto.points_per_side}² points, one window"
    decoders: dict[str, Callable[[], object]] = {
        "decoder, PyTorch": torch_decode,
        "decoder, onnxruntime": ort_decode,
    }
    windows: dict[str, Callable[[], object]] = {
        auto_window: lambda: window_masks(runtime, embedding, tile, auto)
    }
    if args.baseline is not None:
        baseline = SamModel.load(args.baseline, threads=1)
        decoders["decoder, onnxruntime, --baseline"] = lambda: baseline.decode(embedding, box=box)
        windows["auto mode, one window, --baseline"] = lambda: window_masks(
            baseline, embedding, tile, auto
        )
    decoder_times = interleaved_times(decoders, args.repeat)
    # the fastest call of each: what timeit recommends where other processes add delays
    fastest = {name: min(values) for name, values in decoder_times.items()}
    timings = {
        **{name: float(np.median(values)) for name, values in decoder_times.items()},
        "encoder, PyTorch": median_seconds(torch_encode, slow),
        "encoder, onnxruntime": median_seconds(lambda: runtime.encode(image), slow),
        "encoder, onnxruntime, flip TTA": median_seconds(lambda: flipped.encode(image), slow),
        "decoder, onnxruntime, flip TTA": median_seconds(
            lambda: flipped.decode(flipped_embedding, box=box), args.repeat
        ),
        "prompt → polygon (cached embedding)": median_seconds(click_to_polygon, args.repeat),
        "  of which polygonize": median_seconds(
            lambda: mask_to_polygon(parcel, (500000.0, 1.0, 0.0, 5e6, 0.0, -1.0), 1.0), args.repeat
        ),
        **{name: values[0] for name, values in interleaved_times(windows, 1).items()},
    }

    # segment throughput: the tiny model on a synthetic scene, one box per parcel (the
    # encoder dominates; a ViT-B run on CPU costs ~8 s per encoded window instead), with one
    # view and with test-time flips
    scene = make_scene(args.work / "scene", size=2048, seed=0)
    tiny_dir = args.segment_model or exported_model(args.work, "tiny")[0]
    prompts = args.work / "prompts.gpkg"
    gpd.read_file(scene.labels).to_file(prompts)
    segment_seconds = {}
    for flip_tta in (False, True):
        start = time.perf_counter()
        result = segment(
            scene.raster,
            tiny_dir,
            prompts,
            args.work / "parcels.gpkg",
            SegmentParams(threads=1, flip_tta=flip_tta),
            progress=False,
        )
        segment_seconds[flip_tta] = time.perf_counter() - start
    elapsed = segment_seconds[False]

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime 1 thread, torch "
        f"{torch.get_num_threads()} thread(s); model {args.model} ({size} px), random weights"
    )
    print(f"{'latency (median)':<40}{'seconds':>10}")
    for name, seconds in timings.items():
        print(f"{name:<40}{seconds:>10.4f}")
    enc_ratio = timings["encoder, PyTorch"] / timings["encoder, onnxruntime"]
    for name in decoders:
        if name != "decoder, PyTorch":
            print(
                f"speed-up vs PyTorch, {name}: "
                f"{timings['decoder, PyTorch'] / timings[name]:.2f}x median, "
                f"{fastest['decoder, PyTorch'] / fastest[name]:.2f}x fastest calls "
                f"(fastest {fastest[name]:.4f} s, PyTorch {fastest['decoder, PyTorch']:.4f} s; "
                "goal >= 2x)"
            )
    print(f"encoder speed-up onnxruntime vs PyTorch: {enc_ratio:.2f}x")
    auto_seconds = timings[auto_window]
    print(
        f"auto mode: {auto_seconds / auto.points_per_side**2:.3f} s per point; one window's "
        f"points cost {auto_seconds / timings['encoder, onnxruntime']:.2f}x its encoder pass"
    )
    print(
        f"segment (tiny, 2048 px scene): {result.polygons} parcels in {elapsed:.1f} s = "
        f"{result.polygons / elapsed:.1f} parcels/s; {result.encoded} windows encoded, "
        f"{result.cache_hits} reused"
    )
    encoder_tta = timings["encoder, onnxruntime, flip TTA"] / timings["encoder, onnxruntime"]
    decoder_tta = timings["decoder, onnxruntime, flip TTA"] / timings["decoder, onnxruntime"]
    print(
        f"flip TTA vs one view: encoder {encoder_tta:.2f}x, decoder {decoder_tta:.2f}x, segment "
        f"(tiny) {segment_seconds[True]:.1f} s vs {elapsed:.1f} s = "
        f"{segment_seconds[True] / elapsed:.2f}x "
        "(4 views: about 4x the model's work)"
    )


if __name__ == "__main__":
    main()
