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
