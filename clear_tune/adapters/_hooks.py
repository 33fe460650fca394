"""CLEAR by hooks: the projection on the outputs of two named encoders of a model that knows nothing of CLEAR.

``clear_at: {image: NAME, text: NAME}`` names, in each member's copy of the model,

* a **submodule** (``image_trs`` in MMRec's FREEDOM, LATTICE, BM3, MGCN, SMORE, DRAGON): a forward hook
  replaces its output ``V`` by ``Ṽ = V P_v`` (Eq. 10), rows whatever they are (all items, or a batch's);
* or a **weight parameter** read by a matrix product (``item_image_trs`` in MMRec's LGMRec:
  ``torch.mm(features, W)``): the member's weight is re-parametrised as ``W P_v`` for ``X @ W`` (``P_vᵀ W`` for
  ``F.linear(X, W)``), so the product's output is ``X W P_v``, and gradients reach ``W`` through it.

The projectors are refreshed at the start of an epoch when due (epoch 1, then every τ epochs) from detached
full outputs: one full forward per member (the adapter's probe call, evaluation mode, no gradient) with the
hooks capturing what the two encoders produce for all items; a parameter's use (which product reads it) is
learnt from that same forward. λ = 0, or a member whose projection is off, leaves the outputs untouched.

A name that does not exist, or an encoder whose full-forward output is not one row per item, is one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from clear_tune.errors import ClearTuneError, SpecError

ROLES = ("image", "text")
_RIGHT_PRODUCTS = {torch.mm, torch.matmul, torch.Tensor.mm, torch.Tensor.matmul, torch.Tensor.__matmul__}
_LINEAR = {F.linear, torch._C._nn.linear}


class _Watch(TorchFunctionMode):
    """Records, for watched tensors (a member's encoder weights), which op read them, where, and its output."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.seen: dict[str, tuple[Any, int, Any]] = {}  # role -> (op, argument position, output)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for position, arg in enumerate(args):
            role = self.watched.get(id(arg)) if isinstance(arg, torch.Tensor) else None
            if role is not None and role not in self.seen:
                self.seen[role] = (func, position, out)
        return out


class ClearHooks:
    """The two encoders of every copy of one model array, and CLEAR on their outputs (see the module docstring)."""

    def __init__(self, owner: Any, model: nn.Module, clear_at: Mapping[str, str]) -> None:
        self.owner = owner
        unknown = sorted(set(clear_at) - set(ROLES))
        if unknown or set(clear_at) != set(ROLES):
            raise SpecError(
                f"clear_at for {owner.name!r} must name exactly 'image' and 'text' (got "
                f"{sorted(clear_at)}); e.g. clear_at: {{image: image_trs, text: text_trs}}"
            )
        modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        self.targets: dict[str, tuple[str, str]] = {}  # role -> ("module" | "param", name)
        for role in ROLES:
            name = clear_at[role]
            if name and name in modules:
                self.targets[role] = ("module", name)
            elif name in params:
                self.targets[role] = ("param", name)
            else:
                known = [n for n in [*modules, *params] if n]
                close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}?" if close else "name one of its submodules or weight parameters"
                raise SpecError(f"clear_at.{role}: {owner.name!r} has no submodule or parameter {name!r}; {hint}")
        self.usage: dict[str, str] = {}  # param role -> "right" (X @ W) | "linear" (F.linear(X, W))
        self._capturing: dict[tuple[int, str], torch.Tensor] | None = None
        self._watch: _Watch | None = None

    def install(self, copies: list[nn.Module]) -> None:
        for model in copies:
            for role, (kind, name) in self.targets.items():
                if kind == "module":
                    model.get_submodule(name).register_forward_hook(self._hook(model, role))

    # ------------------------------------------------------------------------------------ projection
    def _projector(self, m: int, role: str) -> torch.Tensor | None:
        projection = self.owner.projection
        if projection is None or self._capturing is not None:
            return None
        member = projection.members[m]
        if not member.active:
            return None
        return member.P_v if role == "image" else member.P_t

    def _hook(self, model: nn.Module, role: str) -> Callable[..., Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            name = self.targets[role][1]
            if not isinstance(output, torch.Tensor):
                raise ClearTuneError(
                    f"clear_at.{role}: {name} returns {type(output).__name__}, not a tensor of "
                    "encoded item features; name the submodule that does"
                )
            m = self.owner.member_of(model)
            if self._capturing is not None:
                if output.dim() == 2 and output.shape[0] == self.owner.n_items:
                    self._capturing.setdefault((m, role), output.detach())
                return None
            P = self._projector(m, role)
            return None if P is None else output @ P.to(output.dtype)

        return hook

    def member_weights(self, m: int, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member ``m``'s weights for one call: parameter targets re-parametrised (or watched, while capturing)."""
        params = {role: name for role, (kind, name) in self.targets.items() if kind == "param"}
        if self._capturing is not None:
            if self._watch is not None:
                self._watch.watched = {id(weights[name]): role for role, name in params.items()}
                self._watch.seen = {}
            return weights
        for role, name in params.items():
            P = self._projector(m, role)
            if P is not None:
                W = weights[name]
                P = P.to(W.dtype)
                weights = {**weights, name: W @ P if self.usage[role] == "right" else P.T @ W}
        return weights

    # ---------------------------------------------------------------------------------------- refresh
    def capture(self, n_members: int, n_items: int, forward: Callable[[], Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``forward`` (a full forward of every member, through the owner's :meth:`call_members`) capturing the
        encoders' outputs over all items: ``V (R, N, d_v)``, ``T (R, N, d_t)``."""
        captured: dict[tuple[int, str], torch.Tensor] = {}
        self._capturing = captured
        self._watch = _Watch({}) if any(kind == "param" for kind, _ in self.targets.values()) else None
        try:
            if self._watch is not None:
                with self._watch:
                    forward()
            else:
                forward()
        finally:
            self._capturing, self._watch = None, None
        stacks = []
        for role in ROLES:
            missing = [m for m in range(n_members) if (m, role) not in captured]
            if missing:
                kind, name = self.targets[role]
                raise ClearTuneError(
                    f"clear_at.{role}: {name} gave no output of one row per item ({n_items} rows) during a full "
                    f"forward of {self.owner.name!r}; "
                    f"name the {kind} whose output are the encoded features of all items"
                )
            stacks.append(torch.stack([captured[(m, role)] for m in range(n_members)]))
        return stacks[0], stacks[1]

    def after_member(self, m: int) -> None:
        """Called by the owner after member ``m``'s call: while capturing, what read its weight parameters."""
        if self._capturing is None or self._watch is None:
            return
        for role, (func, position, out) in self._watch.seen.items():
            name = self.targets[role][1]
            if func in _RIGHT_PRODUCTS and position == 1:
                usage = "right"
            elif func in _LINEAR and position == 1:
                usage = "linear"
            else:
                raise ClearTuneError(
                    f"clear_at.{role}: {name} is read by {getattr(func, '__name__', func)} (argument {position}), not "
                    "as the weight of a matrix product (X @ W or F.linear); name the submodule that encodes instead"
                )
            self.usage[role] = usage
            if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == self.owner.n_items:
                self._capturing.setdefault((m, role), out.detach())

    def state(self) -> dict[str, Any]:
        return {"usage": dict(self.usage)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.usage = dict(state.get("usage", {}))
