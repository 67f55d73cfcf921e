"""Recipe schema and loading: YAML in, a validated :class:`Recipe` out."""

from edgekd.recipe.load import apply_overrides, dump_recipe, load_recipe, parse_yaml, recipe_from_dict
from edgekd.recipe.schema import (
    DataConfig,
    DistillConfig,
    ExportConfig,
    LossSpec,
    ModelSpec,
    OptimConfig,
    ProfileConfig,
    PruneConfig,
    Recipe,
    ReportConfig,
    TeacherConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "LossSpec",
    "ModelSpec",
    "OptimConfig",
    "ProfileConfig",
    "PruneConfig",
    "Recipe",
    "ReportConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_yaml",
    "recipe_from_dict",
]
