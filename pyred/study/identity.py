"""A study configuration's identity: everything that changes its numbers, typed, and its id.

:func:`identity` maps a :class:`~pyred.study.schema.StudyConfig` to a
:class:`ConfigIdentity` -- the grid, methods, recipe and every option after
defaults, CKA settings, models with the digests of their features and weights
files, datasets, protocol -- and its ``id`` is a digest of ``to_json()``: the key
under which the results database keeps a configuration's rows. Settings that
only change how the work runs (output folder, device, batch size, cache folder,
head chunks, workers, report) are not part of it. Optional parts are left out of
the JSON when they hold their default, so configurations that predate them keep
their ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._files import digest, sha256_file

if TYPE_CHECKING:
    from .schema import StudyConfig


@dataclass(frozen=True)
class ModelIdentity:
    """A model by name, layer and pooling, with the sha256 of its features file, or whether it is
    pretrained and the sha256 of its weights file."""

    name: str
    layer: str
    pool: str
    features_sha256: str | None = None
    pretrained: bool | None = None
    weights_sha256: str | None = None
    normalization: str | None = None  # the model's own (a paper key's reference normalisation), if any
    timm_kwargs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "layer": self.layer, "pool": self.pool}
        if self.features_sha256 is not None:
            out["features_sha256"] = self.features_sha256
        else:
            out.update(pretrained=self.pretrained, weights_sha256=self.weights_sha256)
        if self.normalization is not None:
            out["normalization"] = self.normalization
        if self.timm_kwargs:
            out["timm_kwargs"] = self.timm_kwargs
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelIdentity:
        return cls(d["name"], d.get("layer", "penultimate"), d.get("pool", "avg"), d.get("features_sha256"),
                   d.get("pretrained"), d.get("weights_sha256"), d.get("normalization"), d.get("timm_kwargs"))

    def describe(self) -> str:
        """The name, with a short digest of its features or weights file."""
        files = [f" [{kind} {sha[:10]}]" for kind, sha in (("features", self.features_sha256),
                                                            ("weights", self.weights_sha256)) if sha]
        return self.name + "".join(files)


@dataclass(frozen=True)
class DatasetIdentity:
    name: str
    root: str | None = None  # the folder's absolute path, for datasets given with one

    def to_json(self) -> Any:
        return self.name if self.root is None else {"name": self.name, "root": self.root}

    @classmethod
    def from_json(cls, d: Any) -> DatasetIdentity:
        return cls(d) if isinstance(d, str) else cls(d["name"], d.get("root"))

    def describe(self) -> str:
        return self.name if self.root is None else f"{self.name}({self.root})"


@dataclass(frozen=True)
class CKAIdentity:
    samples: int
    debiased: bool

    def to_json(self) -> dict[str, Any]:
        return {"enabled": True, "samples": self.samples, "debiased": self.debiased}

    def describe(self) -> str:
        return f"CKA on {self.samples} test samples ({'debiased' if self.debiased else 'biased'})"


@dataclass(frozen=True)
class ProtocolIdentity:
    """How the probes saw the training images (see :data:`pyred.study.schema.PROTOCOLS`)."""

    name: str
    image_size: int | None
    normalization: str
    views: int | None = None
    val_augment: str = "clean"
    stream_seeds: str = "shared"
    augment_on: str = "auto"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image_size": self.image_size, "normalization": self.normalization}
        if self.views is not None:
            out["views"] = self.views
        for key, default in (("val_augment", "clean"), ("stream_seeds", "shared"), ("augment_on", "auto")):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class PaperIdentity:
    """A study of the paper's experiment or group ``name``: ``pairs`` (model, dataset) runs, whose
    grids, seeds, methods and recipes have the digest ``runs``."""

    name: str
    pairs: int
    runs: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pairs": self.pairs, "runs": self.runs}


@dataclass(frozen=True)
class ConfigIdentity:
    """Everything that changes a study's numbers. ``recipe_options``: every option of the recipe after
    defaults (run-only ones left out); ``recipe_options_by_pair``: where the paper's per-(model, dataset)
    defaults change them, the options of each "model|dataset"; ``fractions``: one grid, or one per model."""

    models: tuple[ModelIdentity, ...]
    datasets: tuple[DatasetIdentity, ...]
    fractions: list[float] | dict[str, list[float]]
    seeds: list[int]
    methods: list[str]
    full_layer_seed: int
    recipe: str
    recipe_options: dict[str, Any]
    cka: CKAIdentity | None = None
    recipe_options_by_pair: dict[str, dict[str, Any]] | None = None
    amp: bool = False
    protocol: ProtocolIdentity | None = None
    paper: PaperIdentity | None = None
    sizes: list[int] | None = None  # absolute subset sizes in place of the fractions

    def to_json(self) -> dict[str, Any]:
        """The canonical plain form (what is digested, and stored in the database)."""
        out: dict[str, Any] = {
            "models": [m.to_json() for m in self.models], "datasets": [d.to_json() for d in self.datasets],
            "fractions": self.fractions, "seeds": self.seeds, "methods": self.methods,
            "full_layer_seed": self.full_layer_seed, "recipe": self.recipe, "recipe_options": self.recipe_options,
            "cka": None if self.cka is None else self.cka.to_json(),
        }
        if self.recipe_options_by_pair:
            out["recipe_options_by_pair"] = self.recipe_options_by_pair
        if self.amp:
            out["amp"] = True
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_json()
        if self.paper is not None:
            out["paper"] = self.paper.to_json()
        if self.sizes is not None:
            out["sizes"] = self.sizes
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConfigIdentity:
        cka, protocol, paper = d.get("cka"), d.get("protocol"), d.get("paper")
        return cls(
            tuple(ModelIdentity.from_json(m) for m in d.get("models", [])),
            tuple(DatasetIdentity.from_json(x) for x in d.get("datasets", [])),
            d.get("fractions", []), d.get("seeds", []), d.get("methods", []), d.get("full_layer_seed", 2),
            d.get("recipe", "sgd"), d.get("recipe_options", {}),
            None if not cka else CKAIdentity(cka["samples"], cka["debiased"]),
            d.get("recipe_options_by_pair"), bool(d.get("amp", False)),
            None if not protocol else ProtocolIdentity(protocol["name"], protocol.get("image_size"),
                                                       protocol.get("normalization", "model"), protocol.get("views"),
                                                       protocol.get("val_augment", "clean"),
                                                       protocol.get("stream_seeds", "shared"),
                                                       protocol.get("augment_on", "auto")),
            None if not paper else PaperIdentity(paper["name"], paper["pairs"], paper["runs"]), d.get("sizes"))

    @property
    def id(self) -> str:
        """The short digest that keys the configuration in the results database."""
        return digest(self.to_json(), 12)

    @property
    def pairs(self) -> int:
        """(model, dataset) pairs of the study (under ``paper``: the experiment's runs)."""
        return self.paper.pairs if self.paper is not None else len(self.models) * len(self.datasets)

    @property
    def protocol_name(self) -> str:
        return self.protocol.name if self.protocol is not None else "features"

    def describe_protocol(self) -> str:
        """The protocol, for people (the report's heading, ``pyred runs``)."""
        p = self.protocol
        amp = ", AMP" if self.amp else ""
        if p is None:
            return f"features (clean features extracted once; the model's own eval transform{amp})"
        how = (f"{p.image_size} px" + ("" if p.normalization == "model" else f", {p.normalization} normalisation")
               + amp)
        if p.name == "features":
            return f"features (clean features extracted once; Resize + CenterCrop, {how})"
        if p.name == "views":
            return f"views ({p.views} augmented views per training image, extracted once; {how})"
        extra = "".join(f", {k.replace('_', ' ')} {getattr(p, k)}" for k, d in (
            ("val_augment", "clean"), ("stream_seeds", "shared"), ("augment_on", "auto")) if getattr(p, k) != d)
        return f"paper (freshly augmented training images through the backbone at every step; {how}{extra})"

    def describe_options(self) -> str:
        """The recipe's options, and where the paper's per-pair defaults change them."""
        opts = ", ".join(f"{k}={v}" for k, v in self.recipe_options.items() if v is not None)
        if self.recipe_options_by_pair:
            opts += "; per model|dataset: " + "; ".join(
                f"{pair}: " + ", ".join(f"{k}={v}" for k, v in o.items()
                                        if v is not None and self.recipe_options.get(k) != v)
                for pair, o in self.recipe_options_by_pair.items())
        return opts


def identity(cfg: StudyConfig, backbones: dict[str, Any] | None = None) -> ConfigIdentity:
    """The identity of a configuration (files are digested here; the backbone objects of ``module:`` models,
    ``backbones`` by name, by the digest of their weights)."""
    from ..probes import RECIPES

    recipe = RECIPES[cfg.recipe]
    options = recipe.identity_options(cfg.recipe_options)
    models = tuple(ModelIdentity(m.name, m.layer, m.pool, features_sha256=sha256_file(m.features)) if m.features
                   else ModelIdentity(m.name, m.layer, m.pool, pretrained=m.pretrained,
                                      weights_sha256=sha256_file(m.weights) if m.weights else
                                      _given_digest(m.name, backbones),
                                      normalization=m.normalization, timm_kwargs=dict(m.timm_kwargs) or None)
                   for m in cfg.models)
    grids = {m.name: sorted(set(cfg.fractions_for(m.name))) for m in cfg.models}
    one_grid = len({tuple(g) for g in grids.values()}) == 1
    pairs = {}
    paper = None
    if cfg.paper is not None:
        runs = [(p.model_index, p.dataset_index, p.cfg.methods, p.cfg.fractions, p.cfg.sizes, p.cfg.seeds,
                 recipe.identity_options(p.cfg.recipe_options), p.cfg.val_augment, p.cfg.stream_seeds)
                for p in cfg.pairs()]
        paper = PaperIdentity(cfg.paper, len(runs), digest(runs, 20))
    for m in cfg.models if paper is None else ():
        for d in cfg.datasets:
            resolved = recipe.identity_options(cfg.options_for(m.name, d.name))
            if resolved != options:
                pairs[f"{m.name}|{d.label}"] = resolved
    protocol = None
    if cfg.protocol != "features" or cfg.image_size is not None:
        protocol = ProtocolIdentity(cfg.protocol, cfg.eval_size(), cfg.normalization,
                                    cfg.views if cfg.protocol == "views" else None, cfg.val_augment, cfg.stream_seeds,
                                    cfg.augment_on)
    return ConfigIdentity(
        models, tuple(DatasetIdentity(d.name, d.identity_root) for d in cfg.datasets),
        next(iter(grids.values())) if one_grid else grids, sorted(set(cfg.seeds)), sorted(set(cfg.methods)),
        cfg.full_layer_seed, cfg.recipe, options,
        CKAIdentity(cfg.cka_samples, cfg.cka_debiased) if cfg.cka else None, pairs or None, cfg.amp, protocol, paper,
        sorted(set(cfg.sizes)) if cfg.sizes is not None and paper is None else None)


def _given_digest(name: str, backbones: dict[str, Any] | None) -> str | None:
    """A module: model's object by what makes its features: weights, own layer, pool and transform."""
    if not name.startswith("module:"):
        return None
    bb = (backbones or {}).get(name[len("module:"):])
    if bb is None:
        return None
    weights = bb.weights_digest() if hasattr(bb, "weights_digest") else "unknown"
    try:
        tid = bb.transform_id()
    except (AttributeError, ValueError):  # no transform_id for a custom transform: extraction will say so
        tid = "unidentified"
    return digest([weights, getattr(bb, "layer", None), getattr(bb, "pool", None), tid], 64)


def config_id(ident: ConfigIdentity) -> str:
    """The short digest that keys a configuration in the results database (``ident.id``)."""
    return ident.id
