"""What every probe recipe is: a name, an options dataclass, whether it needs validation data,
and a training function returning :class:`TrainedHeads`. ``RECIPES`` (in :mod:`pyred.probes`) maps
names to recipes.

An options dataclass lists every option with its default and validates itself in
``__post_init__``; :meth:`Recipe.parse_options` turns a plain mapping (keyword
arguments, or a TOML table) into one, refusing unknown names with a close-match hint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import did_you_mean
from ..subsets import Subsets


@dataclass
class TrainedHeads:
    """What a recipe's training returns: the heads, the options they were trained with (defaults and
    ``"auto"`` choices resolved), and what the training saw. Arrays as in :class:`pyred.ProbeResult`."""

    weights: torch.Tensor
    biases: torch.Tensor
    options: Any  # the recipe's options dataclass, as run
    selected_epoch: torch.Tensor | None = None
    val_accuracy: torch.Tensor | None = None
    eval_epochs: list[int] = field(default_factory=list)
    train_loss: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    init_seeds: torch.Tensor | None = None
    diverged: torch.Tensor | None = None
    function_evals: int | None = None  # objective evaluations (lbfgs)


@dataclass(frozen=True)
class Recipe:
    name: str
    options: type  # a dataclass whose __post_init__ validates its fields
    needs_validation: bool
    train: Callable[..., TrainedHeads]  # train(data, subsets, options, seed, progress, backend)
    streams: bool = False  # trains from a FeatureStream (minibatches only)
    run_only: tuple[str, ...] = ()  # options that change how a run executes, not its numbers (not in a study's id)
    seeded_heads: bool = False  # each head starts from a random draw under init_seeds[k]
    layout: Callable[..., str] | None = None  # layout(plan, d, device, num_classes): the "auto" layout for a plan

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    def parse_options(self, given: Mapping[str, Any] | None) -> Any:
        """The options dataclass from a mapping: unknown keys raise TypeError, bad values ValueError/TypeError."""
        given = dict(given or {})
        names = self.option_names()
        for key in given:
            if key not in names:
                raise TypeError(f"recipe {self.name!r}: unknown option {key!r}{did_you_mean(key, names)} "
                                f"(expected some of {names})")
        return self.options(**given)

    def identity_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option that changes the numbers, defaults filled in (run-only options left out)."""
        options = dataclasses.asdict(self.parse_options(given))
        return {k: v for k, v in options.items() if k not in self.run_only}

    def for_chunk(self, options: Mapping[str, Any], plan: Subsets, d: int, device: torch.device, num_classes: int,
                  head_seeds: Sequence[int]) -> dict[str, Any]:
        """The options a chunk of a sweep's heads trains with: ``options``, plus what keeps each head's
        numbers independent of how the sweep's ``plan`` (all its heads) is cut into chunks -- the heads'
        own initialisation seeds ``head_seeds`` (one per head of the chunk) and the layout chosen for the
        whole plan."""
        out = dict(options)
        if self.seeded_heads:
            out["init_seeds"] = [int(s) for s in head_seeds]
        if self.layout is not None:
            out.setdefault("layout", self.layout(plan, d, device, num_classes))
        return out

    def batch_size(self, options: Mapping[str, Any] | None) -> int:
        """The minibatch size the options ask for (streaming recipes)."""
        return int(self.parse_options(options).batch_size)
