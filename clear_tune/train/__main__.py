"""``python -m clear_tune.train``: train one config, print one JSON record.

The dataset description and a per-epoch progress bar go to stderr; stdout gets exactly one JSON object
(:meth:`clear_tune.train.Trainer.result`). Defaults come from :class:`~clear_tune.config.TrainConfig`,
so a flag left out means the paper's protocol.

Example:
    python -m clear_tune.train --data synthetic --data-option n_users=500 --backbone bpr \\
        --rank-mode off --epochs 5 --json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn, cast

import yaml
from pydantic import BaseModel, ValidationError

from clear_tune._cli_errors import run_cli
from clear_tune.config import ProjectionConfig, TrainConfig
from clear_tune.errors import SpecError
from clear_tune.records import to_json


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line :class:`SpecError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise SpecError(f"{message} (see python -m clear_tune.train --help)")


def _default(model: type[BaseModel], field: str) -> Any:
    info = model.model_fields[field]
    # the config models' factories take no arguments (pydantic also allows ones taking the validated data)
    return cast(Callable[[], Any], info.default_factory)() if info.default_factory else info.default


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (so ``3`` is an int, ``0.5`` a float, ``true`` a bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def _threads(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    T, P = TrainConfig, ProjectionConfig
    p = _Parser(
        prog="python -m clear_tune.train",
        description="Train and evaluate one CLEAR-tune config; prints the dataset, a progress bar (stderr) "
        "and one JSON result record (stdout). Defaults are the paper's protocol.",
        epilog="example: python -m clear_tune.train --data synthetic --backbone clear --k 8 --strength 0.9 "
        "--epochs 50 --checkpoint results/run.ckpt   (bad input: one 'error:' line, exit status 2)",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="SOURCE",
        help=f"synthetic | semi:PATH/name.inter | mmrec:ROOT/NAME (default {_default(T, 'data')})",
    )
    data.add_argument(
        "--data-option",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, repeatable (e.g. n_users=500 for synthetic data)",
    )

    model = p.add_argument_group("model and CLEAR projection")
    model.add_argument(
        "--backbone", metavar="NAME", help=f"model name, e.g. clear, bpr, lightgcn (default {_default(T, 'backbone')})"
    )
    model.add_argument(
        "--rank-mode",
        choices=["fixed", "dynamic", "off"],
        help=f"projection rank: fixed k, dynamic by energy, or off (default {_default(P, 'mode')})",
    )
    model.add_argument("--k", type=int, help=f"redundancy rank k, the cap in dynamic mode (default {_default(P, 'k')})")
    model.add_argument(
        "--strength",
        type=float,
        metavar="LAMBDA",
        help=f"projection strength λ in [0, 1] (default {_default(P, 'strength')})",
    )
    model.add_argument(
        "--energy", type=float, metavar="RHO", help=f"dynamic mode energy threshold ρ (default {_default(P, 'energy')})"
    )
    model.add_argument(
        "--refresh-every",
        type=int,
        metavar="TAU",
        help=f"τ: recompute projectors every τ epochs (default {_default(P, 'refresh_every')})",
    )
    model.add_argument("--emb-dim", type=int, metavar="D", help=f"embedding size (default {_default(T, 'emb_dim')})")
    model.add_argument("--reg-weight", type=float, metavar="W", help="L2 weight (default: the backbone's own)")
    model.add_argument(
        "--model-option",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="backbone option, repeatable (e.g. n_layers=3)",
    )
    model.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py|pkg.module|mmrec=PATH",
        help="import a backbone plugin first, repeatable: a file, a module, or an MMRec-API source "
        "tree whose models become mmrec:NAME (README, 'Your own model')",
    )
    model.add_argument(
        "--clear-at",
        nargs=2,
        metavar=("IMAGE", "TEXT"),
        help="for a single-model or MMRec-API backbone: the two submodules (or weight parameters) "
        "whose outputs are the encoded item features, where CLEAR acts (e.g. image_trs text_trs)",
    )

    opt = p.add_argument_group("training and evaluation")
    opt.add_argument("--epochs", type=int, metavar="N", help=f"maximum epochs (default {_default(T, 'epochs')})")
    opt.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="stop after this many evaluations without a better valid "
        f"select metric (default {_default(T, 'patience')})",
    )
    opt.add_argument("--lr", type=float, help=f"Adam learning rate (default {_default(T, 'lr')})")
    opt.add_argument(
        "--batch-size", type=int, metavar="N", help=f"mini-batch size (default {_default(T, 'batch_size')})"
    )
    opt.add_argument(
        "--eval-every", type=int, metavar="N", help=f"evaluate every N epochs (default {_default(T, 'eval_every')})"
    )
    opt.add_argument(
        "--topk",
        type=int,
        nargs="+",
        metavar="K",
        help=f"cut-offs for Recall/NDCG/Precision@K (default {' '.join(map(str, _default(T, 'topk')))})",
    )
    opt.add_argument(
        "--select-metric",
        metavar="METRIC@K",
        help=f"valid metric for early stopping (default {_default(T, 'select_metric')})",
    )
    opt.add_argument(
        "--eval-batch-users",
        type=int,
        metavar="N",
        help=f"users scored per evaluation chunk (default {_default(T, 'eval_batch_users')})",
    )
    opt.add_argument("--seed", type=int, help=f"random seed (default {_default(T, 'seed')})")
    opt.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available (default auto)")
    opt.add_argument(
        "--threads",
        type=_threads,
        metavar="N|auto",
        help="torch intra-op threads; auto (the default): chosen before every epoch from the CPUs "
        "other processes leave free (one for small batches), so the run never collapses "
        "beside other jobs",
    )
    opt.add_argument(
        "--amp",
        action="store_true",
        default=None,
        help="bfloat16 autocast (CUDA, or CPUs with native bf16); graph propagation stays float32",
    )

    run = p.add_argument_group("run")
    run.add_argument("--checkpoint", metavar="PATH", help="write a full checkpoint here after every epoch")
    run.add_argument("--resume", metavar="PATH", help="continue from this checkpoint (same config)")
    run.add_argument("--json", action="store_true", help="print only the JSON record (no description, no bar)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A validated :class:`TrainConfig` from parsed flags; a bad value is one :class:`SpecError` line."""
    fields = {
        name: getattr(args, name)
        for name in (
            "data",
            "backbone",
            "emb_dim",
            "reg_weight",
            "epochs",
            "patience",
            "lr",
            "batch_size",
            "eval_every",
            "topk",
            "select_metric",
            "eval_batch_users",
            "seed",
            "device",
            "amp",
            "threads",
        )
        if getattr(args, name) is not None
    }
    projection = {
        name: value
        for name, value in (
            ("mode", args.rank_mode),
            ("k", args.k),
            ("strength", args.strength),
            ("energy", args.energy),
            ("refresh_every", args.refresh_every),
        )
        if value is not None
    }
    if args.clear_at:
        fields["clear_at"] = {"image": args.clear_at[0], "text": args.clear_at[1]}
    try:
        return TrainConfig(
            projection=projection, data_options=dict(args.data_option), model_options=dict(args.model_option), **fields
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in exc.errors())
        raise SpecError(f"invalid config: {problems}") from None


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from clear_tune._plugins import load_plugins, parse_plugin_argument, resolve_plugins
    from clear_tune.train import Trainer

    args = build_parser().parse_args(argv)
    load_plugins(resolve_plugins([parse_plugin_argument(p) for p in args.plugin], where="--plugin"))
    config = config_from_args(args)
    trainer = Trainer(config)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    if not args.json:
        print(trainer.dataset.describe(), file=sys.stderr)

    bar = tqdm(
        total=config.epochs, initial=trainer.epoch, unit="epoch", file=sys.stderr, disable=args.json, dynamic_ncols=True
    )
    metric = config.select_metric

    def on_epoch(t: Trainer, report: Any) -> None:
        last = t.curve[-1]["valid"][metric] if t.curve else float("nan")
        bar.set_postfix_str(
            f"loss {report.loss:.4f} valid {metric} {last:.4f} best {report.best_valid:.4f}@{report.best_epoch}"
        )
        bar.update(1)
        if args.checkpoint:
            t.save_checkpoint(args.checkpoint)

    try:
        [result] = trainer.fit(on_epoch)
    finally:
        bar.close()
    print(to_json(result, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
