"""A model array made of ``R`` copies of one plain (single-model) PyTorch recommender.

Models from outside the package (a user's plain ``nn.Module``, an MMRec-API model) know nothing of members.
:class:`CopiesArray` builds one copy per member (same seed, so the same initial weights; each with its own
``reg_weight``), then moves every copy's parameters into ONE stacked ``(R, ...)`` parameter per name, so the
harness's invariant holds unchanged: every parameter carries the member axis first (one stacked Adam, members
leaving the array, checkpoints, resume). Member ``m`` runs its copy's own code through
:func:`torch.func.functional_call` with row ``m`` of each stacked tensor; its gradient lands in row ``m``.

Randomness: a copy may draw from the global RNGs (dropout, edge sampling, ``np.random``). The array keeps a
private RNG state (torch, CUDA, numpy, Python) seeded with the trial's seed, swaps it in around every call and
replays it for each member: member ``m`` sees exactly the stream the same trial trained alone would see, and
the outer program's RNGs are left as they were. The state rides in checkpoints (``get_extra_state``).

What stays per copy: attributes that are not parameters (graphs, cached tensors) and non-dense buffers.
Frozen parameters equal in every copy (pre-trained feature tables) are kept once, not stacked.

CLEAR: ``clear_at`` names the two encoders; :class:`~clear_tune.adapters._hooks.ClearHooks` projects their
outputs (:mod:`clear_tune.adapters._hooks`).
"""

from __future__ import annotations

import copy as copy_module
import functools
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from clear_tune.config import TrainConfig
from clear_tune.errors import ClearTuneError, SpecError
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.projection import CrossModalProjection, ProjectionArray


class _Call(nn.Module):
    """Calls any method of ``inner`` through ``forward``, so ``functional_call`` can run it with given weights."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.inner, method)(*args)


def _fresh(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every tensor (also inside lists and tuples) cloned."""

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(copy(v) for v in value)
        return value

    return tuple(copy(a) for a in args)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seeded_rng_state(seed: int) -> dict[str, Any]:
    outer = _rng_state()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    state = _rng_state()
    _set_rng_state(outer)
    return state


class CopiesArray(Recommender):
    """Base class of the adapters: ``R`` copies of one plain model as one model array (see the module docstring).

    Subclasses implement :meth:`build_copy` (one copy for one member) and :meth:`probe_call` (the call that makes
    the copy encode every item, for CLEAR's refresh), and the training/evaluation methods through
    :meth:`call_members` / :meth:`call_member`.
    """

    external: ClassVar[bool] = True
    default_clear_at: ClassVar[dict[str, str] | None] = None  # the model author's own encoder pair

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        train_config: TrainConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__(ctx, members=members)
        from clear_tune.adapters._hooks import ClearHooks

        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.train_settings = train_config  # the trial's settings (lr, batch size, ...): some models read them
        clear_at = train_config.clear_at if train_config is not None else None
        clear_at = dict(clear_at) if clear_at else (dict(self.default_clear_at) if self.default_clear_at else None)
        if clear_at is None and any(m.projection.active for m in self.members):
            raise SpecError(
                f"backbone {self.name!r} takes CLEAR only where you name its two encoders: {self.clear_at_hint()}"
            )
        self._rng = _seeded_rng_state(seed)
        copies = self._build_copies(ctx, emb_dim=emb_dim, seed=seed, options=options)
        # targets resolve on an intact copy (with its parameters), before they are stacked
        self._hooks = ClearHooks(self, copies[0], clear_at) if clear_at else None
        self._stacked_params: dict[str, str] = {}  # copy's parameter name -> this module's parameter
        self._stacked_buffers: dict[str, str] = {}
        self._shared: dict[str, torch.Tensor] = {}  # frozen, equal in every copy: kept once
        self._stack(copies)
        self._copies = copies  # a plain list: the copies hold no parameters of their own any more
        self._callers = [_Call(c) for c in copies]
        if self._hooks is not None:
            self._hooks.install(copies)

    # ------------------------------------------------------------------------------- what subclasses give
    def build_copy(
        self, ctx: ModelContext, member: Member, *, emb_dim: int, seed: int, options: dict[str, Any]
    ) -> nn.Module:
        """One plain model for ``member`` (its ``reg_weight``), on ``ctx.device``."""
        raise NotImplementedError

    def probe_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(method, args)`` of calls that may run the encoders over every item (CLEAR's refresh reads them),
        tried in order until one does."""
        raise NotImplementedError

    @classmethod
    def clear_at_hint(cls) -> str:
        return (
            f"add 'clear_at: {{{cls.name}: {{image: SUBMODULE, text: SUBMODULE}}}}' to the spec, naming the two "
            "submodules (or weight parameters) whose outputs are the encoded item features"
        )

    @classmethod
    def no_projection_hint(cls) -> str:
        return "set projection mode: off (or strength: 0) for it"

    # ---------------------------------------------------------------------------------------- building
    def _build_copies(self, ctx: ModelContext, *, emb_dim: int, seed: int, options: dict[str, Any]) -> list[nn.Module]:
        """One copy per member, every build from the same RNG state (so the same initial weights); members that
        differ only in their projection share a build and get deep copies of it."""
        copies: list[nn.Module] = []
        built: dict[float, nn.Module] = {}
        with self._private_rng() as start:
            for member in self.members:
                if member.reg_weight not in built:
                    _set_rng_state(start)
                    model = self.build_copy(ctx, member, emb_dim=emb_dim, seed=seed, options=options)
                    if not isinstance(model, nn.Module):
                        raise SpecError(
                            f"backbone {self.name!r}: building it gave {type(model).__name__}, not an nn.Module"
                        )
                    built[member.reg_weight] = model
                    copies.append(model)
                else:
                    copies.append(copy_module.deepcopy(built[member.reg_weight]))
        return copies

    def _stack(self, copies: list[nn.Module]) -> None:
        per_copy = [dict(c.named_parameters()) for c in copies]
        for index, (name, first) in enumerate(per_copy[0].items()):
            rows = [params[name].detach() for params in per_copy]
            if not first.requires_grad and all(torch.equal(rows[0], row) for row in rows[1:]):
                self._shared[name] = rows[0]
                continue
            mangled = f"param{index}_" + name.replace(".", "_")
            self.register_parameter(mangled, nn.Parameter(torch.stack(rows), requires_grad=first.requires_grad))
            self._stacked_params[name] = mangled
        per_copy_buffers = [dict(c.named_buffers()) for c in copies]
        for index, (name, first_buffer) in enumerate(per_copy_buffers[0].items()):
            if first_buffer.layout != torch.strided:
                continue  # sparse graphs stay with their copy (constant data built with it)
            mangled = f"buffer{index}_" + name.replace(".", "_")
            self.register_buffer(mangled, torch.stack([buffers[name] for buffers in per_copy_buffers]))
            self._stacked_buffers[name] = mangled
        for c in copies:  # the weights now live in the stacked tensors: the copies keep empty slots
            for module in c.modules():
                for name in list(module._parameters):
                    module._parameters[name] = None
                for name, buffer in list(module._buffers.items()):
                    if buffer is not None and buffer.layout == torch.strided:
                        module._buffers[name] = None

    # ------------------------------------------------------------------------------------------ calling
    @contextmanager
    def _private_rng(self) -> Iterator[dict[str, Any]]:
        """The array's own RNG state swapped in (yielded: where every member starts), the outer one restored after."""
        outer = _rng_state()
        _set_rng_state(self._rng)
        try:
            yield self._rng
        finally:
            self._rng = _rng_state()
            _set_rng_state(outer)

    def _weights_of(self, m: int) -> dict[str, torch.Tensor]:
        weights = {name: getattr(self, mangled)[m] for name, mangled in self._stacked_params.items()}
        weights.update(self._shared)
        weights.update({name: getattr(self, mangled)[m] for name, mangled in self._stacked_buffers.items()})
        if self._hooks is not None:
            weights = self._hooks.member_weights(m, weights)
        return {f"inner.{name}": value for name, value in weights.items()}

    def call_members(self, method: str, *args: Any) -> list[Any]:
        """``copy.method(*args)`` for every member, each with its weights and the RNG stream it would see alone."""
        results = []
        with self._private_rng() as start:
            for m in range(self.n_members):
                _set_rng_state(start)
                fresh = _fresh(args)  # a model may change its inputs in place (MMRec's DRAGON shifts item ids)
                results.append(functional_call(self._callers[m], self._weights_of(m), (method, *fresh)))
                if self._hooks is not None:
                    self._hooks.after_member(m)
        return results

    def call_member(self, m: int, method: str, *args: Any) -> Any:
        """``copy.method(*args)`` for member ``m`` alone, leaving the array's RNG as it was (evaluation calls)."""
        with self._private_rng() as start:
            result = functional_call(self._callers[m], self._weights_of(m), (method, *args))
            _set_rng_state(start)
        return result

    def member_of(self, model: nn.Module) -> int:
        return next(m for m, c in enumerate(self._copies) if c is model)

    def has_method(self, method: str) -> bool:
        return callable(getattr(self._copies[0], method, None))

    # -------------------------------------------------------------------------------------- the array
    def train(self, mode: bool = True) -> CopiesArray:
        super().train(mode)
        for c in self.__dict__.get("_copies", []):
            c.train(mode)
        return self

    def refresh_projection(self, epoch: int) -> None:
        """CLEAR's refresh when due: one full forward per member (:meth:`probe_call`) with the hooks capturing the
        encoders' outputs over all items, then P_v, P_t from them (Algorithm 1 lines 2-8)."""
        if self._hooks is None or not any(m.projection.active for m in self.members):
            return
        if self.projection is not None and not self.projection.due(epoch):
            return
        training = self.training
        self.eval()
        problems = []
        try:
            for method, args in self.probe_calls():
                try:
                    with torch.no_grad():
                        V, T = self._hooks.capture(
                            self.n_members, self.n_items, functools.partial(self.call_members, method, *args)
                        )
                    break
                except ClearTuneError as exc:  # the encoders did not run over all items in this call
                    problems.append(str(exc))
                except Exception as exc:  # this call needs state a training step makes first (MMGCN's result)
                    problems.append(f"{method}() raised {type(exc).__name__}: {exc}")
            else:
                raise ClearTuneError(problems[0] if len(problems) == 1 else "; ".join(problems))
        finally:
            self.train(training)
        if self.projection is None:
            self.projection = ProjectionArray(V.shape[-1], T.shape[-1], [m.projection for m in self.members])
        self.projection.to(V.device).maybe_refresh(V, T, epoch=epoch)

    def keep_members(self, index: Sequence[int]) -> None:
        index = list(index)
        super().keep_members(index)
        self._copies = [self._copies[i] for i in index]
        self._callers = [self._callers[i] for i in index]

    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": self._rng}
        if self.projection is not None:  # built at the first refresh: a restored array builds it again
            first = cast(CrossModalProjection, self.projection.members[0])
            state["projection_dims"] = (first.P_v.shape[0], first.P_t.shape[0])
        if self._hooks is not None:
            state["hooks"] = self._hooks.state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._rng = state["rng"]
        if "projection_dims" in state and self.projection is None:
            d_v, d_t = state["projection_dims"]
            self.projection = ProjectionArray(d_v, d_t, [m.projection for m in self.members]).to(self.reg_weight.device)
        if self._hooks is not None and "hooks" in state:
            self._hooks.load_state(state["hooks"])
