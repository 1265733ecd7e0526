"""Model building, checkpoint loading, freezing and trained weights, on real SAM classes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import torch

from geosam.config import load_config
from geosam.modeling import (
    SAM_SPECS,
    build_model,
    build_sam,
    count_parameters,
    load_trained_weights,
    model_type_of,
    save_trained_weights,
    sha256_file,
)
from geosam.utils.errors import GeosamError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SAM_MEAN = [123.675, 116.28, 103.53]
SAM_STD = [58.395, 57.12, 57.375]


def tiny_cfg(*opts: str):
    return load_config(str(CONFIGS / "tiny.yaml"), list(opts))


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def error_of(fn, *args) -> str:
    with pytest.raises(GeosamError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A random ViT-B saved exactly as the official sam_vit_b_01ec64.pth is: a plain
    ``Sam.state_dict()`` at 1024 px (pos_embed (1, 64, 64, 768)), ~375 MB.

    Returns the path and a few of its tensors to compare against after loading.
    """
    torch.manual_seed(1234)
    model = build_sam("vit_b", 1024, SAM_MEAN, SAM_STD)
    state_dict = model.state_dict()
    assert state_dict["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth"
    torch.save(state_dict, path)
    probes = {
        key: state_dict[key].clone()
        for key in (
            "image_encoder.patch_embed.proj.weight",
            "image_encoder.blocks.11.mlp.lin2.weight",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
            "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        )
    }
    return str(path), probes


# --- building and running -------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [256, 320])
def test_tiny_forward_box_and_points(image_size):
    model = build_model(tiny_cfg("INPUT.IMAGE_SIZE", str(image_size))).eval()
    grid, width = image_size // 16, SAM_SPECS["tiny"].prompt_embed_dim
    with torch.no_grad():
        embedding = model.image_encoder(torch.randn(1, 3, image_size, image_size))
        assert embedding.shape == (1, width, grid, grid)
        image_pe = model.prompt_encoder.get_dense_pe()

        boxes = torch.tensor([[10.0, 20.0, 120.0, 90.0]] * 4)
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        assert sparse.shape == (4, 2, width) and dense.shape == (4, width, grid, grid)
        masks, iou = model.mask_decoder(embedding, image_pe, sparse, dense, False)
        assert masks.shape == (4, 1, 4 * grid, 4 * grid) and iou.shape == (4, 1)

        coords = torch.rand(3, 5, 2) * image_size
        labels = torch.tensor([[1, 1, 1, 0, 0]] * 3)
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        assert sparse.shape == (3, 6, width)  # a padding point is added when there is no box
        masks, iou = model.mask_decoder(embedding, image_pe, sparse, dense, True)
        assert masks.shape == (3, 3, 4 * grid, 4 * grid) and iou.shape == (3, 3)
        assert torch.isfinite(masks).all()


def test_tiny_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    first = build_model(tiny_cfg()).state_dict()
    assert torch.equal(torch.rand(3), expected_draw)
    second = build_model(tiny_cfg()).state_dict()
    other = build_model(tiny_cfg("SEED", "1")).state_dict()
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first[key], other[key])


def test_registry_matches_segment_anything_sizes():
    dims = {name: (s.encoder_embed_dim, s.encoder_depth) for name, s in SAM_SPECS.items()}
    assert dims["vit_b"] == (768, 12) and dims["vit_l"] == (1024, 24)
    assert dims["vit_h"] == (1280, 32)
    assert SAM_SPECS["vit_h"].encoder_global_attn_indexes == (7, 15, 23, 31)
    assert model_type_of(build_model(tiny_cfg()).state_dict()) == "tiny"


def test_image_size_must_fit_patches():
    message = error_of(build_model, tiny_cfg("INPUT.IMAGE_SIZE", "250"))
    assert message == "INPUT.IMAGE_SIZE must be a positive multiple of 16, got 250"


# --- freezing -------------------------------------------------------------------------------


def test_decoder_only_trains_by_default():
    model = build_model(tiny_cfg())
    trainable, total = count_parameters(model)
    assert trainable == numel(model.mask_decoder)
    assert total == numel(model)
    assert all(p.requires_grad for p in model.mask_decoder.parameters())
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert not any(p.requires_grad for p in model.prompt_encoder.parameters())


def test_last_encoder_blocks_and_neck():
    model = build_model(tiny_cfg("MODEL.TRAINABLE", "[]", "MODEL.ENCODER_TRAINABLE_BLOCKS", "1"))
    encoder = model.image_encoder
    trainable, _ = count_parameters(model)
    assert trainable == numel(encoder.blocks[-1]) + numel(encoder.neck)
    assert not any(p.requires_grad for p in encoder.blocks[0].parameters())
    assert not encoder.patch_embed.proj.weight.requires_grad

    both = build_model(tiny_cfg("MODEL.ENCODER_TRAINABLE_BLOCKS", "2"))
    assert count_parameters(both)[0] == (
        numel(both.mask_decoder) + numel(both.image_encoder.blocks) + numel(both.image_encoder.neck)
    )


def test_everything_trainable():
    model = build_model(
        tiny_cfg("MODEL.TRAINABLE", "[image_encoder, prompt_encoder, mask_decoder]")
    )
    trainable, total = count_parameters(model)
    assert trainable == total


def test_encoder_blocks_beyond_depth():
    message = error_of(build_model, tiny_cfg("MODEL.ENCODER_TRAINABLE_BLOCKS", "3"))
    assert (
        message == "MODEL.ENCODER_TRAINABLE_BLOCKS must be between 0 and 2 (the encoder's "
        "depth), got 3"
    )


def test_counts_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="geosam.modeling"):
        model = build_model(tiny_cfg())
    trainable, total = count_parameters(model)
    [record] = [r for r in caplog.records if r.name == "geosam.modeling"]
    assert f"{trainable:,} of {total:,} parameters trainable" in record.getMessage()


# --- official-format checkpoints ------------------------------------------------------------


def test_vit_b_official_format_loads(vit_b_checkpoint):
    path, probes = vit_b_checkpoint
    cfg = load_config(str(CONFIGS / "sam_vit_b_decoder.yaml"), ["MODEL.CHECKPOINT", path])
    model = build_model(cfg)  # SEED 0 init, then the seed-1234 file's weights
    state_dict = model.state_dict()
    for key, value in probes.items():
        assert torch.equal(state_dict[key], value), key
    assert count_parameters(model)[0] == numel(model.mask_decoder)


def test_vit_b_checkpoint_at_other_image_size(vit_b_checkpoint):
    path, _ = vit_b_checkpoint
    cfg = load_config(None, ["MODEL.CHECKPOINT", path, "INPUT.IMAGE_SIZE", "512"])
    assert error_of(build_model, cfg) == (
        f"checkpoint {path} is for 1024 px inputs but INPUT.IMAGE_SIZE is 512"
    )


def test_vit_l_checkpoint_for_vit_b(tmp_path):
    # The tensors that give a checkpoint's size away, shaped as in sam_vit_l_0b3195.pth.
    vit_l = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024),
        **{f"image_encoder.blocks.{i}.norm1.weight": torch.ones(1024) for i in range(24)},
    }
    path = tmp_path / "sam_vit_l.pth"
    torch.save(vit_l, path)
    cfg = load_config(None, ["MODEL.TYPE", "vit_b", "MODEL.CHECKPOINT", str(path)])
    assert error_of(build_model, cfg) == (
        f"checkpoint {path} is a vit_l checkpoint but MODEL.TYPE is vit_b"
    )


def test_vit_b_without_checkpoint():
    assert error_of(build_model, load_config(None, [])) == (
        "MODEL.CHECKPOINT is empty: MODEL.TYPE vit_b needs the official sam_vit_b_01ec64.pth "
        "(give MODEL.CHECKPOINT /path/to/it)"
    )


@pytest.fixture
def tiny_checkpoint(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    state_dict = build_model(tiny_cfg("SEED", "5")).state_dict()
    path = tmp_path / "tiny.pth"
    torch.save(state_dict, path)
    return path, state_dict


def test_tiny_checkpoint_loads_over_seeded_init(tiny_checkpoint):
    path, saved = tiny_checkpoint
    loaded = build_model(tiny_cfg("MODEL.CHECKPOINT", str(path))).state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_missing_unexpected_and_misshapen_keys(tiny_checkpoint, tmp_path):
    _, saved = tiny_checkpoint
    cases = {
        "missing": {k: v for k, v in saved.items() if k != "mask_decoder.iou_token.weight"},
        "unexpected": {**saved, "mask_decoder.hq_token.weight": torch.zeros(1, 64)},
        "shape": {**saved, "mask_decoder.iou_token.weight": torch.zeros(2, 64)},
    }
    expected = {
        "missing": "1 missing keys (mask_decoder.iou_token.weight)",
        "unexpected": "1 unexpected keys (mask_decoder.hq_token.weight)",
        "shape": "mask_decoder.iou_token.weight has shape (2, 64), the model (1, 64)",
    }
    for name, state_dict in cases.items():
        bad = tmp_path / f"{name}.pth"
        torch.save(state_dict, bad)
        message = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(bad)))
        assert message == f"{bad} does not match the tiny architecture: {expected[name]}"


class _NotATensor:
    pass


def test_unreadable_checkpoints(tiny_checkpoint, tmp_path):
    path, saved = tiny_checkpoint
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": _NotATensor()}, pickled)
    for bad in (truncated, garbage, empty, pickled):
        message = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(bad)))
        assert message.startswith(
            f"checkpoint {bad} is corrupt or not a plain PyTorch weights file"
        )

    listing = tmp_path / "list.pth"
    torch.save([saved["mask_decoder.iou_token.weight"]], listing)
    message = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(listing)))
    assert message == f"checkpoint {listing} holds a list, not a dict of weights"

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": saved}, wrapped)
    message = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(wrapped)))
    assert message == f"checkpoint {wrapped} is not a SAM state dict (names → tensors)"

    missing = tmp_path / "nope.pth"
    message = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(missing)))
    assert message == f"checkpoint {missing} not found"


# --- trained weights ------------------------------------------------------------------------


def test_trained_weights_round_trip(tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    with torch.no_grad():
        for param in model.mask_decoder.parameters():
            param.add_(1.0)
    path = tmp_path / "run" / "model_final.pth"
    save_trained_weights(model, cfg, path, base_checkpoint_sha256="ab" * 32)

    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload["state_dict"]) == {
        f"mask_decoder.{n}" for n, _ in model.mask_decoder.named_parameters()
    }
    assert payload["model_type"] == "tiny" and payload["trainable"] == ["mask_decoder"]
    assert list(tmp_path.joinpath("run").iterdir()) == [path]  # no temporary left behind

    fresh = build_model(cfg)
    metadata = load_trained_weights(fresh, path, base_checkpoint_sha256="ab" * 32)
    assert metadata["base_checkpoint_sha256"] == "ab" * 32 and "state_dict" not in metadata
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())


def test_trained_encoder_blocks_are_saved(tmp_path):
    cfg = tiny_cfg("MODEL.TRAINABLE", "[]", "MODEL.ENCODER_TRAINABLE_BLOCKS", "1")
    model = build_model(cfg)
    path = tmp_path / "w.pth"
    save_trained_weights(model, cfg, path, None)
    keys = torch.load(path, weights_only=True)["state_dict"].keys()
    assert {k.split(".")[1] for k in keys} == {"blocks", "neck"}
    assert all(k.startswith(("image_encoder.blocks.1.", "image_encoder.neck.")) for k in keys)


def test_trained_weights_refused(tmp_path, tiny_checkpoint):
    cfg = tiny_cfg()
    model = build_model(cfg)
    path = tmp_path / "w.pth"
    save_trained_weights(model, cfg, path, "ab" * 32)

    message = error_of(load_trained_weights, model, path, "cd" * 32)
    assert message == (
        f"trained weights {path} were trained from base checkpoint sha256 {'ab' * 32} but "
        f"MODEL.CHECKPOINT has sha256 {'cd' * 32}"
    )

    payload = torch.load(path, weights_only=True)
    payload["model_type"] = "vit_b"
    torch.save(payload, path)
    assert error_of(load_trained_weights, model, path) == (
        f"trained weights {path} are for vit_b but the model is tiny"
    )

    full, _ = tiny_checkpoint
    assert error_of(load_trained_weights, model, full).startswith(
        f"{full} is not a geosam trained-weights file"
    )
    as_checkpoint = error_of(build_model, tiny_cfg("MODEL.CHECKPOINT", str(path)))
    assert as_checkpoint.startswith(f"checkpoint {path} holds geosam trained weights")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"changed, and of another size")
    assert sha256_file(str(path)) == hashlib.sha256(b"changed, and of another size").hexdigest()
    assert (
        error_of(sha256_file, tmp_path / "nope") == f"cannot hash {tmp_path / 'nope'}: file "
        "not found"
    )
