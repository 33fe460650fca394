"""MMRec-API models run as they are: any model of an MMRec source tree (MMRec itself, or a repository built on it).

A spec names the tree once (``plugins: [{mmrec: PATH/TO/MMRec/src}]``) and its models as ``mmrec:NAME``
(``mmrec:FREEDOM``, ``mmrec:LGMRec``). clear-tune imports ``models/<name>.py`` from the user's tree (it never
vendors, installs or imports MMRec itself) and builds what the model's constructor reads:

* the config: MMRec's keys with ``configs/overall.yaml`` then ``configs/model/NAME.yaml`` semantics (MMRec's
  YAML loader), each of the yaml's ``hyper_parameters`` pinned to the trial's value (the first listed value
  unless the trial sets it), then the trial's settings: ``embedding_size`` = ``emb_dim``, ``learning_rate``,
  ``reg_weight``, ``train_batch_size``, ``seed``, ``device``, and any other yaml key through ``model_options``;
* the dataset object: ``dataloader.dataset.get_user_num() / get_item_num()`` and ``inter_matrix(form)`` of
  the train interactions;
* the feature files ``image_feat.npy`` / ``text_feat.npy`` (and ``user_graph_dict.npy`` for models that read one,
  generated vectorised), written once per dataset into a cache folder, model-written caches in a folder of
  the process's own.

Training drives MMRec's loop: ``pre_epoch_processing`` before an epoch, ``calculate_loss`` on MMRec's ``(3, B)``
interaction (users, positives, negatives among train items; ``(2, B)`` when the yaml sets
``use_neg_sampling: False``), summed when it returns a tuple, ``post_epoch_processing`` after, MMRec's Adam
``weight_decay`` and ``learning_rate_scheduler``; ranking goes through ``full_sort_predict`` with clear-tune's
evaluator (valid and test in one pass), and configs are chosen by validation. The yaml's ``hyper_parameters``
are the model's ``preset: mmrec`` grid. CLEAR acts where ``clear_at`` names the two encoders
(:mod:`clear_tune.adapters._hooks`).

Example:
    >>> tree = MMRecTree("tests/fixtures/mmrec_tree")                  # doctest: +SKIP
    >>> sorted(tree.backbone("TinyRec").model_options())[:2]         # doctest: +SKIP
    ['dropout', 'feat_embed_dim']
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml
from torch import nn

from clear_tune.adapters._copies import CopiesArray
from clear_tune.errors import SpecError, TrainingError, describe_exception
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._options import Option

DATASET_NAME = "clear_tune"  # MMRec's config['dataset']: the folder name under data_path
# MMRec keys the harness sets from the trial (never model options)
HARNESS_KEYS = frozenset(
    {
        "embedding_size",
        "learning_rate",
        "reg_weight",
        "hyper_parameters",
        "seed",
        "learning_rate_scheduler",
        "train_batch_size",
        "epochs",
        "stopping_step",
        "eval_step",
    }
)
# MMRec's DualGNN and DRAGON (and MENTOR: result_embed_guide, _v, _t, _n1, _n2) write
# ``nn.Parameter(...).to(self.device)``: on CUDA ``.to`` returns a plain tensor, on a CPU the parameter itself, and
# their first forward then fails assigning a tensor to it. The adapter makes each the plain tensor it is on CUDA (the
# peer kit's shim does the same for MMRec); their first forward overwrites them.
CUDA_ONLY_PLAIN_TENSORS = "result_embed"  # a prefix
# clear-tune's names for MMRec's searched keys
RENAMED = {"learning_rate": "lr", "reg_weight": "reg_weight"}


class _MMRecLoader(yaml.FullLoader):
    """MMRec's YAML loader (``utils/configurator.py``): floats such as ``1e-4`` read as floats, not strings."""


_MMRecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class MMRecConfig:
    """What MMRec's ``Config`` object is to a model: ``config['key']`` (None when absent), ``config[key] = v``,
    ``in``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.final_config_dict = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self.final_config_dict.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.final_config_dict[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.final_config_dict

    def __repr__(self) -> str:
        return "\n".join(f"{k}={v}" for k, v in self.final_config_dict.items())


class _Dataset:
    """``dataloader.dataset``: the user and item counts (MMRec: max id + 1 over all splits)."""

    def __init__(self, n_users: int, n_items: int, n_train: int) -> None:
        self.user_num, self.item_num, self.inter_num = n_users, n_items, n_train

    def get_user_num(self) -> int:
        return self.user_num

    def get_item_num(self) -> int:
        return self.item_num


class _TrainData:
    """The ``dataloader`` argument of an MMRec model's constructor: its dataset and the train ``inter_matrix``."""

    def __init__(self, ctx: ModelContext) -> None:
        self.users = ctx.train_users.cpu().numpy()
        self.items = ctx.train_items.cpu().numpy()
        self.dataset = _Dataset(ctx.n_users, ctx.n_items, len(self.users))

    def inter_matrix(self, form: str = "coo", value_field: Any = None) -> Any:
        from scipy.sparse import coo_matrix

        if value_field is not None:
            raise SpecError("this MMRec model asks inter_matrix for a value field; clear-tune's data has none")
        matrix = coo_matrix(
            (np.ones(len(self.users)), (self.users, self.items)), shape=(self.dataset.user_num, self.dataset.item_num)
        )
        if form == "coo":
            return matrix
        if form == "csr":
            return matrix.tocsr()
        raise NotImplementedError(f"sparse matrix format [{form}] has not been implemented.")


class MMRecTree:
    """An MMRec-API source tree: ``models/``, ``common/``, ``utils/``, ``configs/overall.yaml``, ``configs/model/``."""

    def __init__(self, root: str | os.PathLike[str], *, prefix: str = "mmrec") -> None:
        self.root, self.prefix = Path(root).resolve(), prefix
        missing = [p for p in ("models", "configs/overall.yaml") if not (self.root / p).exists()]
        if missing:
            raise SpecError(
                f"{root}: not an MMRec source tree ({', '.join(missing)} missing); point 'mmrec:' at the "
                "folder that holds models/, common/, utils/ and configs/ (MMRec's src/)"
            )
        self.packages = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.py")) and p.name.isidentifier()
        )
        self._classes: dict[str, type[MMRecModelArray]] = {}

    def __repr__(self) -> str:
        return f"MMRecTree({str(self.root)!r}, prefix={self.prefix!r})"

    @contextmanager
    def active(self) -> Iterator[None]:
        """This tree's top-level packages importable as ``models``, ``common``, ``utils`` (another tree's stashed)."""
        stashed = {
            name: module
            for name, module in sys.modules.items()
            if name.split(".")[0] in self.packages and not _inside(module, self.root)
        }
        for name in stashed:
            del sys.modules[name]
        sys.path.insert(0, str(self.root))
        try:
            yield
        finally:
            sys.path.remove(str(self.root))
            if stashed:  # another tree was loaded first: give it its modules back
                for name in [n for n in sys.modules if n.split(".")[0] in self.packages]:
                    del sys.modules[name]
                sys.modules.update(stashed)

    def model_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "configs" / "model").glob("*.yaml"))

    def yaml_config(self, name: str) -> dict[str, Any]:
        """``overall.yaml`` updated with ``model/NAME.yaml`` as MMRec reads them; ``hyper_parameters`` merged."""
        values: dict[str, Any] = {}
        searched: list[str] = []
        for path in (self.root / "configs" / "overall.yaml", self.root / "configs" / "model" / f"{name}.yaml"):
            if path.is_file():
                loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_MMRecLoader) or {}
                searched += list(loaded.get("hyper_parameters") or [])
                values.update(loaded)
        values["hyper_parameters"] = [h for h in dict.fromkeys(searched) if h != "seed"]
        return values

    def model_source(self, name: str) -> Path:
        return self.root / "models" / f"{name.lower()}.py"

    def model_class(self, name: str) -> type[nn.Module]:
        """``models.<name.lower()>.<name>`` as MMRec's ``get_model`` finds it; one line for what goes wrong."""
        source = self.model_source(name)
        if not source.is_file():
            raise SpecError(
                f"{self.prefix}:{name}: {source} does not exist; the tree's models are "
                f"{', '.join(self.model_names()) or 'none'}"
            )
        with self.active():
            try:
                module = importlib.import_module(f"models.{name.lower()}")
            except Exception as exc:
                raise SpecError(
                    f"{self.prefix}:{name}: importing {source} failed ({describe_exception(exc)}); install "
                    "what the tree needs into this environment"
                ) from None
        cls = getattr(module, name, None)
        if not isinstance(cls, type) or not all(
            callable(getattr(cls, m, None)) for m in ("calculate_loss", "full_sort_predict")
        ):
            raise SpecError(
                f"{self.prefix}:{name}: {source} has no MMRec model class {name!r} with calculate_loss() "
                "and full_sort_predict()"
            )
        return cls

    def backbone(self, name: str) -> type[MMRecModelArray]:
        """The model-array class of model ``name`` of this tree (built once)."""
        if name not in self._classes:
            model_class = self.model_class(name)
            config = self.yaml_config(name)
            self._classes[name] = type(
                f"MMRec{name}Array",
                (MMRecModelArray,),
                {
                    "name": f"{self.prefix}:{name}",
                    "tree": self,
                    "model_name": name,
                    "model_class": model_class,
                    "yaml": config,
                    "__module__": __name__,
                    "__doc__": f"MMRec-API model {name} from {self.root}.",
                    "uses_features": bool(config.get("is_multimodal_model", True)) and not config.get("end2end"),
                    "default_reg_weight": float(_first(config.get("reg_weight", 0.0)) or 0.0),
                    "mmrec_grid": _grid(config),
                    "lr_decay": tuple(config.get("learning_rate_scheduler") or (1.0, 50)),
                },
            )
        return self._classes[name]


def _inside(module: Any, root: Path) -> bool:
    where = getattr(module, "__file__", None)
    if not where:
        return False
    return Path(where).resolve().is_relative_to(root)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _grid(config: dict[str, Any]) -> dict[str, list[Any]]:
    """The yaml's ``hyper_parameters`` with their value lists, keyed by clear-tune's names (``lr``, ``reg_weight``)."""
    grid = {}
    for key in config["hyper_parameters"]:
        if key in ("embedding_size",):
            continue
        values = config.get(key)
        grid[RENAMED.get(key, key)] = list(values) if isinstance(values, list) else [values]
    return grid


class MMRecModelArray(CopiesArray):
    """R copies of one MMRec-API model as a model array (see the module docstring)."""

    ranks_by: ClassVar[str] = "scores"
    tree: ClassVar[MMRecTree]
    model_name: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    yaml: ClassVar[dict[str, Any]]
    _copy_configs: list[MMRecConfig]  # one per copy, kept in __dict__ by build_copy

    @classmethod
    def model_options(cls) -> dict[str, Option]:
        """Every key of the model's yaml (and ``weight_decay``) but those the trial sets; typed by the yaml's value."""
        options = {}
        for key, value in {"weight_decay": cls.yaml.get("weight_decay", 0.0), **cls._model_yaml()}.items():
            if key in HARNESS_KEYS:
                continue
            searched = key in cls.yaml["hyper_parameters"] and isinstance(value, list)
            default = _first(value) if searched else value
            candidates = value if searched else [value]
            annotation: Any = None
            if isinstance(default, list):
                annotation = list[Any]
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in candidates):
                annotation = int | float  # MMRec's yaml writes 0 for 0.0: either fits
            elif isinstance(default, (bool, str)):
                annotation = type(default)
            options[key] = Option(key, default, annotation)
        return options

    @classmethod
    def _model_yaml(cls) -> dict[str, Any]:
        path = cls.tree.root / "configs" / "model" / f"{cls.model_name}.yaml"
        return (yaml.load(path.read_text(encoding="utf-8"), Loader=_MMRecLoader) or {}) if path.is_file() else {}

    @classmethod
    def clear_at_hint(cls) -> str:
        pair = _KNOWN_ENCODERS.get(cls.model_name)
        example = f"{{image: {pair[0]}, text: {pair[1]}}}" if pair else "{image: SUBMODULE, text: SUBMODULE}"
        return f"add 'clear_at: {{{cls.name}: {example}}}' to the spec, naming its two encoders"

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: list[Member],
        emb_dim: int = 64,
        seed: int = 0,
        train_config: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(ctx, members=members, emb_dim=emb_dim, seed=seed, train_config=train_config, **options)
        config = self._copy_configs[0]
        self.lr_decay = tuple(config["learning_rate_scheduler"] or (1.0, 50))
        self.weight_decay = float(
            eval(config["weight_decay"]) if isinstance(config["weight_decay"], str) else config["weight_decay"] or 0.0
        )
        self.negatives = bool(config["use_neg_sampling"] if "use_neg_sampling" in config else True)
        for key, reason in (
            ("use_full_sampling", "batches of users"),
            ("use_neighborhood_loss", "neighbour samples"),
            ("clip_grad_norm", "gradient clipping"),
        ):
            if config[key]:
                raise SpecError(f"{self.name}: {key} is set ({reason}), which clear-tune's trainer does not do")

    # ----------------------------------------------------------------------------------------- building
    def build_copy(
        self, ctx: ModelContext, member: Member, *, emb_dim: int, seed: int, options: dict[str, Any]
    ) -> nn.Module:
        config = self.mmrec_config(ctx, member, emb_dim=emb_dim, seed=seed, options=options)
        self.__dict__.setdefault("_copy_configs", []).append(config)
        with self.tree.active():
            model = self.model_class(config, _TrainData(ctx))
        for name in [n for n in model._parameters if n.startswith(CUDA_ONLY_PLAIN_TENSORS)]:
            param = model._parameters.pop(name)
            assert param is not None  # MMRec models register no empty parameter slots
            object.__setattr__(model, name, param.detach())
        return model.to(ctx.device)

    def mmrec_config(
        self, ctx: ModelContext, member: Member, *, emb_dim: int, seed: int, options: dict[str, Any]
    ) -> MMRecConfig:
        values = dict(self.yaml)
        for key in values["hyper_parameters"]:  # MMRec loops over these; a trial is one point of the loop
            values[key] = _first(values.get(key))
        values.update(options)
        settings = self.train_settings
        folder = mmrec_data_folder(
            ctx,
            user_graph="user_graph_dict_file" in self.tree.model_source(self.model_name).read_text(encoding="utf-8"),
        )
        values.update(
            {
                "model": self.model_name,
                "dataset": DATASET_NAME,
                "data_path": str(folder.parent) + os.sep,
                "USER_ID_FIELD": "userID",
                "ITEM_ID_FIELD": "itemID",
                "inter_file_name": f"{DATASET_NAME}.inter",
                "vision_feature_file": "image_feat.npy",
                "text_feature_file": "text_feat.npy",
                "user_graph_dict_file": "user_graph_dict.npy",
                "field_separator": "\t",
                "embedding_size": emb_dim,
                "reg_weight": member.reg_weight,
                "seed": seed,
                "device": ctx.device,
                "use_gpu": ctx.device.type == "cuda",
                "gpu_id": 0,
                "valid_metric": "Recall@20",
                "valid_metric_bigger": True,
                "save_recommended_topk": False,
            }
        )
        if settings is not None:
            values.update(
                {
                    "learning_rate": settings.lr,
                    "train_batch_size": settings.batch_size,
                    "epochs": settings.epochs,
                    "stopping_step": settings.patience,
                    "eval_step": settings.eval_every,
                    "topk": list(settings.topk),
                    "eval_batch_size": settings.eval_batch_users,
                }
            )
        return MMRecConfig(values)

    def probe_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        device = self.reg_weight.device
        one = torch.zeros(1, dtype=torch.long, device=device)
        other = torch.full((1,), min(1, self.n_items - 1), dtype=torch.long, device=device)
        interaction = torch.stack([one, one, other]) if self.negatives else torch.stack([one, one])
        return [("full_sort_predict", ([one, None],)), ("calculate_loss", (interaction,))]

    # ------------------------------------------------------------------------------------- MMRec's loop
    def start_epoch(self, epoch: int) -> None:
        self.call_members("pre_epoch_processing")
        self.refresh_projection(epoch)

    def end_epoch(self, epoch: int) -> None:
        self.call_members("post_epoch_processing")

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        interaction = torch.stack([users, pos, neg] if self.negatives else [users, pos])  # MMRec's (3, B)
        losses = []
        for value in self.call_members("calculate_loss", interaction):
            value = sum(value) if isinstance(value, (tuple, list)) else value
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TrainingError(f"{self.name}: calculate_loss returned {type(value).__name__}, not a scalar tensor")
            losses.append(value.reshape(()))
        return torch.stack(losses)  # (R,)

    def member_scores(self, member: int, users: torch.Tensor) -> torch.Tensor:
        scores = self.call_member(member, "full_sort_predict", [users, None])
        return scores.reshape(users.numel(), self.n_items)  # (B, n_items)


# The encoder pairs of MMRec's own models, for the error that asks for clear_at (documented in the README).
_KNOWN_ENCODERS = {
    "FREEDOM": ("image_trs", "text_trs"),
    "LATTICE": ("image_trs", "text_trs"),
    "BM3": ("image_trs", "text_trs"),
    "MGCN": ("image_trs", "text_trs"),
    "SMORE": ("image_trs", "text_trs"),
    "PGL": ("image_trs", "text_trs"),
    "LGMRec": ("item_image_trs", "item_text_trs"),
    "DRAGON": ("v_gcn.MLP_1", "t_gcn.MLP_1"),
    "DualGNN": ("v_gcn.MLP_1", "t_gcn.MLP_1"),
    "MMGCN": ("v_gcn.MLP", "t_gcn.MLP"),
}


# --------------------------------------------------------------------------------------- data folder
_PROCESS_FOLDERS: list[Path] = []


def _remove_process_folders() -> None:
    for folder in _PROCESS_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def _local_dir() -> Path:
    return Path(os.environ.get("CLEAR_TUNE_LOCAL_DIR") or Path.home() / ".cache" / "clear-tune")


def mmrec_data_folder(ctx: ModelContext, *, user_graph: bool) -> Path:
    """An MMRec dataset folder for ``ctx``'s dataset: ``<data_path>/clear_tune/`` with the feature files (and
    ``user_graph_dict.npy``), shared per dataset content, in a folder of this process's own (models cache files
    there, e.g. FREEDOM's ``mm_adj_*.pt``, and processes must not race on them). Memoised in ``ctx.cache``."""
    key = "mmrec_folder_graph" if user_graph else "mmrec_folder"
    if key in ctx.cache:
        return ctx.cache[key]
    users, items = ctx.train_users.cpu().numpy(), ctx.train_items.cpu().numpy()
    digest = hashlib.blake2b(digest_size=10)
    digest.update(np.array([ctx.n_users, ctx.n_items], dtype=np.int64).tobytes())
    digest.update(users.tobytes())
    digest.update(items.tobytes())
    features = {"image_feat.npy": ctx.image_feat, "text_feat.npy": ctx.text_feat}
    arrays = {name: f.detach().cpu().numpy().astype(np.float32) for name, f in features.items() if f is not None}
    for name, array in sorted(arrays.items()):
        digest.update(name.encode())
        digest.update(array.tobytes())
    shared = _local_dir() / "mmrec-data" / digest.hexdigest()
    shared.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _write_once(shared / name, lambda path, a=array: np.save(path, a))
    if user_graph:
        _write_once(shared / "user_graph_dict.npy", lambda path: _write_user_graph(ctx, users, items, path))
    own = Path(tempfile.mkdtemp(prefix=f"proc{os.getpid()}-", dir=shared))
    if not _PROCESS_FOLDERS:
        atexit.register(_remove_process_folders)
    _PROCESS_FOLDERS.append(own)
    folder = own / DATASET_NAME
    folder.mkdir()
    for path in shared.glob("*.npy"):
        os.symlink(path, folder / path.name)
    ctx.cache[key] = folder
    return folder


def _write_once(path: Path, write: Any) -> None:
    """Write ``path`` through a temporary file and a rename, unless it exists (other processes may race)."""
    if path.exists():
        return
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_user_graph(ctx: ModelContext, users: np.ndarray, items: np.ndarray, path: str) -> None:
    from clear_tune.data import RecDataset, write_user_graph

    empty = np.zeros((0, 2), dtype=np.int64)
    dataset = RecDataset(DATASET_NAME, "mmrec", ctx.n_users, ctx.n_items, np.column_stack([users, items]), empty, empty)
    with tempfile.TemporaryDirectory() as folder:
        shutil.move(str(write_user_graph(dataset, folder)), path)
