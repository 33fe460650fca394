"""The backbone contract, checked on a plugin author's class in a few seconds on tiny synthetic data.

:func:`check_backbone` builds the backbone the way the harness does and checks, in this order:

1. **options typed**: every option has a default, the default passes its own type, a value of another type is
   refused with one line;
2. **shapes**: ``loss`` gives one finite loss per member ``(R,)``; ``embeddings()`` gives ``(R, n_users, D)`` and
   ``(R, n_items, D)`` (or ``member_scores`` gives ``(B, n_items)``); every parameter carries the member axis;
3. **λ = 0 is the identity**: a member with strength 0 scores exactly as a member with the projection off;
4. **λ > 0 changes the forward pass** (feature backbones that take CLEAR);
5. **fused = alone**: each member of a fused array scores as the same config built alone;
6. **one seed, one run**: two runs with one seed give identical curves;
7. **checkpoint round trip**: 2 epochs, save, restore into a new trainer, 1 more epoch equals 3 epochs straight.

A broken contract raises :class:`BackboneContractError` with one line saying which check failed and why.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch

from clear_tune.errors import ClearTuneError, SpecError


class BackboneContractError(ClearTuneError):
    """A backbone breaks the contract a plugin must keep (one line: which check, and why)."""


@dataclass
class BackboneReport:
    """What :func:`check_backbone` checked: the backbone's name, its kind and the checks that passed."""

    name: str
    kind: str
    passed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}): {len(self.passed)} checks passed: {', '.join(self.passed)}"


def check_backbone(
    backbone: Any,
    *,
    model_options: dict[str, Any] | None = None,
    clear_at: dict[str, str] | None = None,
    emb_dim: int = 16,
) -> BackboneReport:
    """Run the contract on ``backbone`` (a registered name, or a class: registered on the spot); see the module
    docstring. ``model_options`` and ``clear_at`` are what a spec would give it."""
    from clear_tune.data import make_synthetic
    from clear_tune.models import backbone_class, register_backbone

    if isinstance(backbone, str):
        name = backbone
    else:
        register_backbone(backbone)
        name = next(n for n, c in _registry_items() if getattr(c, "model_class", c) is backbone or c is backbone)
    cls = backbone_class(name)
    kind = (
        "single model"
        if hasattr(cls, "model_class") and not hasattr(cls, "tree")
        else ("MMRec-API model" if hasattr(cls, "tree") else "model array")
    )
    report = BackboneReport(name, kind)
    dataset = make_synthetic(n_users=60, n_items=40, d_v=12, d_t=8, planted_rank=2, pref_dim=4, seed=0)

    def base(**overrides: Any) -> Any:
        from clear_tune.config import TrainConfig

        settings = {
            "backbone": name,
            "emb_dim": emb_dim,
            "epochs": 2,
            "batch_size": 64,
            "seed": 7,
            "threads": 1,
            "model_options": dict(model_options or {}),
            "projection": {"mode": "off"},
            "clear_at": clear_at,
            "eval_every": 1,
            **overrides,
        }
        return TrainConfig(**settings)

    _check_options(cls, report)
    projects = bool(cls.uses_features) and (
        not cls.external or bool(clear_at or getattr(cls, "default_clear_at", None))
    )
    on = {"mode": "fixed", "k": 2, "strength": 0.9}
    configs = [base(), base(projection=on) if projects else base(reg_weight=1e-3)]
    model = _build(configs, dataset)
    _check_shapes(model, dataset, report)
    if projects:
        zero = _build([base(projection={"mode": "fixed", "k": 2, "strength": 0.0})], dataset)
        off = _build([configs[0]], dataset)
        _same(
            _scores(zero, 0),
            _scores(off, 0),
            f"{name}: λ = 0 is the identity",
            "a member with strength 0 scores differently from one with the projection off",
        )
        report.passed.append("λ = 0 is the identity")
        if torch.allclose(_scores(model, 0), _scores(model, 1), atol=1e-6):
            raise BackboneContractError(
                f"{name}: λ > 0 changes the forward pass: a member with k=2, λ=0.9 scores "
                "exactly as the member without projection; does the model read the "
                "projected features (FeatureBackbone.modal_features / clear_at)?"
            )
        report.passed.append("λ > 0 changes the forward pass")
    for m, config in enumerate(configs):
        alone = _build([config], dataset)
        _same(
            _scores(model, m),
            _scores(alone, 0),
            f"{name}: fused = alone",
            f"member {m} of a fused array scores differently from the same config built alone",
        )
    report.passed.append("fused = alone")
    _check_determinism(configs, dataset, report)
    _check_checkpoint(configs, dataset, report)
    return report


def _registry_items() -> list[tuple[str, Any]]:
    from clear_tune.models import registered_backbones

    return list(registered_backbones().items())


def _build(configs: list[Any], dataset: Any) -> Any:
    from clear_tune.models import build_model
    from clear_tune.train._device import model_context

    try:
        model = build_model(configs, model_context(dataset, torch.device("cpu")))
    except ClearTuneError:
        raise
    except Exception as exc:
        from clear_tune.errors import describe_exception

        raise BackboneContractError(f"{configs[0].backbone}: building it raised {describe_exception(exc)}") from None
    model.start_epoch(1)
    model.eval()
    return model


def _check_options(cls: Any, report: BackboneReport) -> None:
    try:
        options = cls.model_options()
    except TypeError as exc:
        raise BackboneContractError(f"{cls.name}: options typed: {exc}") from None
    for name, option in options.items():
        try:
            option.check(option.default)
        except TypeError as exc:
            raise BackboneContractError(
                f"{cls.name}: options typed: the default of {name} ({option.default!r}) is not "
                f"{exc}; fix its annotation or its default"
            ) from None
        wrong = "not a number" if isinstance(option.default, (int, float, list, tuple)) else 12345
        if option.annotation is None and option.default is None:
            continue
        try:
            cls.check_options({name: wrong})
        except SpecError:
            continue
        raise BackboneContractError(
            f"{cls.name}: options typed: {name}={wrong!r} was accepted; annotate the option "
            "(or give it a typed default)"
        )
    report.passed.append("options typed")


def _scores(model: Any, member: int) -> torch.Tensor:
    users = torch.arange(min(8, model.n_users if hasattr(model, "n_users") else 8))
    with torch.no_grad():
        if model.ranks_by == "scores":
            return model.member_scores(member, users).float()
        user_emb, item_emb = model.embeddings()
        return user_emb[member, users].float() @ item_emb[member].float().T


def _same(a: torch.Tensor, b: torch.Tensor, check: str, what: str) -> None:
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        gap = (a - b).abs().max().item() if a.shape == b.shape else f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
        raise BackboneContractError(f"{check}: {what} (largest difference {gap})")


def _check_shapes(model: Any, dataset: Any, report: BackboneReport) -> None:
    name, R = model.name, model.n_members
    for pname, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if ".members." not in pname and (tensor.dim() == 0 or tensor.shape[0] != R):
            raise BackboneContractError(
                f"{name}: shapes: {pname} has shape {tuple(tensor.shape)}; every parameter and "
                f"buffer carries the member axis first ({R} members here)"
            )
    train = torch.as_tensor(dataset.train[:32], dtype=torch.long)
    model.train()
    loss = model.loss(train[:, 0], train[:, 1], torch.flip(train[:, 1], [0]))
    if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (R,):
        raise BackboneContractError(
            f"{name}: shapes: loss() gave {tuple(getattr(loss, 'shape', ()))}, not one loss per member ({R},)"
        )
    if not torch.isfinite(loss).all():
        raise BackboneContractError(f"{name}: shapes: loss() is not finite ({loss.tolist()})")
    loss.sum().backward()
    model.eval()
    with torch.no_grad():
        if model.ranks_by == "scores":
            scores = model.member_scores(0, torch.arange(4))
            if tuple(scores.shape) != (4, dataset.n_items):
                raise BackboneContractError(
                    f"{name}: shapes: member_scores(0, 4 users) gave {tuple(scores.shape)}, not (4, {dataset.n_items})"
                )
        else:
            users, items = model.embeddings()
            if (
                users.dim() != 3
                or tuple(users.shape[:2]) != (R, dataset.n_users)
                or tuple(items.shape[:2]) != (R, dataset.n_items)
                or users.shape[2] != items.shape[2]
            ):
                raise BackboneContractError(
                    f"{name}: shapes: embeddings() gave {tuple(users.shape)} and "
                    f"{tuple(items.shape)}, not ({R}, {dataset.n_users}, D) and "
                    f"({R}, {dataset.n_items}, D)"
                )
    report.passed.append("shapes")


def _curves(results: list[dict[str, Any]]) -> list[list[tuple[int, float]]]:
    return [[(p["epoch"], p["loss"]) for p in r["curve"]] for r in results]


def _first_difference(a: list[Any], b: list[Any], *, exact: bool) -> str | None:
    """``"member m, epoch e: loss x vs y"`` for the first point where two runs' curves differ, else None."""
    for m, (x, y) in enumerate(zip(a, b)):
        for (e1, l1), (e2, l2) in zip(x, y):
            same = l1 == l2 if exact else math.isclose(l1, l2, rel_tol=1e-5, abs_tol=1e-7)
            if e1 != e2 or not same:
                return f"member {m}, epoch {e1}: loss {l1:.6g} vs {l2:.6g}"
        if len(x) != len(y):
            return f"member {m}: {len(x)} vs {len(y)} epochs"
    return None


def _check_checkpoint(configs: list[Any], dataset: Any, report: BackboneReport) -> None:
    from clear_tune.train import Trainer

    longer = [c.model_copy(update={"epochs": 3}) for c in configs]
    straight = Trainer(longer, dataset).fit()
    first = Trainer(longer, dataset)
    first.config = first.config.model_copy(update={"epochs": 2})
    first.fit()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trainer.pt")
        first.save_checkpoint(path)
        second = Trainer(longer, dataset)
        second.load_checkpoint(path)
    resumed = second.fit()
    difference = _first_difference(_curves(straight), _curves(resumed), exact=False)
    if difference is not None:
        raise BackboneContractError(
            f"{configs[0].backbone}: checkpoint round trip: 2 epochs + restore + 1 epoch "
            f"differ from 3 epochs straight ({difference}); state outside parameters, buffers "
            "and get_extra_state() is not checkpointed"
        )
    report.passed.append("checkpoint round trip")


def _check_determinism(configs: list[Any], dataset: Any, report: BackboneReport) -> None:
    from clear_tune.train import Trainer

    one, two = Trainer(configs, dataset).fit(), Trainer(configs, dataset).fit()
    difference = _first_difference(_curves(one), _curves(two), exact=True)
    if difference is not None:
        raise BackboneContractError(
            f"{configs[0].backbone}: one seed, one run: two runs with seed {configs[0].seed} "
            f"differ ({difference}); draw randomness from a torch.Generator the model keeps "
            "and seeds (a single-model or MMRec model may use the global RNGs: its array "
            "seeds and replays them)"
        )
    report.passed.append("one seed, one run")
