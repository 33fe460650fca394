"""Full-ranking top-K evaluation: Recall@K, NDCG@K and Precision@K over all items.

Every evaluated user is scored against every item (``U_b @ I.T`` in chunks of users), the user's train
items are masked to ``-inf``, and the top ``max(K)`` items are compared with the user's held-out items.
Only users with at least one held-out item count; each metric is the mean over those users:

* Recall@K    = hits in top-K / |held-out|
* Precision@K = hits in top-K / K
* NDCG@K      = DCG@K / IDCG@K with DCG = Σ_{rank r ≤ K, hit} 1 / log2(r + 1) and IDCG the DCG of a
  perfect list of min(|held-out|, K) hits.

The masks are built once (:class:`RankingEvaluator`); evaluating is a handful of batched matrix
products, ``torch.topk`` and one ``torch.searchsorted`` per chunk and split, with no Python loop over
users. Valid and test can be scored in one pass, as they share the ranking.

Example:
    >>> import numpy as np, torch
    >>> from clear_tune.metrics import RankingEvaluator
    >>> train = np.array([[0, 0], [1, 1]])            # user 0 bought item 0, user 1 item 1
    >>> valid = np.array([[0, 2], [1, 0]])
    >>> ev = RankingEvaluator(n_users=2, n_items=3, train=train, heldout=valid, topk=[1, 2])
    >>> U = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> I = torch.tensor([[3.0, 0.0], [0.0, 3.0], [2.0, 1.0]])
    >>> [evaluation] = ev(U, I)                       # one Evaluation per member (here one)
    >>> evaluation.metrics["heldout"]["recall@1"]     # user 0 ranks item 2 first (item 0 masked); so does user 1
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clear_tune.exposure import ExposureTally

METRICS = ("recall", "ndcg", "precision")
HELDOUT = "heldout"  # the split's name when the evaluator is given one array of held-out pairs


@dataclass(frozen=True)
class Evaluation:
    """One member's evaluation: ``metrics[split][metric@K]`` means over the split's users (ranking metrics and, by
    default, the beyond-accuracy ones), and with ``per_user=True`` the per-user values behind the ranking means:
    ``per_user[split] = {"users": (n,) int32, "recall@20": (n,) float32, ...}`` (precision left out)."""

    metrics: dict[str, dict[str, float]]
    per_user: dict[str, dict[str, np.ndarray]] | None = None


def short_name(metric: str) -> str:
    """The one short spelling of a metric: ``"recall@20"`` -> ``"R@20"`` (``ndcg`` -> N, ``precision`` -> P; other
    metrics keep their name)."""
    kind, _, k = metric.partition("@")
    return {"recall": "R", "ndcg": "N", "precision": "P"}.get(kind, kind) + (f"@{k}" if k else "")


def metric_names(topk: Sequence[int]) -> list[str]:
    """``["recall@10", "recall@20", "ndcg@10", ...]`` in a fixed order."""
    return [f"{m}@{k}" for m in METRICS for k in sorted(set(topk))]


def ranking_metric_values(hits: torch.Tensor, n_heldout: torch.Tensor, topk: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user metric values from a ranked hit matrix.

    ``hits`` is ``(..., B, L)`` bool: whether the item at rank ``r`` (0-based) is held out for that user,
    for the top ``L >= 1`` ranks (a leading axis, if any, is the member axis of a model array);
    ``n_heldout`` is ``(B,)`` with every entry >= 1. For ``K > L`` (fewer items than K) the missing ranks
    count as misses. Returns float64 tensors of shape ``(..., B)`` keyed like :func:`metric_names`.
    """
    hits = hits.to(torch.float64)
    n_heldout = n_heldout.to(torch.float64)
    L = hits.shape[-1]
    ranks = torch.arange(max(max(topk), L), device=hits.device, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 2.0)  # (max K,) 1/log2(r+1) for 1-based rank r
    ideal_dcg = torch.cumsum(discount, 0)  # ideal_dcg[n-1] = DCG of n hits at the top

    values: dict[str, torch.Tensor] = {}
    for k in sorted(set(topk)):
        top = hits[..., : min(k, L)]  # (..., B, min(K, L))
        n_hits = top.sum(-1)  # (..., B)
        dcg = (top * discount[: top.shape[-1]]).sum(-1)  # (..., B)
        idcg = ideal_dcg[(torch.clamp(n_heldout, max=k) - 1).long()]  # (B,)
        values[f"recall@{k}"] = n_hits / n_heldout
        values[f"ndcg@{k}"] = dcg / idcg
        values[f"precision@{k}"] = n_hits / k
    return values


def ranking_metric_sums(hits: torch.Tensor, n_heldout: torch.Tensor, topk: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-metric sums over users of :func:`ranking_metric_values`: float64 tensors of shape ``(...)``."""
    return {name: value.sum(-1) for name, value in ranking_metric_values(hits, n_heldout, topk).items()}


def _csr_keys(pairs: np.ndarray, row_of_user: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (eval-user order) and sorted ``row * n_items + item`` keys of the pairs whose user is evaluated."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rows = row_of_user[pairs[:, 0]]
    keep = rows >= 0
    keys = np.unique(rows[keep] * n_items + pairs[keep, 1])  # sorted, duplicates removed
    return keys // n_items, keys


class RankingEvaluator:
    """Full-ranking evaluation of one or more held-out splits, masks built once.

    ``train`` is an ``(E, 2)`` array of ``(user, item)`` rows, masked out of every ranking. ``heldout`` is
    one such array, or a mapping ``{split name: array}`` to rank once and score several splits (valid and
    test share the train mask, so one pass does both). Users with no held-out item in a split do not count
    for it. ``batch_users`` users are scored at once (memory ``batch_users × n_items`` floats; with R member
    embeddings ``batch_users / R`` users of each member).

    Call it with ``(n_users, D)`` user and ``(n_items, D)`` item embeddings, or with member stacks
    ``(R, n_users, D)`` / ``(R, n_items, D)``; it returns one :class:`Evaluation` per member, always a list. A single
    held-out array is the split :data:`HELDOUT`. Metric names: :func:`metric_names`, plus the beyond-accuracy ones
    (:mod:`clear_tune.exposure`) when there is a split mapping and ``beyond_accuracy`` is on.
    """

    def __init__(
        self,
        *,
        n_users: int,
        n_items: int,
        train: np.ndarray,
        heldout: np.ndarray | Mapping[str, np.ndarray],
        topk: Sequence[int] = (10, 20),
        batch_users: int = 4096,
        device: torch.device | str = "cpu",
        per_user: bool = False,
        beyond_accuracy: bool = True,
    ) -> None:
        if not topk or min(topk) < 1:
            raise ValueError(f"topk must be positive integers, got {list(topk)}")
        self.n_users, self.n_items = n_users, n_items
        self.topk = sorted(set(int(k) for k in topk))
        self.batch_users = int(batch_users)
        self.device = torch.device(device)
        self._single = not isinstance(heldout, Mapping)
        splits = {HELDOUT: heldout} if self._single else dict(heldout)
        splits = {name: np.asarray(pairs, dtype=np.int64).reshape(-1, 2) for name, pairs in splits.items()}

        # Rank only users with something held out in some split, in sorted id order ("rows").
        users = np.unique(np.concatenate([pairs[:, 0] for pairs in splits.values()]))  # (n_rows,)
        row_of_user = np.full(n_users, -1, dtype=np.int64)
        row_of_user[users] = np.arange(len(users))
        self._users = torch.as_tensor(users, device=self.device)

        # CSR over rows: ``ptr[r]:ptr[r+1]`` slices row r's masked items.
        train_rows, train_keys = _csr_keys(train, row_of_user, n_items)
        self._train_ptr = np.searchsorted(train_rows, np.arange(len(users) + 1)).tolist()
        self._train_rows = torch.as_tensor(train_rows, device=self.device)
        self._train_items = torch.as_tensor(train_keys % n_items, device=self.device)
        # Per split: sorted held-out keys and each row's held-out count (0: the row does not count).
        self._held_keys, self._n_heldout = {}, {}
        for name, pairs in splits.items():
            rows, keys = _csr_keys(pairs, row_of_user, n_items)
            self._held_keys[name] = torch.as_tensor(keys, device=self.device)
            self._n_heldout[name] = torch.as_tensor(np.bincount(rows, minlength=len(users)), device=self.device)
        self.split_sizes = {name: int((n > 0).sum()) for name, n in self._n_heldout.items()}
        self.per_user = per_user and not self._single  # per-user values of each split, beside the means
        self.beyond_accuracy = beyond_accuracy and not self._single
        train_items = np.asarray(train, dtype=np.int64).reshape(-1, 2)
        self._popularity = torch.as_tensor(np.bincount(train_items[:, 1], minlength=n_items), device=self.device)
        self._n_train_users = int(np.unique(train_items[:, 0]).size)

    @property
    def n_eval_users(self) -> int:
        """Users with at least one held-out item (the metrics' denominator); the sum over splits for a mapping."""
        return sum(self.split_sizes.values())

    @torch.no_grad()
    def __call__(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> list[Evaluation]:
        """One :class:`Evaluation` per member of ``(R, n_users, D)``/``(R, n_items, D)`` member stacks (scored
        together, chunk by chunk of users); ``(n_users, D)``/``(n_items, D)`` embeddings are one member."""
        if user_emb.dim() == 2:
            user_emb, item_emb = user_emb.unsqueeze(0), item_emb.unsqueeze(0)
        return self._evaluate_embeddings(user_emb, item_emb)

    @torch.no_grad()
    def evaluate_scores(
        self, member_scores: Callable[[int, torch.Tensor], torch.Tensor], members: int
    ) -> list[Evaluation]:
        """Metrics of ``members`` score functions, one list entry per member: ``member_scores(m, users)`` gives
        member ``m``'s ``(B, n_items)`` scores for ``(B,)`` user ids (a model that ranks by a score function
        rather than by inner products). Members go one after another, ``batch_users`` users at a time."""
        results: list[Evaluation] = []
        for m in range(members):

            def score_chunk(users: torch.Tensor, m: int = m) -> torch.Tensor:
                return member_scores(m, users).to(self.device, torch.float32).unsqueeze(0)  # (1, B, n_items)

            results += self._evaluate(1, score_chunk, chunk=self.batch_users)
        return results

    def _evaluate_embeddings(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> list[Evaluation]:
        members = user_emb.shape[0]
        user_emb = user_emb.to(self.device, torch.float32)
        item_emb_T = item_emb.to(self.device, torch.float32).transpose(1, 2).contiguous()  # (R, D, n_items)

        def score_chunk(users: torch.Tensor) -> torch.Tensor:
            return torch.bmm(user_emb[:, users], item_emb_T)  # (R, B, n_items)

        # members x chunk x n_items scores at most: batch_users' worth
        return self._evaluate(members, score_chunk, chunk=max(1, self.batch_users // members))

    def _evaluate(
        self, members: int, score_chunk: Callable[[torch.Tensor], torch.Tensor], *, chunk: int
    ) -> list[Evaluation]:
        names = metric_names(self.topk)
        totals = {
            split: {name: torch.zeros(members, dtype=torch.float64, device=self.device) for name in names}
            for split in self._held_keys
        }
        tally = (
            ExposureTally(
                self._popularity,
                n_users=self._n_train_users,
                topk=self.topk,
                members=members,
                splits=list(self._held_keys),
            )
            if self.beyond_accuracy
            else None
        )
        kept: dict[str, list[tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {split: [] for split in self._held_keys}
        depth = min(self.topk[-1], self.n_items)
        for start in range(0, self._users.numel(), chunk):
            end = min(start + chunk, self._users.numel())
            scores = score_chunk(self._users[start:end])  # (R, B, n_items)
            lo, hi = self._train_ptr[start], self._train_ptr[end]
            scores[:, self._train_rows[lo:hi] - start, self._train_items[lo:hi]] = -torch.inf
            top_scores, top_items = torch.topk(scores, depth, dim=2)  # (R, B, depth) each
            del scores
            rows = torch.arange(start, end, device=self.device).unsqueeze(1)  # (B, 1)
            query = rows * self.n_items + top_items  # (R, B, depth) keys of the ranked items
            ranked = top_scores > -torch.inf  # (R, B, depth) masked items past the end never count

            for split, keys in self._held_keys.items():
                n_heldout = self._n_heldout[split][start:end]  # (B,)
                counted = n_heldout > 0
                if keys.numel() == 0 or not bool(counted.any()):
                    continue
                # A hit is a ranked item whose (row, item) key is among the split's held-out keys.
                pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
                hits = (keys[pos] == query) & ranked  # (R, B, depth)
                values = ranking_metric_values(hits[:, counted], n_heldout[counted], self.topk)  # (R, b) each
                for name, value in values.items():
                    totals[split][name] += value.sum(-1)
                if tally is not None:
                    tally.add(split, top_items[:, counted], ranked[:, counted])
                if self.per_user:
                    kept[split].append(
                        (
                            self._users[start:end][counted],
                            {n: v.to(torch.float32) for n, v in values.items() if not n.startswith("precision")},
                        )
                    )

        sums = {split: {name: totals[split][name].tolist() for name in names} for split in totals}
        means = [
            {split: {name: sums[split][name][m] / max(self.split_sizes[split], 1) for name in names} for split in sums}
            for m in range(members)
        ]
        if tally is not None:
            for split in sums:
                for name, per_member in tally.result(split, n_users=self.split_sizes[split]).items():
                    for m in range(members):
                        means[m][split][name] = per_member[m]
        return [
            Evaluation(
                means[m],
                {split: _per_user(parts, m) for split, parts in kept.items()} if self.per_user else None,
            )
            for m in range(members)
        ]


def _per_user(parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], member: int) -> dict[str, np.ndarray]:
    """One member's per-user values of one split: ``{"users": (n,) int32, "recall@20": (n,) float32, ...}``."""
    if not parts:
        return {"users": np.zeros(0, dtype=np.int32)}
    out = {"users": torch.cat([users for users, _ in parts]).cpu().numpy().astype(np.int32)}
    for name in parts[0][1]:
        out[name] = torch.cat([values[name][member] for _, values in parts]).cpu().numpy()
    return out


def evaluate_ranking(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    *,
    train: np.ndarray,
    heldout: np.ndarray,
    topk: Sequence[int] = (10, 20),
    batch_users: int = 4096,
) -> dict[str, float]:
    """One-off evaluation of one held-out array: ``{metric@K: float}`` (builds a :class:`RankingEvaluator`)."""
    evaluator = RankingEvaluator(
        n_users=user_emb.shape[0],
        n_items=item_emb.shape[0],
        train=train,
        heldout=heldout,
        topk=topk,
        batch_users=batch_users,
        device=user_emb.device,
    )
    return evaluator(user_emb, item_emb)[0].metrics[HELDOUT]
