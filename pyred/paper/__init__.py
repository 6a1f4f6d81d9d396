"""The paper (Nanda et al. 2023) as data: its models (:mod:`.models`) and its experiments, one per reference
script (:mod:`.experiments`; ``pyred.paper.EXPERIMENTS`` and ``pyred.paper.GROUPS``)."""

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


def __getattr__(name: str) -> object:
    """``EXPERIMENTS`` ({script stem: Experiment}) and ``GROUPS`` load the transcribed table on first use."""
    if name in ("EXPERIMENTS", "GROUPS", "SKIPPED"):
        from . import experiments

        return experiments.experiments() if name == "EXPERIMENTS" else getattr(experiments, name)
    raise AttributeError(f"module 'pyred.paper' has no attribute {name!r}")


__all__ = ["DATASETS", "MAIN_GRID", "MODELS", "RESNET18_GRID", "VGG_VIT1K_GRID", "VIT21K_GRID", "DatasetDefaults",
           "PaperModel", "backbone", "by_reference", "find", "fraction_grid", "recipe_defaults", "resolve_options"]
