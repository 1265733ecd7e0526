"""The training data pipeline: preprocessing parity, augmentation, prompts, loader, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from geosam.config import load_config
from geosam.data.build import make_data_loader, prepare_embedding_cache
from geosam.data.transforms.dihedral import allowed_variants, apply_variant
from geosam.data.transforms.prompts import PromptSampler
from geosam.data.transforms.sam_input import SamInput
from geosam.modeling import build_model
from geosam.runtime.preprocess import preprocess_image, resize_mask_nearest, scale_coords
from geosam.utils.errors import GeosamError


def tiny_cfg(tiles: Path, *opts: str):
    return load_config("configs/tiny.yaml", ["DATASETS.TRAIN", str(tiles), *opts])


@pytest.mark.parametrize("shape", [(256, 256), (300, 200), (97, 130)])
def test_preprocessing_matches_segment_anything(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours, (h, w) = preprocess_image(image, 256)
    sam_resize = ResizeLongestSide(256)
    resized = sam_resize.apply_image(image)
    model = build_model(load_config("configs/tiny.yaml"))
    theirs = model.preprocess(torch.from_numpy(resized).permute(2, 0, 1)[None].float())[0]
    assert (h, w) == resized.shape[:2]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
    coords = np.array([[10.0, 20.0], [shape[1] - 1, shape[0] - 1]])
    np.testing.assert_allclose(
        scale_coords(coords, shape, 256), sam_resize.apply_coords(coords, shape)
    )


def test_dihedral_groups() -> None:
    assert allowed_variants(False, False, False) == (0,)
    assert allowed_variants(True, False, False) == (0, 4)
    assert allowed_variants(False, True, False) == (0, 6)
    assert allowed_variants(True, True, False) == (0, 2, 4, 6)
    assert allowed_variants(False, False, True) == (0, 1, 2, 3)
    assert allowed_variants(True, True, True) == tuple(range(8))
    image = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(apply_variant(image, 4), image[:, ::-1])
    np.testing.assert_array_equal(apply_variant(image, 6), image[::-1])
    views = {
        apply_variant(image, v).tobytes() + bytes(apply_variant(image, v).shape) for v in range(8)
    }
    assert len(views) == 8


def test_prompt_sampler_respects_the_masks() -> None:
    mask = np.zeros((64, 64), np.uint16)
    mask[5:30, 5:40] = 1
    mask[35:60, 10:50] = 2
    mask[40:45, 20:25] = 0
    sampler = PromptSampler(["box", "point", "points"], [1, 1, 1], 3, 2, 0.1, 3, 8)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        prompts = sampler(mask, rng)
        seen |= set(prompts)
        for kind, arrays in prompts.items():
            ids = arrays["instance_ids"]
            if kind == "box":
                for box, i in zip(arrays["boxes"], ids, strict=True):
                    ys, xs = np.nonzero(mask == i)
                    exact = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
                    sides = np.array([exact[2] - exact[0] + 1, exact[3] - exact[1] + 1] * 2)
                    assert (np.abs(box - exact) <= np.minimum(0.1 * sides, 3) + 1e-9).all()
                continue
            for coords, labels, i in zip(arrays["coords"], arrays["labels"], ids, strict=True):
                for (x, y), label in zip(coords, labels, strict=True):
                    if label == 1:
                        assert mask[int(y), int(x)] == i
                    elif label == 0:
                        assert mask[int(y), int(x)] != i
    assert seen == {"box", "point", "points"}


def test_several_prompts_per_instance_are_of_distinct_drawable_kinds() -> None:
    mask = np.zeros((64, 64), np.uint16)
    mask[5:30, 5:40] = 1
    mask[35:60, 10:50] = 2
    rng = np.random.default_rng(0)
    every = PromptSampler(["box", "point", "points"], [2, 1, 1], 3, 2, 0.1, 3, 8, per_instance=3)
    prompts = every(mask, rng)
    assert {kind: arrays["instance_ids"].tolist() for kind, arrays in prompts.items()} == {
        "box": [1, 2],
        "point": [1, 2],
        "points": [1, 2],
    }
    # Two of the two kinds that have weight: never the weightless one, never one kind twice.
    two = PromptSampler(["box", "point", "points"], [1, 0, 1], 3, 2, 0.1, 3, 8, per_instance=2)
    for _ in range(10):
        drawn = two(mask, rng)
        assert sorted(drawn) == ["box", "points"]
        assert all(arrays["instance_ids"].tolist() == [1, 2] for arrays in drawn.values())
    with pytest.raises(ValueError, match="only 2 kinds"):
        PromptSampler(["box", "point", "points"], [1, 0, 1], 3, 2, 0.1, 3, 8, per_instance=3)


def test_one_prompt_per_instance_draws_as_before() -> None:
    """per_instance 1 keeps the random stream of one kind per instance (recorded runs repeat)."""
    mask = np.zeros((64, 64), np.uint16)
    for i in range(6):
        mask[10 * i : 10 * i + 8, 4:60] = i + 1
    sampler = PromptSampler(["box", "point", "points"], [0.5, 0.25, 0.25], 3, 2, 0.1, 3, 8)
    kinds = sampler._draw_kinds(6, np.random.default_rng(7))
    expected = np.random.default_rng(7).choice(3, size=6, p=[0.5, 0.25, 0.25])
    np.testing.assert_array_equal(kinds[:, 0], expected)


def test_loader_yields_the_batch_contract(tiles: Path) -> None:
    cfg = tiny_cfg(tiles, "DATALOADER.IMS_PER_BATCH", "2")
    torch.manual_seed(0)
    batch = next(iter(make_data_loader(cfg, is_train=True)))
    assert batch["images"].shape == (2, 3, 256, 256)
    assert batch["input_sizes"].tolist() == [[256, 256]] * 2
    for prompts in batch["prompts"]:
        assert 0 < sum(len(p["instance_ids"]) for p in prompts.values()) <= 8
        for kind, arrays in prompts.items():
            n = len(arrays["instance_ids"])
            assert (
                arrays["targets"].shape == (n, 256, 256) and arrays["targets"].dtype == torch.bool
            )
            assert arrays["targets"].flatten(1).any(1).all()
            if kind == "box":
                assert arrays["boxes"].shape == (n, 4)
            else:
                k = 1 if kind == "point" else 5
                assert arrays["coords"].shape == (n, k, 2) and arrays["labels"].shape == (n, k)
                positive = arrays["labels"] == 1
                xy = arrays["coords"].long()
                inside = arrays["targets"][torch.arange(n)[:, None], xy[..., 1], xy[..., 0]]
                assert inside[positive].all()


def test_val_loader_uses_the_fixed_prompts(tiles: Path) -> None:
    cfg = tiny_cfg(tiles)
    first = [b["prompts"] for b in make_data_loader(cfg, is_train=False)]
    again = [b["prompts"] for b in make_data_loader(cfg, is_train=False)]
    for a, b in zip(first, again, strict=True):
        for pa, pb in zip(a, b, strict=True):
            assert set(pa) == {"box", "point", "points"}
            torch.testing.assert_close(pa["box"]["boxes"], pb["box"]["boxes"])
            torch.testing.assert_close(pa["points"]["coords"], pb["points"]["coords"])


def test_subset_options(tiles: Path) -> None:
    from geosam.data.build import make_dataset

    full = make_dataset(tiny_cfg(tiles), True)
    assert len(make_dataset(tiny_cfg(tiles, "DATALOADER.MAX_SAMPLES", "2"), True)) == 2
    half = make_dataset(tiny_cfg(tiles, "DATALOADER.FRACTION", "0.5"), True)
    assert len(half) == round(len(full) * 0.5)
    with pytest.raises(GeosamError, match="no 'nope' chips"):
        make_dataset(tiny_cfg(tiles, "DATASETS.TRAIN_SPLIT", "nope"), True)


def test_embedding_cache_hit_miss_and_invalidation(tiles: Path, monkeypatch) -> None:
    cfg = tiny_cfg(tiles, "INPUT.ROT90", "False", "INPUT.VFLIP", "False")
    torch.manual_seed(0)
    model = build_model(cfg)
    cache = prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    files = sorted(cache.directory.glob("*.npy"))
    n_train = len(make_data_loader(cfg, True).dataset)
    assert len(files) == 2 * n_train  # identity + left-right flip
    # a hit: nothing is encoded again
    calls = []
    monkeypatch.setattr(model.image_encoder, "forward", lambda x: calls.append(x) or x)
    again = prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    assert again.directory == cache.directory and not calls
    monkeypatch.undo()
    # the cached embedding is the encoder's output for that variant
    dataset = make_data_loader(cfg, True, cache).dataset
    tile_id = dataset.tile_ids[0]
    chip = apply_variant(dataset.read_chip(0), 4).copy()
    with torch.no_grad():
        expected = model.image_encoder(torch.from_numpy(preprocess_image(chip, 256)[0])[None])
    np.testing.assert_allclose(cache.load(tile_id, 4), expected[0].numpy(), atol=2e-2, rtol=1e-2)
    # a miss after an interruption: only the lost entry is rebuilt
    files[0].unlink()
    prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    assert files[0].exists()
    # new encoder weights: another key, another folder; the old one is never read
    with torch.no_grad():
        model.image_encoder.neck[0].weight.add_(1.0)
    other = prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    assert other.directory != cache.directory
    # a folder whose key does not match is refused
    (other.directory / "key.json").write_text((cache.directory / "key.json").read_text())
    with pytest.raises(GeosamError, match="another model or dataset"):
        prepare_embedding_cache(cfg, model, is_train=True, progress=False)


def test_color_jitter_draws_torchvision_adjustments_from_the_sample_generator(tiles: Path):
    """INPUT.COLOR_JITTER: brightness, contrast, saturation (and hue) adjusted by factors drawn
    from the chip's own generator; off by default, and refused with cached embeddings."""
    from torchvision.transforms.v2 import functional as TF

    from geosam.data.transforms.color import ColorJitter

    chip = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    assert not ColorJitter([0, 0, 0, 0])
    jitter = ColorJitter([0.4, 0.3, 0.0, 0.05])
    out = jitter(chip, np.random.default_rng(7))
    assert out.shape == chip.shape and out.dtype == np.uint8 and not np.array_equal(out, chip)
    np.testing.assert_array_equal(out, jitter(chip, np.random.default_rng(7)))
    rng = np.random.default_rng(7)
    expected = torch.from_numpy(chip).permute(2, 0, 1)
    expected = TF.adjust_brightness(expected, float(rng.uniform(0.6, 1.4)))
    expected = TF.adjust_contrast(expected, float(rng.uniform(0.7, 1.3)))
    expected = TF.adjust_hue(expected, float(rng.uniform(-0.05, 0.05)))
    np.testing.assert_array_equal(out, expected.permute(1, 2, 0).numpy())

    cfg = tiny_cfg(tiles, "INPUT.COLOR_JITTER", "[0.4, 0.4, 0.4, 0]", "CACHE.EMBEDDINGS", "False")
    torch.manual_seed(0)
    jittered = next(iter(make_data_loader(cfg, is_train=True)))["images"]
    torch.manual_seed(0)
    plain = next(iter(make_data_loader(tiny_cfg(tiles, "CACHE.EMBEDDINGS", "False"), True)))
    assert jittered.shape == plain["images"].shape
    assert not torch.equal(jittered, plain["images"])
    cached = tiny_cfg(tiles, "INPUT.COLOR_JITTER", "[0.4, 0, 0, 0]")
    with pytest.raises(GeosamError, match=r"INPUT\.COLOR_JITTER"):
        prepare_embedding_cache(cached, build_model(cached), is_train=True, progress=False)


def test_loader_reads_cached_embeddings(tiles: Path) -> None:
    cfg = tiny_cfg(tiles, "DATALOADER.IMS_PER_BATCH", "2")
    model = build_model(cfg)
    cache = prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    batch = next(iter(make_data_loader(cfg, True, cache)))
    assert "images" not in batch
    assert batch["embeddings"].shape == (2, 64, 16, 16)
    assert batch["embeddings"].dtype == torch.float32


def test_the_decoder_overfits_chips_from_the_loader(tiles: Path) -> None:
    """Chips, targets and scaled prompts from the real loader agree with each other: SAM's
    decoder can fit them (a misaligned box or target would cap the IoU far below 0.9)."""
    from geosam.modeling import build_loss
    from geosam.modeling.prompted import decode_batch, predict_masks
    from geosam.solver import make_optimizer

    overrides = {
        "INPUT.PROMPT_TYPES": "[box]",
        "INPUT.PROMPT_WEIGHTS": "[1.0]",
        "INPUT.HFLIP": "False",
        "INPUT.VFLIP": "False",
        "INPUT.ROT90": "False",
        "INPUT.BOX_JITTER": "0.0",
        "INPUT.MAX_INSTANCES": "4",
        "DATALOADER.IMS_PER_BATCH": "1",
        "SOLVER.BASE_LR": "1e-3",
        # BCE + Dice, as configs/tiny_pretrain.yaml trains from scratch: a randomly
        # initialised decoder escapes the all-background minimum of the focal term sooner
        "LOSS.FOCAL_ALPHA": "-1.0",
        "LOSS.FOCAL_GAMMA": "0.0",
        "LOSS.FOCAL_WEIGHT": "1.0",
    }
    cfg = tiny_cfg(tiles, *(item for pair in overrides.items() for item in pair))
    torch.manual_seed(0)
    model = build_model(cfg)
    cache = prepare_embedding_cache(cfg, model, is_train=True, progress=False)
    batch = next(iter(make_data_loader(cfg, True, cache)))
    loss_fn, optimizer = build_loss(cfg), make_optimizer(cfg, model)
    for _ in range(250):
        decoded = decode_batch(model, batch, multimask=False)
        loss = sum(loss_fn(d.low_res_logits, d.iou_predictions, d.targets)["loss"] for d in decoded)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ious = []
    with torch.no_grad():
        for d in decode_batch(model, batch, multimask=False):
            pred = predict_masks(d, 256)[0] > 0
            target = d.targets[:, : pred.shape[1], : pred.shape[2]]
            inter = (pred & target).flatten(1).sum(1)
            ious.append(inter / (pred | target).flatten(1).sum(1))
    assert torch.cat(ious).mean() > 0.9


def test_auto_prompts_fall_anywhere_and_target_what_is_under_them() -> None:
    mask = np.zeros((64, 64), np.uint16)
    mask[5:30, 5:40] = 1
    mask[35:60, 10:50] = 2
    sampler = PromptSampler(["box", "auto"], [1, 3], 3, 2, 0.1, 3, 8)
    rng = np.random.default_rng(0)
    drawn = [sampler(mask, rng).get("auto") for _ in range(40)]
    coords = np.concatenate([d["coords"] for d in drawn if d is not None])
    ids = np.concatenate([d["instance_ids"] for d in drawn if d is not None])
    assert coords.shape[1:] == (1, 2) and len(coords) > 40  # about 3 of every 4 prompts
    xs, ys = coords[:, 0, 0].astype(int), coords[:, 0, 1].astype(int)
    np.testing.assert_array_equal(mask[ys, xs], ids)
    assert set(ids.tolist()) == {0, 1, 2}  # on both parcels and off them

    prompts = SamInput(128, [0, 0, 0], [1, 1, 1]).prompts(mask, {"auto": drawn[0]})
    targets, ids = prompts["auto"]["targets"], prompts["auto"]["instance_ids"]
    assert targets.shape == (len(ids), 128, 128)
    for target, instance in zip(targets, ids, strict=True):
        expected = resize_mask_nearest(mask, 128) == instance if instance else 0
        np.testing.assert_array_equal(target, expected)  # "no parcel": an empty target


def test_val_loader_adds_seeded_auto_points_apart_from_the_index_prompts(tiles: Path) -> None:
    def auto_prompts(*opts: str) -> list[dict]:
        cfg = tiny_cfg(tiles, *opts)
        return [p.get("auto") for b in make_data_loader(cfg, is_train=False) for p in b["prompts"]]

    assert all(p is None for p in auto_prompts())  # the default validation is unchanged
    first, again = auto_prompts("TEST.AUTO_POINTS", "6"), auto_prompts("TEST.AUTO_POINTS", "6")
    other_seed = auto_prompts("TEST.AUTO_POINTS", "6", "SEED", "3")
    for a, b, c in zip(first, again, other_seed, strict=True):
        assert a["coords"].shape == (6, 1, 2) and a["labels"].eq(1).all()
        torch.testing.assert_close(a["coords"], b["coords"])
        torch.testing.assert_close(a["coords"], c["coords"])  # fixed by the tile, not the run
        has_target = a["targets"].flatten(1).any(1)
        assert has_target.tolist() == (a["instance_ids"] > 0).tolist()
    assert len({tuple(p["coords"].flatten().tolist()) for p in first}) == len(first)
