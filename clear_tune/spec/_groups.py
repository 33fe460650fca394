"""Fused trials: the grid's trials grouped into model arrays that train as one Ray trial (DESIGN.md §6).

Trials whose configs share everything but their projection and ``reg_weight``
(:meth:`~clear_tune.config.TrainConfig.fusion_key`: same data, backbone, seed and trainer settings) see the
same batches, negatives and dropout masks, so they can train as the members of one model array
(:class:`~clear_tune.train.Trainer` with several configs). Groups are formed in launch order, at most
``fusion.max_members`` members each; every member keeps its own trial key and record. A trial with no
compatible partner, or a spec that cannot fuse, runs as a group of one (its group key is its own key).

``max_members: auto`` sizes groups from the device: on a CPU, :func:`cpu_members` (:data:`CPU_MEMBERS`, or
:data:`CPU_MEMBERS_LARGE` when the raw-feature product is large: BENCHMARKS.md, *Fused trials*); on a GPU, as
many members as :func:`member_bytes` estimates fit in 80 % of the free memory of the GPU share a trial gets (the
driver's GPU, or 16 GiB when it has none), at most :data:`GPU_MEMBERS`.

Example:
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.spec import TrialPlan
    >>> from clear_tune.spec._groups import group_plans
    >>> plans = [TrialPlan("full", f"t{k}", TrainConfig(projection={"k": k})) for k in (2, 4, 8)]
    >>> [len(g.plans) for g in group_plans(plans, max_members=2)]
    [2, 1]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from clear_tune.spec._spec import TrialPlan, key_part

# CPU (BENCHMARKS.md, "members per array"): on small data an array of 8-16 members trains each member up to
# 1.3x faster than alone, and a group pays Ray's per-trial start-up and the data build once; at Baby scale the
# raw-feature GEMMs are compute-bound already, 4 members gave 1.14x per member and 10 members 0.78x.
CPU_MEMBERS = 8
CPU_MEMBERS_LARGE = 4
LARGE_FEATURE_WORK = 1e8  # items x raw feature width x emb_dim of one member's encoder product (Baby: 2e9)
GPU_MEMBERS = 32


@dataclass(frozen=True)
class TrialGroup:
    """One Ray trial: the plans of its members (one for an unfused trial) and a key stable across ``--resume``."""

    key: str
    plans: tuple[TrialPlan, ...]

    def to_param(self) -> dict[str, Any]:
        """The JSON-able form handed to Ray Tune as one grid point."""
        return {"key": self.key, "members": [plan.to_param() for plan in self.plans]}

    @staticmethod
    def from_param(param: dict[str, Any]) -> TrialGroup:
        return TrialGroup(param["key"], tuple(TrialPlan.from_param(p) for p in param["members"]))


def group_key(plans: list[TrialPlan]) -> str:
    """A member's own key for a group of one; ``group-<backbone>-s<seed>-<n>m-<hash>`` otherwise."""
    if len(plans) == 1:
        return plans[0].key
    cfg = plans[0].config
    digest = hashlib.sha1("|".join(p.key for p in plans).encode()).hexdigest()[:8]
    return f"group-{key_part(cfg.backbone)}-s{cfg.seed}-{len(plans)}m-{digest}"


def group_plans(plans: list[TrialPlan], *, max_members: int) -> list[TrialGroup]:
    """``plans`` in groups of compatible configs (equal :meth:`TrainConfig.fusion_key`), at most ``max_members``
    each, in the order their first member comes; ``max_members=1`` leaves every plan alone."""
    open_groups: dict[str, list[TrialPlan]] = {}
    ordered: list[list[TrialPlan]] = []
    for plan in plans:
        key = plan.config.fusion_key()
        group = open_groups.get(key)
        if group is None or len(group) >= max_members:
            group = open_groups[key] = []
            ordered.append(group)
        group.append(plan)
    return [TrialGroup(group_key(group), tuple(group)) for group in ordered]


def member_bytes(
    *,
    n_users: int,
    n_items: int,
    emb_dim: int,
    d_raw: int,
    train_raw_features: bool,
    eval_batch_users: int,
    layers: int = 3,
) -> int:
    """A rough estimate of one member's GPU memory: parameters with their gradient and Adam's two moments
    (user/item tables, encoders, raw features when trained), propagated activations kept for backward,
    and one evaluation chunk of scores."""
    params = 3 * (n_users + n_items) * emb_dim + d_raw * emb_dim + (n_items * d_raw if train_raw_features else 0)
    activations = 4 * (n_users + n_items) * emb_dim * (layers + 2) + 2 * n_items * emb_dim
    scores = eval_batch_users * n_items
    return 4 * (4 * params + activations + scores)


def cpu_members(*, feature_work: float) -> int:
    """``max_members: auto`` on a CPU, from one member's raw-feature product (``items × d_raw × emb_dim``)."""
    return CPU_MEMBERS_LARGE if feature_work >= LARGE_FEATURE_WORK else CPU_MEMBERS


def auto_members(*, gpu_fraction: float, per_member_bytes: int) -> int:
    """``max_members: auto``: :data:`CPU_MEMBERS` without a GPU; with one, what fits in 80 % of a GPU share."""
    if gpu_fraction <= 0:
        return CPU_MEMBERS
    free = 16 * 2**30
    try:
        import torch

        if torch.cuda.is_available():
            free = torch.cuda.mem_get_info()[0]
    except Exception:  # no usable CUDA here: keep the 16 GiB assumption
        pass
    return max(1, min(GPU_MEMBERS, int(0.8 * free * min(gpu_fraction, 1.0) // max(per_member_bytes, 1))))


def fusion_blocker(settings: Any) -> str | None:
    """Why a spec's trials run unfused (one line), or None when compatible trials fuse."""
    if not settings.fusion.enabled:
        return "fusion is disabled in the spec (fusion: {enabled: false})"
    if settings.scheduler.kind == "hyperband":
        return "Ray's hyperband pauses and resumes whole trials, so members of one array could not stop apart"
    if settings.fusion.max_members == 1:
        return "fusion.max_members is 1"
    return None


def members_per_group(spec: Any, datasets: dict[str, Any] | None = None) -> int:
    """Members per group: ``fusion.max_members``, or for ``auto`` the device's size: on a CPU from the raw-feature
    work (:func:`cpu_members`), on a GPU from its free memory (:func:`auto_members`). ``datasets`` (by
    :func:`clear_tune.tune.dataset_key`) size ``auto``; without them a CPU spec gets :data:`CPU_MEMBERS`."""
    s = spec.settings
    if fusion_blocker(s) is not None:
        return 1
    if s.fusion.max_members != "auto":
        return int(s.fusion.max_members)
    if not datasets:
        return CPU_MEMBERS if s.resources.gpus <= 0 else auto_members(gpu_fraction=s.resources.gpus, per_member_bytes=1)

    def raw_width(ds: Any) -> int:
        return sum(f.shape[1] for f in (ds.image_feat, ds.text_feat) if f is not None)

    if s.resources.gpus <= 0:
        work = max(ds.n_items * raw_width(ds) for ds in datasets.values())
        return cpu_members(feature_work=work * spec.trainer.emb_dim)
    largest = max(datasets.values(), key=lambda ds: ds.n_users + ds.n_items)
    needed = member_bytes(
        n_users=largest.n_users,
        n_items=largest.n_items,
        emb_dim=spec.trainer.emb_dim,
        d_raw=raw_width(largest),
        train_raw_features=True,
        eval_batch_users=spec.trainer.eval_batch_users,
    )
    return auto_members(gpu_fraction=s.resources.gpus, per_member_bytes=needed)
