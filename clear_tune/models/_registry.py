"""The open backbone registry: built-ins, plugins, entry points and ``module:Class`` names, one path for all.

A backbone name resolves, in this order, to

1. a class registered with :func:`register_backbone` (the built-ins, and every plugin file or module that a
   spec's ``plugins:`` imports, register this way);
2. an installed package's entry point in the group ``clear_tune.backbones`` (``name = "pkg.module:Class"``),
   imported the first time the name is used;
3. ``pkg.module:Class`` or ``path/to/file.py:Class``: the class itself, imported on the spot;
4. ``FAMILY:NAME`` for a registered model family, such as ``mmrec:FREEDOM`` once a spec names an MMRec-API
   source tree (:mod:`clear_tune.adapters`).

A registered class is a native model array (a :class:`Recommender` subclass) or a plain single-model
``nn.Module`` with ``loss`` and ``embeddings`` (or ``scores``), which is wrapped into a model array of
copies (:class:`clear_tune.adapters.SingleModelArray`). A name taken twice, a class that implements neither
interface, an import that fails: one :class:`SpecError` line each.

Example:
    >>> import torch
    >>> from clear_tune.models import Recommender, backbone_class, register_backbone
    >>> @register_backbone(name="doc-mf")
    ... class DocMF(Recommender):
    ...     def __init__(self, ctx, *, members, emb_dim: int = 8, seed: int = 0, scale: float = 1.0):
    ...         super().__init__(ctx, members=members)
    ...         self.users = torch.nn.Parameter(torch.zeros(len(members), ctx.n_users, emb_dim))
    ...         self.items = torch.nn.Parameter(torch.zeros(len(members), ctx.n_items, emb_dim))
    ...     def loss(self, users, pos, neg):
    ...         return (self.users[:, users] * (self.items[:, neg] - self.items[:, pos])).sum((1, 2))
    ...     def embeddings(self):
    ...         return self.users, self.items
    >>> backbone_class("doc-mf") is DocMF, list(DocMF.model_options())
    (True, ['scale'])
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from clear_tune.config import TrainConfig
from clear_tune.errors import SpecError, describe_exception
from clear_tune.models._base import Member, ModelContext, Recommender

ENTRY_POINT_GROUP = "clear_tune.backbones"
# model families: ``PREFIX:NAME`` -> a class made on demand (an MMRec source tree registers ``mmrec``)
FamilyResolver = Callable[[str], type[Recommender]]

_REGISTRY: dict[str, type[Recommender]] = {}
_ORIGIN: dict[str, str] = {}  # name -> where the class came from, for collision messages
_FAMILIES: dict[str, FamilyResolver] = {}
_LOCK = threading.RLock()
_BUILTINS = (
    "bpr",
    "lightgcn",
    "vbpr",
    "freedom",
    "clear",
    "layergcn",
    "bm3",
    "lattice",
    "slmrec",
    "dualgnn",
    "mmgcn",
    "grcn",
    "mgcn",
    "smore",
    "lgmrec",
    "dragon",
    "mentor",
    "mmssl",
)
_builtins_loaded = False

C = TypeVar("C", bound=type)


def register_backbone(cls: C | None = None, *, name: str | None = None) -> Any:
    """Register a backbone class under ``name`` (default: its ``name`` attribute, else its lowercased class name).

    Use it as ``@register_backbone`` or ``@register_backbone(name="mymodel")``; it returns the class unchanged
    (a single-model class is registered through its model-array wrapper). Registering the same class again
    is a no-op; another class under a taken name is a :class:`SpecError`.
    """

    def decorate(target: C) -> C:
        _register(target, name)
        return target

    return decorate(cls) if cls is not None else decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _register(target: type, name: str | None) -> type[Recommender]:
    if not isinstance(target, type):
        raise SpecError(f"register_backbone takes a class, got {target!r}")
    key = (
        name
        or (target.__dict__.get("name") if isinstance(target.__dict__.get("name"), str) else None)
        or target.__name__.lower()
    )
    array_class = as_model_array(target, key)  # SpecError when it implements neither interface
    origin = _qualified(target)
    with _LOCK:
        if key in _REGISTRY and _ORIGIN[key] != origin:
            raise SpecError(
                f"backbone name {key!r} is registered twice: by {_ORIGIN[key]} and by {origin}; "
                f"give one of them another name with register_backbone(name=...)"
            )
        _REGISTRY[key], _ORIGIN[key] = array_class, origin
    return array_class


_INTERFACE = (
    "subclass clear_tune.models.Recommender (a model array), or write an nn.Module with loss(users, pos, "
    "neg) and embeddings() or scores(users) (README, 'Your own model')"
)


def as_model_array(cls: type, name: str) -> type[Recommender]:
    """The model-array class for a class registered as ``name``: a native :class:`Recommender` as it is (its
    interface checked), a single-model ``nn.Module`` wrapped in a :class:`~clear_tune.adapters.SingleModelArray`;
    anything else is one :class:`SpecError` line."""
    from torch import nn

    where = f"class {_qualified(cls)} registered as {name!r}"
    if issubclass(cls, Recommender):
        if cls.loss is Recommender.loss:
            raise SpecError(f"{where} does not implement loss(users, pos, neg) -> (R,) losses")
        if cls.embeddings is Recommender.embeddings and cls.member_scores is Recommender.member_scores:
            raise SpecError(f"{where} implements neither embeddings() nor member_scores(member, users)")
        if "name" not in cls.__dict__:
            cls.name = name
        wrapped: type[Recommender] = cls
    elif (
        issubclass(cls, nn.Module)
        and callable(getattr(cls, "loss", None))
        and (callable(getattr(cls, "embeddings", None)) or callable(getattr(cls, "scores", None)))
    ):
        from clear_tune.adapters import SingleModelArray  # a plain nn.Module becomes an array of copies

        wrapped = SingleModelArray.wrap(cls, name)
    else:
        raise SpecError(f"{where} is not a backbone: {_INTERFACE}")
    try:
        wrapped.model_options()
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return wrapped


def register_family(prefix: str, resolver: FamilyResolver) -> None:
    """Route names ``PREFIX:NAME`` to ``resolver(NAME)`` (an MMRec-API source tree registers ``mmrec``)."""
    with _LOCK:
        _FAMILIES[prefix] = resolver


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        with _LOCK:
            for module in _BUILTINS:
                importlib.import_module(f"clear_tune.models.{module}")
            _builtins_loaded = True


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed packages' backbones: entry points of the group ``clear_tune.backbones`` by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _from_entry_point(ep: importlib.metadata.EntryPoint) -> type[Recommender]:
    where = (
        f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP}, package {getattr(ep.dist, 'name', '?')})"
    )
    try:
        loaded = ep.load()
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except Exception as exc:
        raise SpecError(
            f"{where} cannot be imported: {describe_exception(exc)}; fix or reinstall that package"
        ) from None
    if isinstance(loaded, type):
        if ep.name in _BUILTIN_NAMES():
            raise SpecError(f"{where} takes the built-in backbone's name {ep.name!r}; rename the entry point")
        return _REGISTRY[ep.name] if _ORIGIN.get(ep.name) == _qualified(loaded) else _register(loaded, ep.name)
    if ep.name in _REGISTRY:  # a module whose import registered the name
        return _REGISTRY[ep.name]
    raise SpecError(f"{where} neither is a backbone class nor registers one named {ep.name!r}")


def _BUILTIN_NAMES() -> set[str]:
    return {name for name, origin in _ORIGIN.items() if origin.startswith("clear_tune.models.")}


def _from_import_path(name: str) -> type[Recommender]:
    from clear_tune._plugins import import_object

    target = import_object(name)  # SpecError with the reason
    return _REGISTRY[name] if _ORIGIN.get(name) == _qualified(target) else _register(target, name)


def backbone_class(name: str) -> type[Recommender]:
    """The model-array class of backbone ``name`` (see the module docstring); unknown: one :class:`SpecError` line."""
    _load_builtins()
    with _LOCK:
        if name in _REGISTRY:
            return _REGISTRY[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in _FAMILIES:
            cls = _FAMILIES[prefix](rest)
            _REGISTRY[name], _ORIGIN[name] = cls, name
            return cls
        points = entry_points()
        if name in points:
            return _from_entry_point(points[name])
        if sep and rest and ("." in prefix or "/" in prefix or prefix.endswith(".py")):
            return _from_import_path(name)
        if sep and prefix == "mmrec":
            raise SpecError(
                f"backbone {name!r} names an MMRec model, but no MMRec source tree is loaded: add "
                f"'plugins: [{{mmrec: PATH/TO/MMRec/src}}]' to the spec (or --plugin mmrec=PATH)"
            )
        known = sorted({*_REGISTRY, *points})
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            raise SpecError(f"unknown backbone {name!r}; did you mean {close[0]!r}?")
        raise SpecError(
            f"unknown backbone {name!r}; choose one of {', '.join(known)}, or load your own ('plugins:' in "
            "the spec, 'pkg.module:Class', an installed clear_tune.backbones entry point)"
        )


def backbone_uses_features(name: str) -> bool:
    """Whether backbone ``name`` needs image and text features (and so can take CLEAR's projection)."""
    return bool(backbone_class(name).uses_features)


def registered_backbones() -> dict[str, type[Recommender]]:
    """Every backbone registered so far (the built-ins included; entry points only once they were used)."""
    _load_builtins()
    return dict(_REGISTRY)


class _Catalogue(Mapping[str, type[Recommender]]):
    """``BACKBONES``: a live read-only view of the registry (built-ins loaded on first use)."""

    def __getitem__(self, name: str) -> type[Recommender]:
        _load_builtins()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        _load_builtins()
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        _load_builtins()
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"BACKBONES({sorted(self)})"


BACKBONES: Mapping[str, type[Recommender]] = _Catalogue()


def build_model(configs: TrainConfig | Sequence[TrainConfig], ctx: ModelContext) -> Recommender:
    """Build one model array, a member per config, on ``ctx`` (already on its device) and move it there.

    The configs must share everything but their projection and ``reg_weight``
    (:meth:`TrainConfig.fusion_key`). Raises :class:`SpecError` for an unknown backbone or model option,
    a projection asked of a backbone without modalities, or a feature backbone on a dataset without
    features. Parameter initialisation is seeded with the configs' seed (the global torch RNG is left as
    it was), so every member starts where the same config trained alone starts.

    Example:
        >>> import torch
        >>> from clear_tune.config import TrainConfig
        >>> from clear_tune.models import ModelContext, build_model
        >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
        >>> cfg = TrainConfig(backbone="lightgcn", projection={"mode": "off"}, emb_dim=8)
        >>> model = build_model([cfg, cfg.model_copy(update={"reg_weight": 1e-3})], ctx)
        >>> type(model).__name__, model.n_members
        ('LightGCN', 2)
    """
    import torch

    configs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    first = configs[0]
    if any(c.fusion_key() != first.fusion_key() for c in configs[1:]):
        raise ValueError("the members of one model array must differ only in projection and reg_weight")
    cls = backbone_class(first.backbone)
    if first.clear_at is not None and not cls.external:
        raise SpecError(
            f"backbone {first.backbone!r} applies CLEAR at its own documented point; clear_at is for "
            "single-model and MMRec-API models: remove it for this backbone"
        )
    if not cls.uses_features and any(c.projection.active for c in configs):
        raise SpecError(f"backbone {first.backbone!r} has no modality features to project: {cls.no_projection_hint()}")
    if cls.uses_features and (ctx.image_feat is None or ctx.text_feat is None):
        raise SpecError(
            f"backbone {first.backbone!r} needs image and text features but the dataset has none: use a dataset "
            f"with features (synthetic, semi:..., or mmrec with image_feat.npy/text_feat.npy) or an "
            f"interaction-only backbone"
        )
    options = cls.check_options(first.model_options)
    members = [
        Member(projection=c.projection, reg_weight=c.reg_weight if c.reg_weight is not None else cls.default_reg_weight)
        for c in configs
    ]
    extra = {"train_config": first} if cls.external else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(first.seed)
        try:
            construct: Callable[..., Recommender] = cls  # every backbone takes emb_dim and seed (see Recommender)
            model = construct(ctx, members=members, emb_dim=first.emb_dim, seed=first.seed, **extra, **options)
        except ValueError as exc:  # an option value out of range, say dropout=1.5
            raise SpecError(f"backbone {first.backbone!r}: {exc}: fix model_options") from None
    return model.to(ctx.device)
