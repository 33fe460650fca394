"""Your own model: plugin files and installed packages, the single-model API, MMRec-API trees, CLEAR by hooks.

The plugins are the README's examples (``examples/``): a native model array, a plain single-model ``nn.Module`` and
a tiny MMRec-API source tree written for them (``examples/mmrec_tree``: its own ``common/``, ``models/``, ``configs/``
with MMRec's constructor contract). Searches run through a real local Ray; the installed package is built with pip
into a temporary folder; the contract checker rejects broken plugins (``tests/fixtures/plugins``) with one line.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clear_tune._plugins import resolve_plugins
from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import ClearTuneError, SpecError
from clear_tune.models import backbone_class
from clear_tune.records import read_records
from clear_tune.run import run_search
from clear_tune.testing import BackboneContractError, check_backbone
from clear_tune.train import Trainer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TREE = EXAMPLES / "mmrec_tree"
ON = {"k": 3, "strength": 0.9}
CLEAR_AT = {
    "mmrec:TinyRec": {"image": "image_trs", "text": "text_trs"},
    "mmrec:LowRank": {"image": "item_image_trs", "text": "item_text_trs"},
}


@pytest.fixture(scope="module")
def plugins():
    """The three examples imported in this process, as a spec's ``plugins:`` would."""
    loaded = resolve_plugins(
        [str(EXAMPLES / "native_backbone.py"), str(EXAMPLES / "single_model.py"), {"mmrec": str(TREE)}]
    )
    for plugin in loaded:
        plugin.load()
    return loaded


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=120, n_items=80, d_v=24, d_t=16, planted_rank=3, pref_dim=6, seed=3)


def config(backbone: str, **overrides) -> TrainConfig:
    settings = {
        "backbone": backbone,
        "emb_dim": 16,
        "epochs": 4,
        "patience": 4,
        "batch_size": 128,
        "seed": 1,
        "threads": 1,
        "clear_at": CLEAR_AT.get(backbone),
        **overrides,
    }
    return TrainConfig(**settings)


def close(a: dict, b: dict, rel: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-9) for k in a)


# ---------------------------------------------------------------------------------------- in one process
@pytest.mark.parametrize("backbone", ["visual_mf", "feature_mf", "mmrec:TinyRec", "mmrec:LowRank"])
def test_each_member_of_an_own_model_ends_where_it_ends_alone(plugins, dataset, backbone):
    configs = [
        config(backbone, projection={"mode": "off"}),
        config(backbone, projection=ON),
        config(backbone, projection={"mode": "dynamic", "k": 4, "energy": 0.8, "refresh_every": 2}),
    ]
    fused = Trainer(configs, dataset).fit()
    for cfg, member in zip(configs, fused):
        [alone] = Trainer(cfg, dataset).fit()
        assert member["best_epoch"] == alone["best_epoch"] and member["epochs_run"] == alone["epochs_run"]
        assert close(member["valid"], alone["valid"]) and close(member["test"], alone["test"])
        assert [p["loss"] for p in member["curve"]] == pytest.approx([p["loss"] for p in alone["curve"]], rel=1e-6)
        assert len(member["spectrum"]) == len(alone["spectrum"]) and bool(member["spectrum"]) == cfg.projection.active
    assert fused[0]["valid"] != fused[1]["valid"]  # CLEAR changed the run


@pytest.mark.parametrize("backbone", ["feature_mf", "mmrec:TinyRec", "mmrec:LowRank"])
def test_clear_by_hooks_changes_the_forward_pass_and_lambda_zero_does_not(plugins, dataset, backbone):
    from clear_tune.models import build_model
    from clear_tune.train._device import model_context

    ctx = model_context(dataset, torch.device("cpu"))
    model = build_model(
        [
            config(backbone, projection={"mode": "off"}),
            config(backbone, projection=ON),
            config(backbone, projection={"mode": "fixed", "k": 3, "strength": 0.0}),
        ],
        ctx,
    )
    model.start_epoch(1)
    model.eval()
    users = torch.arange(10)
    with torch.no_grad():
        scores = [
            model.member_scores(m, users)
            if model.ranks_by == "scores"
            else model.embeddings()[0][m, users] @ model.embeddings()[1][m].T
            for m in range(3)
        ]
    assert not torch.allclose(scores[0], scores[1])
    assert torch.equal(scores[0], scores[2])  # λ = 0 is the identity
    spectrum = model.spectrum_history(1)
    assert len(spectrum) == 1 and spectrum[0]["after"][0] < spectrum[0]["before"][0]


def test_the_contract_checker_passes_the_examples(plugins):
    assert len(check_backbone("visual_mf").passed) == 7
    assert len(check_backbone("feature_mf").passed) == 7
    assert len(check_backbone("mmrec:TinyRec", clear_at=CLEAR_AT["mmrec:TinyRec"]).passed) == 7


@pytest.mark.parametrize(
    "name, message",
    [
        ("ScalarLoss", "scalarloss: shapes: loss() gave (), not one loss per member (2,)"),
        ("MembersStartApart", "membersstartapart: fused = alone: member 1 of a fused array scores differently"),
        ("UnseededDropout", "unseededdropout: one seed, one run: two runs with seed 7 differ (member 0, epoch 1"),
        (
            "CountsCalls",
            "countscalls: checkpoint round trip: 2 epochs + restore + 1 epoch differ from 3 epochs straight",
        ),
        ("MistypedOption", "mistypedoption: options typed: the default of depth (0.5) is not an int"),
        (
            "IgnoresProjection",
            "ignoresprojection: λ > 0 changes the forward pass: a member with k=2, λ=0.9 scores exactly",
        ),
    ],
)
def test_the_contract_checker_rejects_a_broken_plugin_in_one_line(name, message):
    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "plugins"))
    try:
        import broken_contracts
    finally:
        sys.path.pop(0)
    with pytest.raises(BackboneContractError) as info:
        check_backbone(getattr(broken_contracts, name))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_options_come_from_the_constructor_signature_for_every_backbone(plugins):
    from clear_tune.models import registered_backbones

    for name, cls in registered_backbones().items():
        if cls.__module__ == "broken_contracts":  # registered by the contract checker's tests, broken on purpose
            continue
        options = cls.model_options()
        for option in options.values():
            option.check(option.default)  # every default fits its own type
        if options:
            key, option = next(iter(options.items()))
            with pytest.raises(SpecError, match=f"backbone '{name}' model option {key}="):
                cls.check_options({key: object()})
        with pytest.raises(SpecError, match="has no model option 'no_such_option': valid options are"):
            cls.check_options({"no_such_option": 1})
    tiny = backbone_class("mmrec:TinyRec")
    assert {"n_layers", "dropout", "weight_decay"} <= set(tiny.model_options())
    assert tiny.mmrec_grid == {"dropout": [0.2, 0.5], "reg_weight": [1e-4, 1e-3]}  # the yaml's hyper_parameters
    assert tiny.default_reg_weight == 1e-4 and backbone_class("mmrec:LowRank").lr_decay == (0.96, 50)


def test_an_encoder_without_one_row_per_item_is_one_line(plugins, dataset):
    cfg = config("mmrec:TinyRec", projection=ON, clear_at={"image": "bpr", "text": "text_trs"})
    with pytest.raises(ClearTuneError) as info:
        Trainer(cfg, dataset).fit()
    assert str(info.value).startswith(
        "clear_at.image: bpr gave no output of one row per item (80 rows) during a full forward of 'mmrec:TinyRec'"
    )


def test_a_shipped_plugin_loads_where_the_original_is_gone(tmp_path):
    """What a worker on another node does: the Plugin object came through Ray's object store (pickled), the
    original file is not there, so it imports the copy written under $CLEAR_TUNE_LOCAL_DIR/plugins/."""
    source = tmp_path / "gone" / "shipped_model.py"
    source.parent.mkdir()
    source.write_text((EXAMPLES / "single_model.py").read_text().replace('name="feature_mf"', 'name="shipped_mf"'))
    blob = tmp_path / "plugin.pkl"
    blob.write_bytes(pickle.dumps(resolve_plugins([str(source)])))
    source.unlink()
    code = textwrap.dedent(f"""
        import pickle
        from clear_tune.models import backbone_class
        for plugin in pickle.load(open({str(blob)!r}, "rb")):
            module = plugin.load()
        print(module.__file__, backbone_class("shipped_mf").__name__)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CLEAR_TUNE_LOCAL_DIR": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stderr
    path, name = out.stdout.split()
    assert Path(path).is_relative_to(tmp_path / "cache" / "plugins") and name == "FeatureMFArray"


def test_each_spec_decides_which_tree_its_prefix_names(tmp_path):
    """Two specs in one process give ``mmrec`` different trees: each load_spec resolves ``mmrec:NAME`` in its own
    tree, also when the other tree was loaded in between (the plugin cache must not keep the older routing)."""
    import shutil

    from clear_tune.spec import load_spec

    other = tmp_path / "other_tree"
    shutil.copytree(EXAMPLES / "mmrec_tree", other)
    (other / "models" / "lowrank.py").unlink()
    (other / "configs" / "model" / "LowRank.yaml").unlink()
    spec = "experiment: t\nplugins: [{{mmrec: {tree}}}]\nbackbones: [mmrec:Nope]\nprojection: {{mode: 'off'}}\n"
    for tree, models in [(EXAMPLES / "mmrec_tree", "LowRank, TinyRec"), (other, "TinyRec")] * 2:
        path = tmp_path / "spec.yaml"
        path.write_text(spec.format(tree=tree))
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert str(info.value).endswith(f"the tree's models are {models}"), str(info.value)
        assert f"{tree.resolve()}/models/nope.py" in str(info.value)


# ---------------------------------------------------------------------------------------- through Ray
def test_the_three_kinds_of_own_model_search_fused_through_ray(ray_session, tmp_path):
    spec = tmp_path / "own.yaml"
    spec.write_text(
        (EXAMPLES / "own_model.yaml")
        .read_text()
        .replace("examples/", f"{EXAMPLES}/")
        .replace("epochs: 8", "epochs: 3")
        .replace("patience: 4", "patience: 3")
    )
    outcome = run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False)
    records = read_records(tmp_path / "results" / "own-model" / "records")
    assert outcome.complete and len(records) == 12
    assert all(r["status"] == "completed" and r["fused"]["members"] == 3 for r in records)
    by_backbone: dict[str, dict[str, dict]] = {}
    for r in records:
        by_backbone.setdefault(r["config"]["backbone"], {})[r["arm"]] = r
    assert set(by_backbone) == {"visual_mf", "feature_mf", "mmrec:TinyRec", "mmrec:LowRank"}
    for arms in by_backbone.values():  # CLEAR acted: its spectra are recorded, and off has none
        assert arms["full"]["spectrum"] and not arms["no_projection"]["spectrum"]
    assert by_backbone["mmrec:TinyRec"]["full"]["config"]["clear_at"] == CLEAR_AT["mmrec:TinyRec"]


def test_a_single_model_plugin_fused_records_what_it_records_alone(ray_session, tmp_path):
    def run(name: str, fusion: str) -> dict[str, dict]:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(
            textwrap.dedent(f"""\
            experiment: {name}
            plugins: [{EXAMPLES / "single_model.py"}]
            backbones: [feature_mf]
            data: {{source: synthetic, options: {{n_users: 150, n_items: 80, d_v: 24, d_t: 16, pref_dim: 8}}}}
            trainer: {{epochs: 5, patience: 2, emb_dim: 16, batch_size: 256, model_options: {{dropout: 0.3}}}}
            arms:
              full: {{k: [2, 4], strength: 0.9}}
              no_projection: {{mode: "off"}}
            fusion: {fusion}
            max_concurrent: 2
            """)
        )
        assert run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False).complete
        return {r["trial_id"]: r for r in read_records(tmp_path / "results" / name / "records")}

    fused, alone = run("fused", "{max_members: 3}"), run("alone", "{enabled: false}")
    assert fused.keys() == alone.keys() and len(fused) == 3
    for key, record in fused.items():
        other = alone[key]
        assert record["fused"]["members"] == 3 and other["fused"] is None
        assert record["best_epoch"] == other["best_epoch"] and record["epochs_run"] == other["epochs_run"]
        assert close(record["valid"], other["valid"]) and close(record["test"], other["test"])


@pytest.mark.ray
def test_an_installed_plugin_package_registers_through_its_entry_point(tmp_path):
    """A package built with pip from a temp dir, installed into a folder on PYTHONPATH: its entry point in the
    group clear_tune.backbones names a backbone that a spec uses without any 'plugins:'; searched through Ray."""
    package = tmp_path / "src"
    (package / "ct_plugin_demo").mkdir(parents=True)
    (package / "ct_plugin_demo" / "__init__.py").write_text(
        (EXAMPLES / "native_backbone.py").read_text().replace("@clear_tune.register_backbone\n", "")
    )
    (package / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "ct-plugin-demo"
        version = "0.1.0"
        [project.entry-points."clear_tune.backbones"]
        demo_mf = "ct_plugin_demo:VisualMF"
        """)
    )
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr
    spec = tmp_path / "installed.yaml"
    spec.write_text(
        textwrap.dedent("""\
        experiment: installed
        backbones: [demo_mf]
        data: {source: synthetic, options: {n_users: 100, n_items: 60, d_v: 16, d_t: 16, pref_dim: 8}}
        trainer: {epochs: 2, emb_dim: 16, batch_size: 256}
        projection: {k: [2, 4], strength: 0.9}
        max_concurrent: 2
        """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "clear_tune.run",
            str(spec),
            "--results",
            str(tmp_path / "results"),
            "--verbose",
            "0",
            "--no-report",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = read_records(tmp_path / "results" / "installed" / "records")
    assert len(records) == 2 and all(r["status"] == "completed" for r in records)
    assert all(r["fused"]["members"] == 2 and r["config"]["backbone"] == "demo_mf" for r in records)


def test_a_module_class_backbone_needs_no_plugins_entry(ray_session, tmp_path):
    spec = tmp_path / "by_path.yaml"
    spec.write_text(
        textwrap.dedent(f"""\
        experiment: by-path
        backbones: ["{EXAMPLES / "native_backbone.py"}:VisualMF"]
        data: {{source: synthetic, options: {{n_users: 100, n_items: 60, d_v: 16, d_t: 16, pref_dim: 8}}}}
        trainer: {{epochs: 2, emb_dim: 16, batch_size: 256}}
        projection: {{mode: "off"}}
        """)
    )
    assert run_search(spec, results=str(tmp_path / "results"), verbose=0, build_report=False).complete
    [record] = read_records(tmp_path / "results" / "by-path" / "records")
    assert record["status"] == "completed" and "/" not in record["trial_id"]
    assert json.loads(json.dumps(record["config"]))["backbone"].endswith("native_backbone.py:VisualMF")


# ------------------------------------------------------------------------------- MMRec itself (peer kit)
PEER_SRC = REPO / ".peers" / "mmrec" / "src" / "src"


@pytest.mark.skipif(
    not (PEER_SRC / "models" / "freedom.py").is_file(),
    reason="the MMRec peer kit is not set up here (../shared/peers/mmrec/README.md)",
)
@pytest.mark.parametrize(
    "model, clear_at, options",
    [
        ("FREEDOM", {"image": "image_trs", "text": "text_trs"}, {"knn_k": 5}),
        ("LGMRec", {"image": "item_image_trs", "text": "item_text_trs"}, {}),
    ],
)
def test_mmrec_own_models_run_through_the_adapter(dataset, model, clear_at, options):
    from clear_tune.adapters import register_mmrec_tree

    register_mmrec_tree(str(PEER_SRC))
    # FREEDOM reads its encoded features only in its auxiliary BPR terms, weighted by reg_weight (0 in its yaml's
    # first grid value): a non-zero weight lets CLEAR reach the loss
    configs = [
        config(
            f"mmrec:{model}",
            epochs=2,
            emb_dim=64,
            clear_at=clear_at,
            model_options=options,
            projection=p,
            reg_weight=1e-3,
        )
        for p in ({"mode": "off"}, {"k": 4, "strength": 0.9})
    ]
    results = Trainer(configs, dataset).fit()
    assert all(r["epochs_run"] == 2 and r["valid"]["recall@20"] > 0 for r in results)
    assert [p["loss"] for p in results[0]["curve"]] != [p["loss"] for p in results[1]["curve"]]
    assert results[1]["spectrum"] and not results[0]["spectrum"]
