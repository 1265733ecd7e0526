"""Test-time flips: mirror geometry, mirrored batches, cached views, evaluation with flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geosam.config import load_config
from geosam.data.build import make_data_loader, prepare_embedding_cache
from geosam.data.transforms.dihedral import apply_variant, flip_variant
from geosam.engine.inference import inference
from geosam.modeling import build_model
from geosam.modeling.flip_tta import decode_masks, flip_batch
from geosam.runtime.flips import FLIPS, flip_affine, flip_box, flip_image, flip_points
from geosam.runtime.preprocess import preprocess_image, scale_coords

MIRRORS = FLIPS[1:]


def tiny_cfg(tiles: Path, *opts: str):
    return load_config(
        "configs/tiny.yaml",
        ["DATASETS.TRAIN", str(tiles), "DATASETS.VAL_SPLIT", "train", *opts],
    )


@pytest.mark.parametrize("flip_x, flip_y", MIRRORS)
def test_mirror_geometry_is_an_involution_and_commutes_with_resizing(flip_x, flip_y):
    original, long_side = (100, 130), 256
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 100, (5, 2)).astype(float)
    np.testing.assert_allclose(
        flip_points(flip_points(pixels, original, flip_x, flip_y), original, flip_x, flip_y),
        pixels,
    )
    # the pixel a point lies on is mirrored to the pixel mirror_image puts it on
    image = np.zeros(original, dtype=bool)
    image[7, 11] = True
    mirrored = flip_image(image, flip_x, flip_y)
    np.testing.assert_array_equal(
        flip_points(np.array([11.0, 7.0]), original, flip_x, flip_y),
        np.argwhere(mirrored)[0][::-1],
    )
    # mirroring then scaling to SAM's input frame = scaling then mirroring in that frame
    frame = (197, 256)
    sign, offset = flip_affine(original, frame, flip_x, flip_y)
    np.testing.assert_allclose(
        scale_coords(flip_points(pixels, original, flip_x, flip_y), original, long_side),
        scale_coords(pixels, original, long_side) * sign + offset,
    )
    box = np.array([10.0, 20.0, 40.0, 90.0])
    flipped = flip_box(box, original, flip_x, flip_y)
    assert flipped[0] <= flipped[2] and flipped[1] <= flipped[3]
    np.testing.assert_allclose(flip_box(flipped, original, flip_x, flip_y), box)


@pytest.mark.parametrize("flip_x, flip_y", FLIPS)
def test_each_flip_is_the_dihedral_variant_the_cache_stores(flip_x, flip_y):
    array = np.arange(24).reshape(4, 6)
    np.testing.assert_array_equal(
        apply_variant(array, flip_variant(flip_x, flip_y)), flip_image(array, flip_x, flip_y)
    )


@pytest.mark.parametrize("flip_x, flip_y", MIRRORS)
def test_flip_batch_shows_the_mirrored_chip_with_its_prompts(tiles, flip_x, flip_y):
    """Images become the preprocessed mirrored chip, boxes the boxes of the mirrored targets."""
    cfg = tiny_cfg(tiles)
    loader = make_data_loader(cfg, False)
    dataset = loader.dataset
    batch = next(iter(loader))
    flipped = flip_batch(batch, flip_x, flip_y)
    for index, tile_id in enumerate(batch["tile_ids"]):
        chip = flip_image(dataset.read_chip(dataset.tile_ids.index(tile_id)), flip_x, flip_y)
        expected, _ = preprocess_image(np.ascontiguousarray(chip), cfg.INPUT.IMAGE_SIZE)
        np.testing.assert_allclose(flipped["images"][index].numpy(), expected, atol=1e-5)
        height, width = batch["input_sizes"][index].tolist()
        prompts = batch["prompts"][index]["box"]
        targets = prompts["targets"][:, :height, :width]
        mirrored = targets.flip([d for d, on in ((-1, flip_x), (-2, flip_y)) if on])
        for box, target in zip(flipped["prompts"][index]["box"]["boxes"], mirrored, strict=True):
            rows, cols = np.nonzero(target.numpy())
            assert box.tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]
        assert torch.equal(flipped["prompts"][index]["box"]["targets"], prompts["targets"])


def test_cached_mirror_embeddings_give_what_the_encoder_gives(tiles, tmp_path):
    """With TEST.FLIP_TTA the validation cache holds the mirrored chips' embeddings, and
    decoding from it gives the logits of decoding from the images (up to fp16 storage)."""
    cfg = tiny_cfg(tiles, "TEST.FLIP_TTA", "True", "CACHE.DIR", str(tmp_path / "cache"))
    model = build_model(cfg).eval()
    cache = prepare_embedding_cache(cfg, model, is_train=False, progress=False)
    assert len(list(cache.directory.glob("*.npy"))) == 4 * len(make_data_loader(cfg, False).dataset)
    cached = next(iter(make_data_loader(cfg, False, cache)))
    assert sorted(cached["view_embeddings"]) == sorted(flip_variant(*f) for f in MIRRORS)
    images = next(iter(make_data_loader(cfg, False)))
    with torch.no_grad():
        from_cache = decode_masks(model, cached, True, cfg.INPUT.IMAGE_SIZE, flips=True)
        from_images = decode_masks(model, images, True, cfg.INPUT.IMAGE_SIZE, flips=True)
        unflipped = decode_masks(model, images, True, cfg.INPUT.IMAGE_SIZE, flips=False)
    assert len(from_cache) == len(from_images) == len(unflipped)
    for (_, a, iou_a), (_, b, iou_b), (_, c, _) in zip(
        from_cache, from_images, unflipped, strict=True
    ):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(iou_a, iou_b, atol=2e-3, rtol=1e-2)
        assert not torch.allclose(b, c)  # the mirror images do change the average
    result = inference(cfg, model, make_data_loader(cfg, False, cache))
    assert result["count"] > 0 and 0.0 <= result["mIoU"] <= 1.0


@pytest.mark.parametrize("flip_x, flip_y", MIRRORS)
def test_flip_batch_keeps_padding_and_maps_resized_prompts(flip_x, flip_y):
    """A 100 x 128 chip resized to 200 x 256 in a 256 px input: the image region is mirrored
    and the padding below it stays; a box on chip pixels 10..19 maps to the mirrored pixels."""
    images = torch.zeros(1, 3, 256, 256)
    images[:, :, :200] = torch.randn(1, 3, 200, 256)
    box = torch.tensor([[20.0, 40.0, 38.0, 58.0]])  # chip pixels (10, 20)..(19, 29), scaled 2x
    batch = {
        "images": images,
        "input_sizes": torch.tensor([[200, 256]]),
        "original_sizes": torch.tensor([[100, 128]]),
        "prompts": [{"box": {"boxes": box, "targets": torch.zeros(1, 256, 256, dtype=torch.bool)}}],
    }
    flipped = flip_batch(batch, flip_x, flip_y)
    dims = [d for d, on in ((-1, flip_x), (-2, flip_y)) if on]
    assert torch.equal(flipped["images"][:, :, :200], images[:, :, :200].flip(dims))
    assert torch.equal(flipped["images"][:, :, 200:], torch.zeros(1, 3, 56, 256))
    chip_box = np.array([10.0, 20.0, 19.0, 29.0])
    expected = flip_box(chip_box, (100, 128), flip_x, flip_y) * 2
    np.testing.assert_allclose(flipped["prompts"][0]["box"]["boxes"][0].numpy(), expected)
