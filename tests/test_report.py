"""The HTML report: built from hand-made records and from a real smoke search, checked in real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.browser import chromium_missing_reason, open_report
from fixtures.clear_records import write_experiment

from clear_tune.records import write_record
from clear_tune.report import ReportPaths, build_report

REPO = Path(__file__).resolve().parents[1]
HANDMADE_FIGURES = {
    "heatmap-baby-clear",
    "heatmap-baby-vbpr",
    "ablation",
    "generalization",
    "spectrum",
    "learning-curves",
    "parallel-coordinates",
    "timeline",
    "best-so-far",
}
browser = pytest.mark.skipif(chromium_missing_reason() is not None, reason=str(chromium_missing_reason()))


@pytest.fixture(scope="module")
def handmade_report(tmp_path_factory) -> ReportPaths:
    return build_report(write_experiment(tmp_path_factory.mktemp("report"), expected_trials=30))


def _figure_names(html: str) -> set[str]:
    return set(re.findall(r'<div class="figure(?: wide)?" data-figure="([^"]+)"', html))


def test_report_is_self_contained_and_has_every_part(handmade_report):
    html = handmade_report.html.read_text()
    assert _figure_names(html) == HANDMADE_FIGURES
    # offline: plotly.js inlined exactly once, nothing fetched from anywhere
    library = re.search(r"<script type=\"text/javascript\">(.*?)</script>", html, flags=re.S)
    assert library and "plotly.js v" in library.group(1)[:300] and len(library.group(1)) > 1_000_000
    page = html.replace(library.group(1), "")  # the library itself names URLs it never fetches here
    assert "plotly.js v" not in page  # inlined exactly once
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"https?://", page)
    # header: what, data kind warning, missing trials
    assert "are NOT the paper" in html and "real-feature results" in html and "semi-synthetic" in html
    assert "30 expected, 6 missing" in html and "incomplete" in html
    for title in ("Overall performance", "Generalization", "Ablation", "Sensitivity", "Efficiency"):
        assert title in html
    assert "pruned" in html
    assert {p.name for p in handmade_report.tables_dir.iterdir()} >= {
        "overall.csv",
        "ablation.tex",
        "sensitivity.md",
        "trials.csv",
    }


def test_report_without_experiment_json_says_missing_is_unknown(tmp_path):
    paths = build_report(write_experiment(tmp_path, with_meta=False))
    html = paths.html.read_text()
    assert "missing trials cannot be computed" in html or "cannot be counted" in html
    assert _figure_names(html) == HANDMADE_FIGURES


def test_report_cli_writes_and_prints_paths(tmp_path):
    experiment = write_experiment(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", str(experiment)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert f"report: {experiment / 'report.html'}" in done.stdout
    assert (experiment / "tables" / "efficiency.md").is_file()


def _check_in_browser(html: Path, expected: set[str], artifacts_dir: Path, name: str) -> None:
    with open_report(html) as page:
        assert page.console_errors == [], page.console_errors
        assert page.remote_requests == [], page.remote_requests
        assert {f["name"] for f in page.figures} == expected
        for figure in page.figures:
            assert figure["svg"] > 0 or figure["canvas"] > 0, f"figure {figure['name']} did not render"
            assert figure["traces"] > 0, f"figure {figure['name']} has no data"
            assert figure["width"] > 300 and figure["height"] > 250, figure
        viewport = page.screenshot(artifacts_dir / f"{name}.png")
        full = page.screenshot(artifacts_dir / f"{name}-full.png", full_page=True)
        # the figures must fit inside the page width on a laptop screen (no plot cut off by its box)
        overflow = page.driver.execute_script(
            "return Array.from(document.querySelectorAll('div.figure')).filter(b => {"
            " const p = b.querySelector('.main-svg'); return p && p.getBoundingClientRect().width > b.getBoundingClientRect().width + 1;"
            "}).map(b => b.dataset.figure);"
        )
        assert overflow == [], f"figures wider than their box: {overflow}"
    assert viewport.stat().st_size > 10_000 and full.stat().st_size > 10_000


@pytest.mark.browser
@browser
def test_handmade_report_renders_in_headless_chromium(handmade_report, artifacts_dir):
    _check_in_browser(handmade_report.html, HANDMADE_FIGURES, artifacts_dir, "report-handmade")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.browser
@browser
def test_report_from_a_real_smoke_search(tmp_path, artifacts_dir):
    """``python -m clear_tune.run search_spaces/smoke.yaml`` end to end, then its report in Chromium."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", "search_spaces/smoke.yaml", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    experiments = [p.parent for p in tmp_path.glob("*/records")]
    assert len(experiments) == 1, list(tmp_path.iterdir())
    experiment = experiments[0]
    html = experiment / "report.html"
    assert html.is_file(), "clear_tune.run did not build the report at the end of the search"
    paths = build_report(experiment)  # and rebuilding it from the records gives the same figure set
    names = _figure_names(paths.html.read_text())
    assert {"learning-curves", "parallel-coordinates", "timeline", "best-so-far"} <= names
    _check_in_browser(paths.html, names, artifacts_dir, "report-smoke")


def test_report_of_an_experiment_with_only_a_failed_and_a_pruned_trial(tmp_path):
    """Early in a search: no metrics, no wall times on the failed trial; the report still builds."""
    write_record(
        tmp_path / "records",
        {
            "trial_id": "f1",
            "status": "failed",
            "reason": "TrainingError: loss is NaN",
            "config": {"seed": 0},
            "epochs_run": 0,
            "valid": {},
            "test": {},
            "curve": [],
            "spectrum": [],
            "wall_start": None,
            "wall_end": None,
            "gpu_ids": [],
        },
    )
    paths = build_report(tmp_path)
    assert "| failed" in (paths.tables_dir / "overall.md").read_text()
    write_record(
        tmp_path / "records",
        {
            "trial_id": "p1",
            "status": "pruned",
            "config": {"seed": 0, "epochs": 10},
            "epochs_run": 2,
            "valid": {"recall@20": 0.1},
            "test": {"recall@20": 0.1},
            "curve": [{"epoch": 1, "valid": {"recall@20": 0.1}}],
            "wall_start": 1.0,
            "wall_end": 5.0,
            "gpu_ids": [],
        },
    )
    html = build_report(tmp_path).html.read_text()
    assert {"learning-curves", "parallel-coordinates", "timeline"} <= _figure_names(html)
    assert "best-so-far" not in _figure_names(html)  # nothing completed yet: no best to plot


def test_heatmap_says_when_lambda_and_k_make_no_difference_beyond_seed_noise():
    """FREEDOM + CLEAR on easy data: every cell within the seeds' spread must not be painted as an effect."""
    from clear_tune.aggregate import config_summary, trials_frame
    from clear_tune.report._figures import heatmap_figures

    def records(spread: float) -> list[dict]:
        out = []
        for i, (k, lam) in enumerate([(k, lam) for k in (2, 4) for lam in (0.5, 0.9)]):
            for seed, noise in enumerate((-0.01, 0.0, 0.01)):  # seeds differ by about 0.01
                value = 0.2 + spread * i + noise
                out.append(
                    {
                        "trial_id": f"t{i}-{seed}",
                        "status": "completed",
                        "arm": "full",
                        "config": {"backbone": "freedom", "seed": seed, "projection": {"k": k, "strength": lam}},
                        "valid": {"recall@20": value},
                        "test": {"recall@20": value},
                    }
                )
        return out

    [(_, flat)] = heatmap_figures(config_summary(trials_frame(records(spread=0.0005))))
    assert "NO EFFECT beyond seed noise" in flat.layout.title.text
    assert flat.data[0].zmax - flat.data[0].zmin == pytest.approx(0.02)  # ± the seeds' std, not the cells' span
    [(_, real)] = heatmap_figures(config_summary(trials_frame(records(spread=0.02))))
    assert "NO EFFECT" not in real.layout.title.text and real.data[0].zmax - real.data[0].zmin == pytest.approx(0.06)
