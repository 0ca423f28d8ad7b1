"""What a stage is given: the recipe's top level (`Recipe`) and its own `StageContext`.

A leaf module (it imports no other zephyr module): the stage modules import it, while
`zephyr.pipeline` imports the stages lazily by name, so no import cycle runs through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

# where the shared data lives when neither the recipe nor the command line says (from the cwd)
DEFAULT_DATA_ROOT = "../shared/data"


@dataclass
class Recipe:
    """The top level of a recipe YAML. Stage sections stay plain dicts; each stage types its own."""

    name: str = "run"
    seed: int = 0
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "auto"  # auto|cpu|cuda|mps for training and evaluation (zephyr.device)
    chat_template: str | None = None  # chatml, a .jinja file, Jinja text; None: own, else ChatML
    out: str = "runs"
    # a recipe's own paths are relative to the recipe file; empty means ../shared/data from the cwd
    data_root: str = ""
    stages: list[str] = field(default_factory=lambda: ["data"])
    data: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    kto: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


@dataclass
class StageContext:
    name: str
    recipe: Recipe
    section: dict
    out_dir: Path
    inputs: dict[str, Path]  # finished upstream stage dirs, by stage name
    recipe_dir: Path  # relative paths in the recipe are relative to this
    console: Console = field(default_factory=Console)

    def path(self, p: str | Path) -> Path:
        """Resolve a path from the recipe: absolute, or relative to the recipe's directory."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.recipe_dir / p)

    @property
    def data_root(self) -> Path:
        if not self.recipe.data_root:
            return (Path.cwd() / DEFAULT_DATA_ROOT).resolve()
        return self.path(self.recipe.data_root)
