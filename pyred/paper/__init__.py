"""The paper (Nanda et al. 2023) as data: its models (:mod:`.models`) and its experiments, one per reference
script (:mod:`.experiments`)."""

from .models import (
    DATASETS,
    MAIN_GRID,
    MODELS,
    RESNET18_GRID,
    VGG_VIT1K_GRID,
    VIT21K_GRID,
    DatasetDefaults,
    PaperModel,
    backbone,
    by_reference,
    find,
    fraction_grid,
    recipe_defaults,
    resolve_options,
)

__all__ = ["DATASETS", "MAIN_GRID", "MODELS", "RESNET18_GRID", "VGG_VIT1K_GRID", "VIT21K_GRID", "DatasetDefaults",
           "PaperModel", "backbone", "by_reference", "find", "fraction_grid", "recipe_defaults", "resolve_options"]
