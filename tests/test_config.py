from dataclasses import dataclass, field

import pytest

from zephyr.config import from_dict
from zephyr.errors import ZephyrError


@dataclass
class Inner:
    r: int = 8
    alpha: float = 16.0


@dataclass
class Outer:
    name: str = "x"
    lora: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_nested_mapping_and_int_to_float():
    cfg = from_dict(Outer, {"name": "y", "lora": {"r": 4, "alpha": 8}, "tags": ["a"]}, "recipe")
    assert cfg.lora.r == 4 and cfg.lora.alpha == 8.0 and cfg.tags == ["a"]


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(
        ZephyrError, match=r"unknown key 'lroa' in recipe \(did you mean 'lora'\?\)"
    ):
        from_dict(Outer, {"lroa": {}}, "recipe")


def test_wrong_type_names_the_key():
    with pytest.raises(ZephyrError, match=r"recipe.lora.r must be int"):
        from_dict(Outer, {"lora": {"r": "eight"}}, "recipe")


@dataclass
class Rates:
    lr: float = 5e-5


def test_yaml_exponent_without_dot_is_a_float():
    import yaml

    raw = yaml.safe_load("lr: 1e-3")  # YAML 1.1 reads this as the string '1e-3'
    assert from_dict(Rates, raw, "sft").lr == 1e-3
    with pytest.raises(ZephyrError, match=r"sft.lr must be a number"):
        from_dict(Rates, {"lr": "fast"}, "sft")
