"""Configuration: the defaults tree, a preset file, and ``KEY VALUE`` overrides, merged.

yacs's own merge reports an unknown key as ``KeyError: 'Non-existent config key: ...'`` and a
wrong type as a ``ValueError`` quoting Python types, and it parses command-line values with
``literal_eval`` (so ``MODEL.TRAINABLE [mask_decoder]`` is a string). :func:`load_config`
merges itself instead: a value is parsed according to the type of the key's default, and any
problem is one :class:`GeosamError` line naming the key and where it was set.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from geosam.config.defaults import CHOICES, RANGES, get_cfg_defaults
from geosam.utils.errors import GeosamError

__all__ = ["get_cfg_defaults", "load_config"]

_COMMAND_LINE = "on the command line"


def load_config(config_file: str | None = None, opts: Sequence[str] = ()) -> CfgNode:
    """The defaults, merged with ``config_file`` (a yaml preset) and then ``opts``, frozen.

    ``opts`` is a flat ``[KEY, VALUE, KEY, VALUE, ...]`` list as detectron2's command line
    takes it, e.g. ``["SOLVER.BASE_LR", "1e-5", "MODEL.TRAINABLE", "[mask_decoder]"]``.
    List values are written in yaml's flow style; string keys take the text as it is.
    """
    cfg = get_cfg_defaults()
    if config_file:
        for key, value in _flatten(_read_yaml(config_file)):
            _set(cfg, key, value, f"in {config_file}", from_text=False)
    if len(opts) % 2:
        raise GeosamError(f"config overrides come as KEY VALUE pairs, but {opts[-1]} has no value")
    for key, text in zip(opts[0::2], opts[1::2], strict=True):
        _set(cfg, key, text, _COMMAND_LINE, from_text=True)
    _check_choices(cfg)
    _check_ranges(cfg)
    _check_prompt_weights(cfg)
    _check_color_jitter(cfg)
    cfg.freeze()
    return cfg


def _read_yaml(config_file: str) -> Mapping[str, Any]:
    path = Path(config_file)
    if not path.is_file():
        raise GeosamError(f"config file {config_file} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problem = str(e).splitlines()[0]
        raise GeosamError(f"config file {config_file} is not valid yaml: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise GeosamError(f"config file {config_file} must hold a mapping of config keys")
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"SOLVER": {"BASE_LR": 1e-4}}`` → ``[("SOLVER.BASE_LR", 1e-4)]``."""
    items = []
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, f"{key}."))
        else:
            items.append((key, value))
    return items


def _set(cfg: CfgNode, key: str, value: Any, where: str, from_text: bool) -> None:
    node = cfg
    *sections, leaf = key.split(".")
    for section in sections:
        node = node.get(section)
        if not isinstance(node, CfgNode):
            raise GeosamError(_unknown_key(cfg, key, where))
    if leaf not in node:
        raise GeosamError(_unknown_key(cfg, key, where))
    default = node[leaf]
    if isinstance(default, CfgNode):
        raise GeosamError(f"config key {key} is a section, not a value ({where})")
    node[leaf] = _coerce(key, value, default, where, from_text)


def _unknown_key(cfg: CfgNode, key: str, where: str) -> str:
    message = f"unknown config key {key} {where}"
    close = difflib.get_close_matches(key, _all_keys(cfg), n=1)
    return f"{message} (did you mean {close[0]}?)" if close else message


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        if isinstance(value, CfgNode):
            keys.extend(_all_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _coerce(key: str, value: Any, default: Any, where: str, from_text: bool) -> Any:
    """``value`` as the type of ``default``, or a GeosamError naming ``key``.

    Command-line text is parsed as yaml unless the key is a string, so that paths and names are
    taken literally (``DATASETS.TRAIN true`` is the directory ``true``, not a bool).
    """
    wrong_type = GeosamError(
        f"config key {key} expects {_type_name(default)}, got {value!r} ({where})"
    )
    if from_text and not isinstance(default, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise wrong_type from e
    if isinstance(default, list):
        element = default[0] if default else None
        if isinstance(value, (list, tuple)):
            converted = [_scalar(item, element) for item in value]
            if None not in converted:
                return converted
    else:
        converted = _scalar(value, default)
        if converted is not None:
            return converted
    raise wrong_type


def _scalar(value: Any, like: Any) -> Any:
    """``value`` converted to the type of ``like``; None when it is not that type.

    An int is accepted for a float key; a bool is never taken as a number. Numbers written in
    exponent form without a dot (``1e-4``) are strings to yaml 1.1, so strings are tried as
    floats. ``like=None`` (the element of an empty default list) accepts any scalar.
    """
    if like is None:
        return value if isinstance(value, (bool, int, float, str)) else None
    if isinstance(like, bool) or isinstance(value, bool):
        return value if isinstance(value, bool) and isinstance(like, bool) else None
    if isinstance(like, int):
        return value if isinstance(value, int) else None
    if isinstance(like, float):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
        return None
    if isinstance(like, str):
        return value if isinstance(value, str) else None
    raise TypeError(f"unsupported default type {type(like).__name__}")


def _type_name(default: Any) -> str:
    if isinstance(default, list):
        return f"a list of {type(default[0]).__name__}" if default else "a list"
    return type(default).__name__


def _values(cfg: CfgNode, key: str) -> list[Any]:
    """The value of ``key``, or its elements for a list key."""
    node = cfg
    for name in key.split("."):
        node = node[name]
    return list(node) if isinstance(node, list) else [node]


def _check_choices(cfg: CfgNode) -> None:
    for key, allowed in CHOICES.items():
        for value in _values(cfg, key):
            if value not in allowed:
                raise GeosamError(
                    f"config key {key} got {value!r}; expected one of {', '.join(allowed)}"
                )


def _check_ranges(cfg: CfgNode) -> None:
    for key, (valid, wanted) in RANGES.items():
        for value in _values(cfg, key):
            if not valid(value):
                raise GeosamError(f"config key {key} got {value!r}; it must be {wanted}")


def _check_color_jitter(cfg: CfgNode) -> None:
    jitter = cfg.INPUT.COLOR_JITTER
    if len(jitter) != 4 or jitter[3] > 0.5:
        raise GeosamError(
            f"config key INPUT.COLOR_JITTER got {list(jitter)}; it takes four values, "
            "brightness, contrast, saturation and hue, the hue at most 0.5"
        )


def _check_prompt_weights(cfg: CfgNode) -> None:
    kinds, weights = cfg.INPUT.PROMPT_TYPES, cfg.INPUT.PROMPT_WEIGHTS
    if len(weights) != len(kinds):
        raise GeosamError(
            f"config key INPUT.PROMPT_WEIGHTS has {len(weights)} weights for the "
            f"{len(kinds)} kinds of INPUT.PROMPT_TYPES {list(kinds)}: give one per kind"
        )
    if not sum(weights) > 0:
        raise GeosamError("config key INPUT.PROMPT_WEIGHTS must not all be 0")
    drawable = sum(1 for weight in weights if weight > 0)
    per_instance = cfg.INPUT.PROMPTS_PER_INSTANCE
    if per_instance > drawable:
        raise GeosamError(
            f"config key INPUT.PROMPTS_PER_INSTANCE is {per_instance} but "
            f"INPUT.PROMPT_WEIGHTS gives only {drawable} kind(s) a weight above 0: each prompt "
            "of an instance is of a different kind"
        )
