"""Config: defaults, preset files, detectron2-style overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from yacs.config import CfgNode

from geosam.config import get_cfg_defaults, load_config
from geosam.config.defaults import CHOICES
from geosam.utils.errors import GeosamError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(config_file: str | None, opts: list[str]) -> str:
    with pytest.raises(GeosamError) as info:
        load_config(config_file, opts)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_a_copy():
    cfg = get_cfg_defaults()
    cfg.SOLVER.BASE_LR = 123.0
    assert get_cfg_defaults().SOLVER.BASE_LR != 123.0
    assert cfg.INPUT.PIXEL_MEAN == [123.675, 116.28, 103.53]
    assert (cfg.LOSS.FOCAL_WEIGHT, cfg.LOSS.DICE_WEIGHT) == (20.0, 1.0)


def test_load_without_file_is_frozen_defaults():
    cfg = load_config(None, [])
    assert cfg.is_frozen()
    assert cfg == get_cfg_defaults()
    with pytest.raises(AttributeError):
        cfg.SEED = 3


def test_file_then_overrides(tmp_path):
    preset = write(
        tmp_path / "x.yaml",
        "MODEL:\n  TYPE: tiny\n  TRAINABLE: [mask_decoder]\n"
        "SOLVER:\n  BASE_LR: 1e-4\n  MAX_EPOCHS: 3\n  WARMUP_FACTOR: 1\n",
    )
    cfg = load_config(
        preset,
        [
            "SOLVER.MAX_EPOCHS", "7",
            "MODEL.TRAINABLE", "[mask_decoder, prompt_encoder]",
            "INPUT.HFLIP", "false",
            "DATASETS.TRAIN", "true",
            "INPUT.PIXEL_MEAN", "[1, 2.5, 3]",
        ],
    )  # fmt: skip
    assert cfg.MODEL.TYPE == "tiny"
    # yaml 1.1 reads 1e-4 as a string and 1 as an int; both become the key's float.
    assert cfg.SOLVER.BASE_LR == 1e-4 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.WARMUP_FACTOR == 1.0 and isinstance(cfg.SOLVER.WARMUP_FACTOR, float)
    assert cfg.SOLVER.MAX_EPOCHS == 7  # the command line wins over the file
    assert cfg.MODEL.TRAINABLE == ["mask_decoder", "prompt_encoder"]
    assert cfg.INPUT.HFLIP is False
    assert cfg.DATASETS.TRAIN == "true"  # a string key takes the text literally
    assert cfg.INPUT.PIXEL_MEAN == [1.0, 2.5, 3.0]
    assert all(isinstance(v, float) for v in cfg.INPUT.PIXEL_MEAN)


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path):
    preset = write(tmp_path / "x.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")
    message = error_of(preset, [])
    assert message == (
        f"unknown config key SOLVER.BASE_LRR in {preset} (did you mean SOLVER.BASE_LR?)"
    )


@pytest.mark.parametrize("key", ["SOLVR.BASE_LR", "SEED.X", "NOPE"])
def test_unknown_key_on_command_line(key):
    assert error_of(None, [key, "1"]).startswith(f"unknown config key {key} on the command line")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("SOLVER.BASE_LR", "abc", "float"),
        ("SOLVER.MAX_EPOCHS", "2.5", "int"),
        ("SOLVER.MAX_EPOCHS", "true", "int"),
        ("SOLVER.AMP", "1", "bool"),
        ("INPUT.PIXEL_MEAN", "[1, x, 3]", "a list of float"),
        ("MODEL.TRAINABLE", "mask_decoder", "a list of str"),
    ],
)
def test_wrong_type_names_key(key, value, expected):
    assert error_of(None, [key, value]) == (
        f"config key {key} expects {expected}, got {value!r} (on the command line)"
    )


def test_wrong_type_in_file(tmp_path):
    preset = write(tmp_path / "x.yaml", "SOLVER:\n  BASE_LR: abc\n")
    assert (
        error_of(preset, []) == f"config key SOLVER.BASE_LR expects float, got 'abc' (in {preset})"
    )


def test_section_is_not_a_value(tmp_path):
    assert "config key SOLVER is a section" in error_of(None, ["SOLVER", "1"])
    preset = write(tmp_path / "x.yaml", "LOSS: 3\n")
    assert "config key LOSS is a section" in error_of(preset, [])


def test_choices_are_checked():
    message = error_of(None, ["MODEL.TYPE", "vit_x"])
    assert message == (
        f"config key MODEL.TYPE got 'vit_x'; expected one of {', '.join(CHOICES['MODEL.TYPE'])}"
    )
    assert "MODEL.TRAINABLE got 'decoder'" in error_of(None, ["MODEL.TRAINABLE", "[decoder]"])


@pytest.mark.parametrize(
    "key, value, shown, wanted",
    [
        ("DATALOADER.IMS_PER_BATCH", "0", "0", ">= 1"),
        ("TEST.EVAL_PERIOD", "-1", "-1", ">= 0"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", "0", ">= 1"),
        ("DATALOADER.FRACTION", "1.5", "1.5", "in (0, 1]"),
        ("INPUT.PROMPT_WEIGHTS", "[0.5, -0.25, 0.25]", "-0.25", ">= 0"),
        ("INPUT.IMAGE_SIZE", "-256", "-256", "> 0"),
        ("TEST.AUTO_POINTS", "-4", "-4", ">= 0"),
    ],
)
def test_ranges_are_checked(key, value, shown, wanted):
    assert error_of(None, [key, value]) == f"config key {key} got {shown}; it must be {wanted}"
    # the edge of each range is allowed
    load_config(None, ["TEST.EVAL_PERIOD", "0", "SOLVER.BASE_LR", "0", "DATALOADER.FRACTION", "1"])


def test_prompt_weights_fit_the_prompt_types():
    assert "2 weights for the 3 kinds" in error_of(None, ["INPUT.PROMPT_WEIGHTS", "[1, 1]"])
    assert "must not all be 0" in error_of(None, ["INPUT.PROMPT_WEIGHTS", "[0, 0, 0]"])
    load_config(None, ["INPUT.PROMPT_TYPES", "[box]", "INPUT.PROMPT_WEIGHTS", "[2]"])
    opts = ["INPUT.PROMPT_WEIGHTS", "[1, 0, 1]", "INPUT.PROMPTS_PER_INSTANCE", "3"]
    assert "PROMPTS_PER_INSTANCE is 3 but INPUT.PROMPT_WEIGHTS gives only 2" in error_of(None, opts)
    assert "PROMPTS_PER_INSTANCE got 0" in error_of(None, ["INPUT.PROMPTS_PER_INSTANCE", "0"])
    load_config(None, ["INPUT.PROMPTS_PER_INSTANCE", "3"])
    auto = ["INPUT.PROMPT_TYPES", "[box, point, points, auto]"]
    assert "1 weights for the 4 kinds" in error_of(None, [*auto, "INPUT.PROMPT_WEIGHTS", "[1]"])
    load_config(None, [*auto, "INPUT.PROMPT_WEIGHTS", "[0.4, 0.2, 0.2, 0.2]"])


def test_file_problems(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    assert error_of(missing, []) == f"config file {missing} not found"
    broken = write(tmp_path / "broken.yaml", "MODEL: [unclosed\n")
    assert error_of(broken, []).startswith(f"config file {broken} is not valid yaml")
    listing = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert "must hold a mapping" in error_of(listing, [])
    assert load_config(write(tmp_path / "empty.yaml", ""), []) == get_cfg_defaults()


def test_odd_override_count():
    assert error_of(None, ["SEED", "1", "SOLVER.BASE_LR"]) == (
        "config overrides come as KEY VALUE pairs, but SOLVER.BASE_LR has no value"
    )


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(preset):
    cfg = load_config(str(preset), [])
    assert isinstance(cfg, CfgNode)
    assert cfg.INPUT.IMAGE_SIZE % 16 == 0


def test_presets_exist_and_differ():
    tiny = load_config(str(CONFIGS / "tiny.yaml"), [])
    vit_b = load_config(str(CONFIGS / "sam_vit_b_decoder.yaml"), [])
    assert (tiny.MODEL.TYPE, tiny.INPUT.IMAGE_SIZE) == ("tiny", 256)
    assert (vit_b.MODEL.TYPE, vit_b.INPUT.IMAGE_SIZE, vit_b.MODEL.TRAINABLE) == (
        "vit_b",
        1024,
        ["mask_decoder"],
    )


def test_color_jitter_takes_four_strengths():
    assert "takes four values" in error_of(None, ["INPUT.COLOR_JITTER", "[0.4, 0.4]"])
    assert "hue at most 0.5" in error_of(None, ["INPUT.COLOR_JITTER", "[0, 0, 0, 0.6]"])
    assert "COLOR_JITTER got -0.1" in error_of(None, ["INPUT.COLOR_JITTER", "[0, -0.1, 0, 0]"])
    assert load_config(None, ["INPUT.COLOR_JITTER", "[0.4, 0.4, 0.4, 0.1]"]).INPUT.COLOR_JITTER
