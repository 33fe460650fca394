"""Plugins: the files, modules and MMRec-API source trees a spec imports, here and on every Ray worker.

A spec lists them under ``plugins:``::

    plugins:
      - my_models.py                 # a file: imported as module ``my_models`` (its @register_backbone runs)
      - mypkg.models                 # a module or package on the path, or installed
      - {mmrec: ../MMRec/src}        # an MMRec-API source tree: its models become backbones mmrec:NAME
      - {mmrec: ../MENTOR/src, prefix: mentor}   # a second tree under its own prefix: mentor:MENTOR

Paths are relative to the working directory, as data paths are. :func:`resolve_plugins` turns the entries into
:class:`Plugin` objects on the driver, reading what must travel: a file's bytes, a local (not installed)
package's files, a tree's ``*.py`` and ``*.yaml``. The driver hands them to every trial through Ray's object
store, and :meth:`Plugin.load` on a worker imports the original where it exists with the same content (a local
cluster, a shared file system) and otherwise a copy written under ``$CLEAR_TUNE_LOCAL_DIR/plugins/<digest>/``, so a
plugin is importable on every node of a multi-node cluster without a shared file system. Installed packages are
the cluster environment's, as clear-tune itself is. Any problem is one :class:`SpecError` line naming the entry.

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "doc_plugin.py").write_text("VALUE = 41 + 1\\n")
    >>> [plugin] = resolve_plugins([str(folder / "doc_plugin.py")])
    >>> plugin.kind, plugin.load().VALUE
    ('file', 42)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from clear_tune.errors import SpecError, describe_exception

MAX_SHIPPED_BYTES = 64 * 2**20
_SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}
_LOCK = threading.RLock()
_LOADED: dict[tuple[str, str, str, str], Any] = {}


@dataclass(frozen=True)
class Plugin:
    """One ``plugins:`` entry, resolved on the driver: what it is, where it was, and the files that travel."""

    entry: str  # as written, for messages
    kind: str  # "file" | "module" | "mmrec"
    target: str  # absolute path (file, tree) or dotted module name
    prefix: str = "mmrec"  # an MMRec tree's backbone prefix
    files: tuple[tuple[str, bytes], ...] = ()  # relative path -> content: what a worker without the original needs
    digest: str = ""

    def load(self) -> Any:
        """Import the plugin in this process (once): the module, or the registered MMRec tree. A tree takes its
        prefix again at every load, so the spec being loaded decides what ``mmrec:NAME`` means even when an
        earlier spec in this process gave the prefix another tree."""
        key = (self.kind, self.target, self.digest, self.prefix)
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = self._load()
            elif self.kind == "mmrec":
                from clear_tune.models._registry import register_family

                register_family(self.prefix, _LOADED[key].backbone)
            return _LOADED[key]

    def _load(self) -> Any:
        where = f"plugin {self.entry!r}"
        if self.kind == "file":
            path = Path(self.target)
            if not (path.is_file() and _digest(_read_files(path.parent, [path])) == self.digest):
                path = self._materialise() / path.name
            return import_file(path, where=where)
        if self.kind == "module":
            if self.files and importlib.util.find_spec(self.target.split(".")[0]) is None:
                folder = str(self._materialise())
                if folder not in sys.path:
                    sys.path.insert(0, folder)
            return import_module(self.target, where=where)
        from clear_tune.adapters import register_mmrec_tree

        root = Path(self.target)
        if not (root / "configs" / "overall.yaml").is_file():
            root = self._materialise()
        try:
            return register_mmrec_tree(str(root), prefix=self.prefix)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None

    def _materialise(self) -> Path:
        """The shipped files written under ``$CLEAR_TUNE_LOCAL_DIR/plugins/<digest>/`` (once per digest)."""
        base = Path(os.environ.get("CLEAR_TUNE_LOCAL_DIR") or Path.home() / ".cache" / "clear-tune")
        folder = base / "plugins" / self.digest
        done = folder / ".complete"
        if not done.exists():
            for relative, content in self.files:
                path = folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(content)
                os.replace(tmp, path)
            done.touch()
        return folder


def resolve_plugins(entries: list[Any], *, where: str = "plugins") -> list[Plugin]:
    """The spec's ``plugins:`` entries as :class:`Plugin` objects (files read, nothing imported yet)."""
    plugins = []
    for i, entry in enumerate(entries):
        label = f"{where}[{i}]"
        if isinstance(entry, dict):
            plugins.append(_tree(entry, label))
        elif isinstance(entry, str) and entry.strip():
            plugins.append(_file_or_module(entry.strip(), label))
        else:
            raise SpecError(
                f"{label}: {entry!r} is not a plugin; give a file (my_models.py), a module (mypkg.models) "
                "or an MMRec source tree ({mmrec: PATH/TO/MMRec/src})"
            )
    return plugins


def parse_plugin_argument(text: str) -> Any:
    """A command line's ``--plugin`` value as a ``plugins:`` entry: ``FILE.py``, ``pkg.module`` or ``mmrec=PATH``."""
    kind, sep, rest = text.partition("=")
    return {"mmrec": rest} if sep and kind == "mmrec" else text


def load_plugins(plugins: list[Plugin]) -> None:
    """Import every plugin in this process (the driver before Ray starts, each Ray worker before its trial)."""
    for plugin in plugins:
        plugin.load()


def plugin_for_backbone(name: str, *, where: str) -> Plugin | None:
    """The plugin that a ``pkg.module:Class`` or ``path/file.py:Class`` backbone needs on the workers (else None)."""
    module, sep, attribute = name.partition(":")
    if not sep or not attribute or not ("." in module or "/" in module or module.endswith(".py")):
        return None
    return _file_or_module(module, where)


def _file_or_module(entry: str, label: str) -> Plugin:
    if entry.endswith(".py") or "/" in entry or os.sep in entry:
        path = Path(entry).expanduser()
        if not path.is_file():
            raise SpecError(f"{label}: {entry} does not exist (paths are relative to {os.getcwd()}); fix the path")
        path = path.resolve()
        files = _read_files(path.parent, [path])
        return Plugin(entry, "file", str(path), files=files, digest=_digest(files))
    if not all(part.isidentifier() for part in entry.split(".")):
        raise SpecError(f"{label}: {entry!r} is neither a .py file nor a module name like mypkg.models")
    top = entry.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise SpecError(
            f"{label}: no module named {top!r} on the path (sys.path, the working directory {os.getcwd()}) "
            "or installed; install the package or run from the folder that holds it"
        )
    files = ()  # a tuple[tuple[str, bytes], ...], as above
    origin = spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin
    if origin and not _installed(Path(origin)):  # a local package: it travels to the workers
        origin_path = Path(origin)
        root = origin_path if origin_path.is_dir() else origin_path.parent
        paths = [p for p in _walk(root)] if origin_path.is_dir() else [origin_path]
        files = _read_files(root.parent if origin_path.is_dir() else root, paths)
    return Plugin(entry, "module", entry, files=files, digest=_digest(files) if files else "")


def _tree(entry: dict[str, Any], label: str) -> Plugin:
    unknown = sorted(set(entry) - {"mmrec", "prefix"})
    if unknown or "mmrec" not in entry:
        raise SpecError(
            f"{label}: {entry!r} is not a plugin; an MMRec source tree is written "
            "{mmrec: PATH/TO/MMRec/src} (optionally with prefix: NAME)"
        )
    prefix = str(entry.get("prefix", "mmrec"))
    if not prefix.isidentifier():
        raise SpecError(f"{label}.prefix: {prefix!r} must be a name such as mmrec or mentor")
    root = Path(str(entry["mmrec"])).expanduser()
    if not (root / "configs" / "overall.yaml").is_file() or not (root / "models").is_dir():
        raise SpecError(
            f"{label}.mmrec: {entry['mmrec']} is not an MMRec source tree (paths are relative to "
            f"{os.getcwd()}); point it at the folder that holds models/, common/, utils/ and configs/ "
            "(MMRec's src/)"
        )
    root = root.resolve()
    paths = [p for p in _walk(root) if p.suffix in (".py", ".yaml", ".yml")]
    files = _read_files(root, paths)
    return Plugin(f"mmrec={entry['mmrec']}", "mmrec", str(root), prefix=prefix, files=files, digest=_digest(files))


def _walk(root: Path) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        out += [Path(folder) / name for name in sorted(names) if not name.endswith((".pyc", ".pyo"))]
    return out


def _read_files(base: Path, paths: list[Path]) -> tuple[tuple[str, bytes], ...]:
    files, total = [], 0
    for path in paths:
        content = path.read_bytes()
        total += len(content)
        if total > MAX_SHIPPED_BYTES:
            raise SpecError(
                f"plugin files under {base} exceed {MAX_SHIPPED_BYTES // 2**20} MB; keep data out of the "
                "plugin's folder"
            )
        files.append((str(path.relative_to(base)), content))
    return tuple(files)


def _digest(files: tuple[tuple[str, bytes], ...]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for relative, content in files:
        digest.update(relative.encode() + b"\0" + len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()


def _installed(path: Path) -> bool:
    """Whether ``path`` lies in an environment's library folders (site-packages, the standard library)."""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    resolved = path.resolve()
    return any(part in ("site-packages", "dist-packages") for part in resolved.parts) or any(
        resolved.is_relative_to(Path(root).resolve()) for root in roots if root
    )


def import_file(path: Path, *, where: str) -> ModuleType:
    """Import the file at ``path`` as module ``<stem>`` (once); its folder joins ``sys.path`` for its own imports."""
    name = path.stem
    if not name.isidentifier():
        raise SpecError(f"{where}: {path.name} is not an importable module name; rename it (letters, digits, '_')")
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__clear_tune_digest__", None) == _digest(_read_files(path.parent, [path])):
            return existing
        raise SpecError(
            f"{where}: a module named {name!r} is already imported (from "
            f"{getattr(existing, '__file__', '?')}); rename {path.name}"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__clear_tune_digest__ = _digest(_read_files(path.parent, [path]))  # type: ignore[attr-defined]
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SpecError as exc:
        del sys.modules[name]
        raise SpecError(f"{where}: {exc}") from None
    except BaseException as exc:
        del sys.modules[name]
        raise SpecError(f"{where}: importing {path} failed ({describe_exception(exc)}); fix the file") from None
    return module


def import_module(name: str, *, where: str) -> ModuleType:
    """``importlib.import_module(name)``, with one line for what goes wrong."""
    try:
        return importlib.import_module(name)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except BaseException as exc:
        raise SpecError(f"{where}: importing {name} failed ({describe_exception(exc)})") from None


def import_object(reference: str) -> Any:
    """The object named ``pkg.module:Attr`` or ``path/to/file.py:Attr`` (a file already loaded as a plugin is
    reused)."""
    module_name, _, attribute = reference.partition(":")
    where = f"backbone {reference!r}"
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        path = Path(module_name).expanduser()
        loaded = sys.modules.get(path.stem)
        if loaded is not None and hasattr(loaded, "__clear_tune_digest__"):
            module = loaded
        elif path.is_file():
            module = import_file(path.resolve(), where=where)
        else:
            raise SpecError(f"{where}: {module_name} does not exist (paths are relative to {os.getcwd()})")
    else:
        module = import_module(module_name, where=where)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecError(f"{where}: {module_name} has no {attribute!r}")
        target = getattr(target, part)
    return target
