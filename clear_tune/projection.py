"""CLEAR's cross-modal null-space projection (paper §3.2-3.3, Eq. 3-10, Algorithm 1 lines 2-10).

Every backbone uses this one module the same way: call :meth:`CrossModalProjection.maybe_refresh`
with the encoder outputs at the start of an epoch, then ``forward`` them through it. No backbone
contains CLEAR code of its own.

Example:
    >>> import torch
    >>> from clear_tune.projection import CrossModalProjection
    >>> proj = CrossModalProjection(8, 6, mode="fixed", k=2, strength=0.9)
    >>> V, T = torch.randn(100, 8), torch.randn(100, 6)
    >>> proj.maybe_refresh(V, T, epoch=1)
    True
    >>> Vp, Tp = proj(V, T)
    >>> Vp.shape, Tp.shape
    (torch.Size([100, 8]), torch.Size([100, 6]))
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from clear_tune.config import RankMode


def cross_covariance(V: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Centred cross-covariance C = (1/N) V̄ᵀ T̄ of ``V (N, d_v)`` and ``T (N, d_t)``: shape ``(d_v, d_t)``."""
    V_bar = V - V.mean(dim=0, keepdim=True)  # Eq. 3
    T_bar = T - T.mean(dim=0, keepdim=True)
    return V_bar.T @ T_bar / V.shape[0]  # Eq. 4


def energy_rank(singular_values: torch.Tensor, energy: float, max_rank: int) -> int:
    """Smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ ``energy``, capped at ``max_rank`` (the "dynamic ratio")."""
    sq = singular_values.detach().double().cpu() ** 2  # (r,) tiny: the rank is a host-side decision
    total = sq.sum()
    if total <= 0:
        return 1
    cumulative = torch.cumsum(sq, 0) / total
    k = int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype) - 1e-12).item()) + 1
    return max(1, min(k, max_rank, singular_values.numel()))


def soft_projectors(
    C: torch.Tensor, k: int, strength: float, *, svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of ``C`` and the soft null-space projectors of Eq. 9.

    Returns ``(P_v (d_v, d_v), P_t (d_t, d_t), σ (min(d_v, d_t),))`` with
    ``P_v = I − λ U_k U_kᵀ`` and ``P_t = I − λ W_k W_kᵀ``. Pass ``svd`` (the reduced SVD of ``C``) when
    it is already computed.
    """
    U, S, Wh = svd if svd is not None else torch.linalg.svd(C, full_matrices=False)  # Eq. 5; U: (d_v, r), Wh: (r, d_t)
    U_k, W_k = U[:, :k], Wh[:k, :].T
    P_v = torch.eye(C.shape[0], dtype=C.dtype, device=C.device) - strength * U_k @ U_k.T
    P_t = torch.eye(C.shape[1], dtype=C.dtype, device=C.device) - strength * W_k @ W_k.T
    return P_v, P_t, S


class CrossModalProjection(nn.Module):
    """Soft projectors P_v, P_t, recomputed at epoch 1 and every τ epochs from detached features.

    The projectors are buffers, never parameters: gradients flow through ``V @ P_v`` into the encoders
    but not into the SVD. ``history`` keeps, for every refresh, the rank used and the singular values of
    the cross-covariance before and after projection (paper Fig. 5).
    """

    P_v: torch.Tensor  # (d_v, d_v) buffer
    P_t: torch.Tensor  # (d_t, d_t) buffer

    def __init__(
        self,
        d_v: int,
        d_t: int,
        *,
        mode: RankMode = "fixed",
        k: int = 8,
        strength: float = 0.9,
        energy: float = 0.9,
        refresh_every: int = 1,
    ) -> None:
        super().__init__()
        if mode != "off" and not 1 <= k <= min(d_v, d_t):
            raise ValueError(f"k={k} must be in [1, min(d_v, d_t)={min(d_v, d_t)}]")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength} must be in [0, 1]")
        self.mode, self.k, self.strength = mode, k, strength
        self.energy, self.refresh_every = energy, refresh_every
        self.register_buffer("P_v", torch.eye(d_v))
        self.register_buffer("P_t", torch.eye(d_t))
        self.current_rank = 0
        self.history: list[dict[str, Any]] = []

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.strength > 0.0

    def due(self, epoch: int) -> bool:
        """Algorithm 1 line 2: refresh at epoch 1 and whenever ``epoch % τ == 0`` (epochs count from 1)."""
        return self.active and (epoch == 1 or epoch % self.refresh_every == 0)

    @torch.no_grad()
    def refresh(self, V: torch.Tensor, T: torch.Tensor, *, epoch: int) -> None:
        """Recompute the projectors from encoder outputs ``V (N, d_v)``, ``T (N, d_t)`` (detached here)."""
        V, T = V.detach().float(), T.detach().float()
        C = cross_covariance(V, T)
        svd = torch.linalg.svd(C, full_matrices=False)  # (U, σ, Wᵀ); σ descending
        k = energy_rank(svd[1], self.energy, self.k) if self.mode == "dynamic" else self.k
        P_v, P_t, S = soft_projectors(C, k, self.strength, svd=svd)
        self.P_v.copy_(P_v)
        self.P_t.copy_(P_t)
        self.current_rank = k
        after = torch.linalg.svdvals(P_v.T @ C @ P_t)  # C̃ of Theorem 5, measured not assumed
        self.history.append({"epoch": epoch, "k": k, "before": S.cpu().tolist(), "after": after.cpu().tolist()})

    def maybe_refresh(self, V: torch.Tensor, T: torch.Tensor, *, epoch: int) -> bool:
        """Refresh if :meth:`due`; returns whether it did."""
        if not self.due(epoch):
            return False
        self.refresh(V, T, epoch=epoch)
        return True

    def forward(self, V: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10: Ṽ = V P_v, T̃ = T P_t (identity when the projection is off)."""
        if not self.active:
            return V, T
        return V @ self.P_v.to(V.dtype), T @ self.P_t.to(T.dtype)

    # torch includes these in state_dict(), so checkpoints carry the rank and spectrum history.
    def get_extra_state(self) -> dict[str, Any]:
        return {"current_rank": self.current_rank, "history": list(self.history)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.current_rank = int(state["current_rank"])
        self.history = list(state["history"])


class ProjectionArray(nn.Module):
    """One :class:`CrossModalProjection` per member of a model array, applied to member stacks at once.

    Members may differ in every projection setting (mode, k, λ, ρ, τ); a member whose projection is off
    keeps identity projectors, which leave its rows exactly as they are. ``forward`` multiplies the
    ``(R, n, d)`` stacks by the ``(R, d, d)`` stacked projectors in one batched product.

    Example:
        >>> import torch
        >>> from clear_tune.config import ProjectionConfig
        >>> array = ProjectionArray(8, 6, [ProjectionConfig(k=2), ProjectionConfig(mode="off")])
        >>> V, T = torch.randn(2, 50, 8), torch.randn(2, 50, 6)
        >>> array.maybe_refresh(V, T, epoch=1)
        >>> [len(h) for h in array.histories()], bool(torch.equal(array(V, T)[0][1], V[1]))
        ([1, 0], True)
    """

    def __init__(self, d_v: int, d_t: int, settings: list[Any]) -> None:
        super().__init__()
        self.members = nn.ModuleList(
            CrossModalProjection(
                d_v, d_t, mode=s.mode, k=s.k, strength=s.strength, energy=s.energy, refresh_every=s.refresh_every
            )
            for s in settings
        )
        self._stacked: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._restack())

    @property
    def active(self) -> bool:
        return any(member.active for member in self._each())

    def _each(self) -> list[CrossModalProjection]:
        """The members, typed (to a type checker an ``nn.ModuleList`` holds plain ``nn.Module``s)."""
        return cast("list[CrossModalProjection]", list(self.members))

    def _restack(self) -> None:
        self._stacked = (torch.stack([m.P_v for m in self._each()]), torch.stack([m.P_t for m in self._each()]))

    def maybe_refresh(self, V: torch.Tensor, T: torch.Tensor, *, epoch: int) -> None:
        """Refresh every member that is due at ``epoch`` from its rows of ``V (R, N, d_v)``, ``T (R, N, d_t)``."""
        # each member's rows contiguous, so the column means reduce in the order a member alone would
        if any(
            [
                member.maybe_refresh(V[m].contiguous(), T[m].contiguous(), epoch=epoch)
                for m, member in enumerate(self._each())
            ]
        ):
            self._restack()

    def due(self, epoch: int) -> bool:
        return any(member.due(epoch) for member in self._each())

    def histories(self) -> list[list[dict[str, Any]]]:
        return [list(member.history) for member in self._each()]

    def keep(self, index: list[int]) -> None:
        """Keep only the members at ``index`` (in that order)."""
        self.members = nn.ModuleList(self.members[i] for i in index)
        self._restack()

    def forward(self, V: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 per member: ``(R, n, d_v), (R, n, d_t)`` -> the same shapes."""
        if self._stacked is None or self._stacked[0].device != V.device:
            self._restack()
        assert self._stacked is not None  # set by _restack
        P_v, P_t = self._stacked
        return torch.matmul(V, P_v.to(V.dtype)), torch.matmul(T, P_t.to(T.dtype))
