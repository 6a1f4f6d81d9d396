"""What every probe recipe is: a name, an options dataclass, whether it needs validation data,
and a training function. ``RECIPES`` (in :mod:`pyred.probes`) maps names to recipes.

An options dataclass lists every option with its default and validates itself in
``__post_init__``; :meth:`Recipe.parse_options` turns a plain mapping (keyword
arguments, or a TOML table) into one, refusing unknown names with a close-match hint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .._checks import did_you_mean


@dataclass(frozen=True)
class Recipe:
    name: str
    options: type  # a dataclass whose __post_init__ validates its fields
    needs_validation: bool
    train: Callable[..., dict]  # train(data, subsets, options, seed, progress, backend) -> fields of ProbeResult
    streams: bool = False  # trains from a FeatureStream (minibatches only)
    run_only: tuple = ()  # options that change how a run executes, not its numbers (outside a study's identity)

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

    def identity_options(self, given: Mapping[str, Any] | None) -> dict:
        """Every option that changes the numbers, defaults filled in (run-only options left out)."""
        options = dataclasses.asdict(self.parse_options(given))
        return {k: v for k, v in options.items() if k not in self.run_only}
