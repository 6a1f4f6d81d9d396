"""A study's settings as typed objects: the models, the datasets, and the configuration itself.

Every field of :class:`StudyConfig` carries the check that turns a raw value (from a
TOML file or the command line) into its canonical form, or raises ConfigError
naming the setting; :mod:`pyred.study.config` reads and checks whole files,
:mod:`pyred.study.validate` checks a whole configuration against the machine,
the registries and the files it names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast, get_args

from .. import _checks as check
from ..backbones import POOLS, Pool
from .errors import ConfigError

# How probes see the training images: "features" -- clean features extracted once (cached);
# "views" -- V augmented views per image extracted once (cached), the cheap approximation;
# "paper" -- the paper's own: freshly augmented images through the backbone at every step.
Protocol = Literal["features", "views", "paper"]
Normalization = Literal["model", "imagenet", "half"]
# protocol "paper": validate on clean images, or as the reference did -- with the training augmentation
ValAugment = Literal["clean", "reference"]
# protocol "paper": one augmented stream for every head, or one per training seed (the reference's one process
# per (fraction, seed), its order and augmentation seeded by the seed; the backbone runs once per seed)
StreamSeeds = Literal["shared", "per-seed"]
AugmentOn = Literal["auto", "cpu", "device"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study: a timm name (pretrained, or ``weights`` from a local file), a key of
    ``pyred.paper.MODELS`` (its architecture; ``weights`` its checkpoint where timm has none), or a label
    for precomputed ``features`` (.npz with X_train, y_train, X_test, y_test[, X_val, y_val, class_names]).
    ``normalization``: this model's (None: a paper key's reference normalisation, else the study's).
    ``timm_kwargs``: passed to ``timm.create_model`` (``{ num_classes = 100 }`` for a checkpoint with another
    head); a table in TOML, kept as sorted (key, value) pairs."""

    name: str
    features: str | None = None
    pretrained: bool = True
    weights: str | None = None
    layer: str = "penultimate"
    pool: Pool = "avg"
    normalization: Normalization | None = None
    timm_kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> ModelSpec:
        spec = _named_table(cls, raw, where, "model", "a model is a timm name or a table")
        _guard(lambda: check.string(spec.name, f"{where}.name"))
        for key in ("features", "weights"):
            if getattr(spec, key) is not None:
                _guard(lambda key=key: check.string(getattr(spec, key), f"{where}.{key}"))
        _guard(lambda: check.boolean(spec.pretrained, f"{where}.pretrained"))
        _guard(lambda: check.string(spec.layer, f"{where}.layer"))
        _guard(lambda: check.choice(spec.pool, f"{where}.pool", POOLS + ("mean", "last")))
        if spec.normalization is not None:
            _guard(lambda: check.choice(spec.normalization, f"{where}.normalization", NORMALIZATIONS))
        kwargs: Any = spec.timm_kwargs
        if isinstance(kwargs, dict):
            if not all(isinstance(v, (bool, int, float, str)) for v in kwargs.values()):
                raise ConfigError(f"{where}.timm_kwargs: expected a table of numbers, strings and booleans, "
                                  f"got {kwargs!r}")
            spec = dataclasses.replace(spec, timm_kwargs=tuple(sorted(kwargs.items())))
        elif kwargs != ():
            raise ConfigError(f"{where}.timm_kwargs: expected a table ({{ num_classes = 100 }}), got {kwargs!r}")
        return spec

    @property
    def is_module(self) -> bool:
        """A backbone object given to ``pyred.study.run(cfg, backbones={"NAME": ...})`` (``module:NAME``)."""
        return self.name.startswith("module:")

    @property
    def is_hf(self) -> bool:
        """A transformers model (``hf:NAME_OR_PATH``)."""
        return self.name.startswith("hf:")

    @property
    def paper_key(self) -> str | None:
        """The name, when it is a key of pyred.paper.MODELS."""
        from ..paper import MODELS

        return self.name if self.name in MODELS and not self.features else None

    @property
    def timm_name(self) -> str:
        """What ``pyred.Backbone`` builds: a paper key's architecture[.tag], else the name."""
        from ..paper import MODELS

        key = self.paper_key
        return MODELS[key].timm_name if key else self.name

    def normalization_in(self, study: Normalization) -> Normalization:
        """This model's normalisation in a study whose setting is ``study``."""
        if self.normalization is not None:
            return self.normalization
        key = self.paper_key
        if key:
            from ..paper import MODELS

            return cast(Normalization, MODELS[key].paper_normalization)
        return study


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a study: a registered name (``pyred.datasets.available()``), with ``root`` the folder
    that holds it where the loader needs one ("folder": root/<split>/<class>/<image>)."""

    name: str
    root: str | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> DatasetSpec:
        if isinstance(raw, DatasetSpec):
            return raw
        spec = _named_table(cls, raw, where, "dataset", "a dataset is a name or a table { name = ..., root = ... }")
        _guard(lambda: check.string(spec.name, f"{where}.name"))
        if spec.root is not None:
            _guard(lambda: check.string(spec.root, f"{where}.root"))
        return spec

    @property
    def label(self) -> str:
        """The dataset's name in results and reports (with its folder when it has one)."""
        return self.name if self.root is None else f"{self.name}@{self.root}"

    @property
    def identity_root(self) -> str | None:
        """The folder as the configuration's identity holds it: its absolute path."""
        return None if self.root is None else os.path.abspath(self.root)


Spec = TypeVar("Spec", ModelSpec, DatasetSpec)


def _named_table(cls: type[Spec], raw: Any, where: str, noun: str, what: str) -> Spec:
    """A spec from a name (a string) or a table of its fields with a name; ConfigError naming ``where``."""
    if isinstance(raw, str):
        return cls(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {what}, got {raw!r}")
    unknown_keys(raw, [f.name for f in dataclasses.fields(cls)], where)
    if "name" not in raw:
        raise ConfigError(f"{where}: a {noun} table needs a name, got {raw!r}")
    return cls(**raw)


# -- settings: each field of StudyConfig carries the check that turns a raw (TOML / command-line) value
# into its canonical form, or raises ConfigError naming the setting -------------------------------------
Check = Callable[[Any, str], Any]


def _each(one: Check) -> Check:
    return lambda v, key: tuple(one(x, key) for x in as_list(v, key))


def _optional(one: Check) -> Check:
    return lambda v, key: None if v is None else one(v, key)


def _number(lo: float, hi: float) -> Check:
    return lambda v, key: _guard(lambda: check.number(v, key, min=lo, max=hi))


def _integer(lo: int) -> Check:
    return lambda v, key: _guard(lambda: check.integer(v, key, min=lo))


def _choice(options: tuple[str, ...]) -> Check:
    return lambda v, key: _guard(lambda: check.choice(v, key, options))


def _string(v: Any, key: str) -> str:
    return _guard(lambda: check.string(v, key))


def _boolean(v: Any, key: str) -> bool:
    return _guard(lambda: check.boolean(v, key))


def _table(v: Any, key: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected a table ([{key}] in TOML), got {v!r}")
    return dict(v)


def setting(default: Any, parse: Check, *, factory: Callable[[], Any] | None = None) -> Any:
    """A StudyConfig field whose raw values go through ``parse``."""
    if factory is not None:
        return field(default_factory=factory, metadata={"parse": parse})
    return field(default=default, metadata={"parse": parse})


@dataclass(frozen=True)
class StudyConfig:
    """A study: models x datasets x methods x fractions x seeds, through CKA and probes.

    The fields below ``full_layer_seed`` only change how the work runs, not its numbers.
    """

    models: tuple[ModelSpec, ...]
    datasets: tuple[DatasetSpec, ...]
    # an experiment or group of pyred.paper.experiments: it sets the models, datasets and each pair's grid,
    # seeds, method and recipe (recipe_options given here override the experiment's)
    paper: str | None = setting(None, _optional(_string))
    # None: each model's grid from pyred.paper (the paper's main grid for models it did not use)
    fractions: tuple[float, ...] | None = setting(None, _optional(_each(_number(0, 1))))
    sizes: tuple[int, ...] | None = setting(None, _optional(_each(_integer(0))))  # absolute k instead of fractions
    seeds: tuple[int, ...] = setting((1, 2, 3, 4, 5), _each(_integer(0)))
    methods: tuple[str, ...] = setting(("random",), _each(_string))
    recipe: str = setting("sgd", _string)
    recipe_options: dict[str, Any] = setting(None, _table, factory=dict)
    protocol: Protocol = setting("features", _choice(PROTOCOLS))
    views: int = setting(5, _integer(1))
    val_augment: ValAugment = setting("clean", _choice(get_args(ValAugment)))
    stream_seeds: StreamSeeds = setting("shared", _choice(get_args(StreamSeeds)))
    # where the paper's augmentation runs: "auto" (on a CUDA device, else in the DataLoader with PIL), "cpu"
    # (PIL, the reference's road) or "device" (pyred.device_augment)
    augment_on: AugmentOn = setting("auto", _choice(get_args(AugmentOn)))
    image_size: int | None = setting(None, _optional(_integer(8)))  # None: "features" uses the model's own
    normalization: Normalization = setting("model", _choice(NORMALIZATIONS))  # eval transform, the others 224
    amp: bool = setting(False, _boolean)  # the backbone under autocast (bfloat16 on the CPU, float16 on CUDA)
    cka: bool = setting(True, _boolean)
    cka_samples: int = setting(1000, _integer(2))
    cka_debiased: bool = setting(False, _boolean)
    full_layer_seed: int = setting(2, _integer(0))
    out: str = setting("pyred-run", _string)
    device: str | None = setting(None, _optional(_string))
    batch_size: int | None = setting(None, _optional(_integer(1)))
    cache_dir: str | None = setting(None, _optional(_string))
    head_chunks: int = setting(1, _integer(1))
    num_workers: int = setting(0, _integer(0))  # DataLoader workers decoding (and, on the CPU, augmenting) images
    report: bool = setting(True, _boolean)
    weights_dir: str | None = setting(None, _optional(_string))  # where a paper key's checkpoint file is looked up
    data_dir: str | None = setting(None, _optional(_string))  # paper = ...: the folder holding its datasets

    def fractions_for(self, model: str) -> tuple[float, ...]:
        """The fraction grid for ``model``: the configured one, else the paper's for that model."""
        from ..paper import fraction_grid

        return self.fractions if self.fractions is not None else fraction_grid(model)

    def options_for(self, model: str, dataset: str) -> dict[str, Any]:
        """The recipe options for (model, dataset): the user's over the paper's defaults for the pair."""
        from ..paper import resolve_options

        return resolve_options(model, dataset, self.recipe, self.recipe_options)

    def pairs(self) -> list[Pair]:
        """The (model, dataset) pairs to run, each with its configuration: every model x dataset with this
        configuration, or under ``paper`` the experiment's runs, each with its own grid, seeds, method,
        recipe options and normalisation."""
        if self.paper is None:
            return [Pair(mi, m, di, d, self) for mi, m in enumerate(self.models) for di, d in enumerate(self.datasets)]
        from ..paper.experiments import select

        out: list[Pair] = []
        seen = set()
        variants: dict[tuple[int, int, str], list[tuple[Any, ...]]] = {}
        for run in (r for e in select(self.paper) for r in e.runs):
            mi = next(i for i, m in enumerate(self.models) if (m.name, m.layer, m.pool) == (run.model, run.layer,
                                                                                              run.pool))
            di = next(i for i, d in enumerate(self.datasets) if d.name == run.dataset)
            options = {**run.recipe_options(), **self.recipe_options}
            if "epochs" in self.recipe_options and "lr_step" not in self.recipe_options:
                options.pop("lr_step")  # a step meant for the experiment's length: epochs / 5 instead
            key = (mi, di, run.method, run.fractions, run.sizes, run.seeds, tuple(sorted(options.items())))
            if key in seen:  # a group may hold one run in several scripts
                continue
            seen.add(key)
            sub = dataclasses.replace(self, fractions=run.fractions, sizes=run.sizes, seeds=run.seeds,
                                      methods=(run.method,), recipe="sgd", recipe_options=options,
                                      val_augment=cast(ValAugment, run.val_augment), stream_seeds="per-seed")
            # the results of one (model, dataset, layer, method) under another recipe are told apart by a tag
            # on the method (the first recipe met keeps the plain name)
            recipes = variants.setdefault((mi, di, run.method), [])
            recipe = tuple(sorted(options.items()))
            if recipe not in recipes:
                recipes.append(recipe)
            first = dict(recipes[0])
            tag = "" if recipes.index(recipe) == 0 else \
                " [" + ", ".join(f"{k} {v}" for k, v in recipe if first.get(k) != v) + "]"
            out.append(Pair(mi, self.models[mi], di, self.datasets[di], sub, tag))
        return out

    def eval_size(self) -> int | None:
        """The paper's Resize + CenterCrop size for clean images, or None for the model's own transform."""
        return self.image_size if self.image_size is not None or self.protocol == "features" else 224

    def settings(self) -> dict[str, Any]:
        """Everything, as plain data (for the runs table)."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}


@dataclass(frozen=True)
class Pair:
    """One (model, dataset) of a study -- the i-th model, the j-th dataset -- with the configuration it runs
    under (the study's, or under ``paper`` its experiment's grid, seeds, method and recipe)."""

    model_index: int
    model: ModelSpec
    dataset_index: int
    dataset: DatasetSpec
    cfg: StudyConfig
    method_tag: str = ""  # after the method's name in results, where one study runs it under several recipes


def default_config() -> StudyConfig:
    """The built-in default: offline pretrained EfficientNet-Lite0 on scikit-learn's digits,
    the paper's fraction grid, 5 seeds plus the full layer, every stage."""
    return StudyConfig(models=(ModelSpec("tf_efficientnet_lite0"),), datasets=(DatasetSpec("digits"),))


# fn takes no arguments; Callable[..., T] since mypy cannot check ModelSpec.parse's lambda (a default argument)
def _guard(fn: Callable[..., T], prefix: str | None = None) -> T:
    """fn(), with a ValueError/TypeError from a check turned into a ConfigError."""
    try:
        return fn()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix}: {exc}" if prefix else str(exc)) from None


def unknown_keys(raw: dict[str, Any], known: list[str], where: str) -> None:
    """ConfigError naming the first key of ``raw`` not in ``known`` (with a close-match hint)."""
    _guard(lambda: check.unknown_keys(raw, known, where))


def as_list(v: Any, key: str) -> list[Any]:
    if isinstance(v, (str, bytes, dict)) or not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {v!r}")
    return list(v)
