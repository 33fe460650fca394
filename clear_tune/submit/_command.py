"""The driver command every submitter runs: ``python -m clear_tune.run SPEC [--address ...] ...``.

Kept in one place so ``ray-job``, ``slurm`` and ``kuberay`` start exactly the same search.

Example:
    >>> from clear_tune.submit import run_command
    >>> run_command("search_spaces/smoke.yaml", address="auto", results="/shared/results")
    ['python', '-m', 'clear_tune.run', 'search_spaces/smoke.yaml', '--address', 'auto', '--results', '/shared/results']
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from clear_tune.errors import SpecError


def run_command(
    spec: str,
    *,
    python: str = "python",
    address: str | None = None,
    results: str | None = None,
    resume: bool = False,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The argv of the search driver (``python -m clear_tune.run``) for ``spec``."""
    argv = [python, "-m", "clear_tune.run", spec]
    if address:
        argv += ["--address", address]
    if results:
        argv += ["--results", results]
    if resume:
        argv.append("--resume")
    argv += list(extra_args or [])
    return argv


def shell_join(argv: list[str]) -> str:
    """``argv`` as one POSIX shell line (each part quoted only where it needs it)."""
    return shlex.join(argv)


def check_spec_file(
    spec: str | os.PathLike[str],
    *,
    inside: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    plugins_inside: str | os.PathLike[str] | None = None,
) -> Path:
    """Check ``spec`` is a readable YAML mapping (and lies inside ``inside``), and that the plugin files and MMRec
    trees it names exist (relative to ``base``, the folder the driver runs in) and lie inside ``plugins_inside``
    (default ``inside``), which is what travels with the job; return its resolved path.

    A cheap local check so a typo fails here in one line rather than minutes later on the cluster;
    the full validation happens in the driver (``clear_tune.spec``).
    """
    path = Path(spec)
    if not path.is_file():
        raise SpecError(
            f"spec file {str(spec)!r} not found; pass the path of a search-space YAML such as search_spaces/smoke.yaml"
        )
    try:
        loaded: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(
            f"{spec}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the file and submit again"
        ) from None
    if not isinstance(loaded, dict):
        raise SpecError(f"{spec}: a search spec must be a YAML mapping at the top level, got {type(loaded).__name__}")
    resolved = path.resolve()
    if inside is not None:
        root = Path(inside).resolve()
        if not resolved.is_relative_to(root):
            raise SpecError(
                f"spec {str(spec)!r} is outside the working dir {str(root)!r} that is shipped; "
                "move it under the working dir or pass --working-dir"
            )
    plugins_inside = plugins_inside if plugins_inside is not None else inside
    check_plugin_paths(
        loaded, base=Path(base or "."), inside=Path(plugins_inside) if plugins_inside is not None else None
    )
    return resolved


def check_plugin_paths(spec: dict[str, Any], *, base: Path, inside: Path | None) -> list[Path]:
    """The plugin files and MMRec trees ``spec`` names (``plugins:``, ``file.py:Class`` backbones), checked to exist
    under ``base`` and, when ``inside`` is given (the working dir a Ray job ships), to lie inside it. Module
    plugins are not checked here: the cluster's environment must provide them, as it provides clear_tune."""
    named: list[tuple[str, str]] = []
    for i, entry in enumerate(spec.get("plugins") or []):
        if isinstance(entry, dict) and "mmrec" in entry:
            named.append((f"plugins[{i}].mmrec", str(entry["mmrec"])))
        elif isinstance(entry, str) and (entry.endswith(".py") or "/" in entry):
            named.append((f"plugins[{i}]", entry))
    for i, backbone in enumerate(spec.get("backbones") or []):
        module, sep, _ = str(backbone).partition(":")
        if sep and (module.endswith(".py") or "/" in module):
            named.append((f"backbones[{i}]", module))
    paths = []
    for where, entry in named:
        path = (base / entry).resolve()
        if not path.exists():
            raise SpecError(
                f"{where}: {entry} does not exist under {base.resolve()}, where the driver runs; fix the path"
            )
        if inside is not None and not path.is_relative_to(inside.resolve()):
            raise SpecError(
                f"{where}: {entry} lies outside the working dir {str(inside.resolve())!r} that is shipped "
                "with the job; move it under the working dir (or install it on the cluster as a package)"
            )
        paths.append(path)
    return paths


def experiment_name(spec: str | os.PathLike[str]) -> str:
    """The spec's ``experiment`` (or ``name``) field, else the file stem: used for job names."""
    loaded = yaml.safe_load(Path(spec).read_text()) or {}
    name = loaded.get("experiment") or loaded.get("name") or Path(spec).stem
    return str(name)
