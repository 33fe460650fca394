"""``python -m clear_tune.data``: download an MMRec dataset, or print a dataset's statistics.

Examples::

    python -m clear_tune.data download baby --root data/      # MMRec's Google Drive folder (needs gdown)
    python -m clear_tune.data download baby --root data/ --url https://host/baby.zip --sha256 HEX
    python -m clear_tune.data stats synthetic
    python -m clear_tune.data stats semi:../shared/data/amazon/baby/baby.inter --option seed=1
    python -m clear_tune.data stats mmrec:data/baby --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from clear_tune._cli_errors import run_cli
from clear_tune.data._download import DEFAULT_URLS, MMREC_DRIVE_FOLDER, download
from clear_tune.data._source import SOURCE_FORMS, load_dataset
from clear_tune.errors import DataError


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--option {pair!r} must look like KEY=VALUE, e.g. --option seed=1")
        options[key.strip()] = value.strip()
    return options


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 2, like every other user error
        raise DataError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m clear_tune.data", description="Datasets for clear-tune.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    known = ", ".join(sorted(DEFAULT_URLS))
    dl = sub.add_parser(
        "download", help="download, verify, unpack and validate an MMRec dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Download, verify, unpack and validate an MMRec dataset into ROOT/NAME\n"
            "(NAME.inter, image_feat.npy, text_feat.npy).\n\n"
            f"Default source for {known}: MMRec's Google Drive folder\n"
            f"  {MMREC_DRIVE_FOLDER}\n"
            "fetched with gdown, an optional dependency:\n"
            "  pip install 'clear-tune[download]'\n"
            "  (from a checkout: pip install -c constraints.txt -e '.[download]')\n"
            "--url (or CLEAR_TUNE_DATA_URL_NAME) fetches from a mirror instead: a zip or tar.gz\n"
            "over http(s) or file://, resumed with HTTP Range after a dropped connection."
        ),
    )  # fmt: skip
    dl.add_argument("name", help=f"dataset name: {known}, or any name with --url")
    dl.add_argument("--root", default="data", help="folder that receives ROOT/NAME (default: data)")
    dl.add_argument("--url", help="mirror: archive URL (zip or tar.gz; http(s) or file://) or a Google Drive "
                                  "folder/file link, instead of MMRec's Google Drive folder")  # fmt: skip
    dl.add_argument("--sha256", help="expected SHA-256 of the archive (hex); verified when given")
    dl.add_argument("--force", action="store_true",
                    help="download again even if ROOT/NAME is already valid (discards partial downloads)")  # fmt: skip
    dl.add_argument("--retries", type=int, default=3, help="automatic resumes after a dropped connection")
    dl.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    dl.add_argument("--keep-archive", action="store_true", help="keep the archive under ROOT/.downloads")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")

    st = sub.add_parser("stats", help="print users, items, interactions per split, sparsity, feature dims")
    st.add_argument("source", help=f"data source: {SOURCE_FORMS}")
    st.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="generator/loader option, repeatable (e.g. --option seed=1)")  # fmt: skip
    st.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "download":
        folder = download(
            args.name, root=args.root, url=args.url, sha256=args.sha256, force=args.force, retries=args.retries,
            timeout=args.timeout, keep_archive=args.keep_archive, progress=not args.quiet,
        )  # fmt: skip
        print(folder)
        return 0
    dataset = load_dataset(args.source, **_parse_options(args.option))
    if args.json:
        print(json.dumps({**dataset.stats(), "provenance": dataset.provenance}, default=str))
        return 0
    stats = dataset.stats()
    features = {
        "synthetic": "GENERATED (synthetic data with planted cross-modal redundancy)",
        "semi-synthetic": "GENERATED (planted redundancy) on a REAL interaction graph",
        "mmrec": "from files" if dataset.has_features else "none (interactions only)",
    }[dataset.kind]
    lines = [
        f"dataset       {stats['name']} ({stats['kind']})",
        f"source        {dataset.provenance.get('source', '?')}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}",
        f"interactions  {stats['interactions']:,} "
        f"(train {stats['train']:,} / valid {stats['valid']:,} / test {stats['test']:,})",
        f"sparsity      {stats['sparsity']:.4%}",
        f"features      {features}"
        + ("" if stats["d_v"] is None else f": image {stats['d_v']}-d, text {stats['d_t']}-d"),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
