"""The run's report: a research summary (headline first, then figures, tables, raw files), shown
in a real browser (headless Chromium from Debian's package), and Snakemake's own --report."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from judgeflow.report import build_report, headline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# .ci/run installs Chromium and sets this: there the browser test must run, never skip
BROWSER_REQUIRED = os.environ.get("JUDGEFLOW_BROWSER_TEST") == "1"


def _files(tmp: Path) -> dict[str, str]:
    data = {
        "cleaning": {"questions": 120, "kept": 108, "heldout": 10, "rejected": 2},
        "pairs": {"multi_feedback_pairs": 31, "full_feedback_pairs": 27, "responses": 108, "responses_accepted": 50},
        "nstar": {"nstar": 2, "threshold": 0.8, "delta": 0.05, "calls": 140, "curve_calls": 20, "strategy":
                  "fixed_sequence", "accepted_per_n": {"1": 60, "2": 30, "3": 10}},
        "fit": {"ok": True, "p0": 0.4, "p1": 0.7},
        "evaluation": {"heldout_questions": 10, "oracle": {"model": "verifier", "per_policy": {"multi_feedback": {
            "wins": 4, "losses": 2, "ties": 4, "inconsistent": 0, "abstain": 0, "comparisons": 10,
            "win_rate": 0.6667, "win_rate_ci_low": 0.2228, "win_rate_ci_high": 0.9567}}}},
        "judges": {"k": 2, "J": 3, "labelled": 100, "measured": {"p0": 0.45, "p1": 0.62, "p0_interval": [0.3, 0.6],
                                                                  "p1_interval": [0.5, 0.73]},
                   "fitted": {"p0": 0.4, "p1": 0.7}, "mean_pairwise_kappa": 0.31},
    }
    out = {}
    for name, d in data.items():
        p = tmp / f"{name}.json"
        p.write_text(json.dumps(d))
        out[name] = str(p)
    return out


def test_headline_panel_says_what_the_run_found(tmp_path):
    page = headline(_files(tmp_path))
    for text in ("108 kept", "10 held out", "31 / 27", "N* = 2", "T = 0.8", "140 oracle calls", "100 accepted draws",
                 "0.67 [0.22, 0.96]", "10 of 10 decided", "p1 0.62 / p0 0.45", "fitted by the TP(N) model: p1 0.70",
                 "mean kappa between judges 0.31"):
        assert text in page, text


def test_the_headline_says_when_the_fit_sits_on_its_boundary_and_that_accepted_draws_are_selected(tmp_path):
    files = _files(tmp_path)
    assert "constraint p0 &lt; p1 binds" not in headline(files)
    Path(files["fit"]).write_text(json.dumps({"ok": True, "p0": 0.5, "p1": 0.5001, "constraint_binds": True,
                                              "p0_free": 0.62, "p1_free": 0.48}))
    page = headline(files)
    assert "constraint p0 &lt; p1 binds: without it p0 0.62 &gt;= p1 0.48 fits better" in page
    assert "on the draws they accepted" in page and "p1 and p0 here are biased" in page


def test_a_missing_summary_shows_n_a_not_a_crash(tmp_path):
    page = headline({"cleaning": str(tmp_path / "nope.json")})
    assert "n/a kept" in page


def test_page_order_headline_figures_tables_then_raw_json_folded(tmp_path):
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(f"column_{i}" for i in range(40)) + "\n" + ",".join(str(i) for i in range(40)) + "\n")
    js = tmp_path / "x.json"
    js.write_text(json.dumps({"a": 1}))
    out = tmp_path / "r.html"
    build_report([("Tables", [str(csv)]), ("Raw", [str(js)])], str(out), "run t", headline_files=_files(tmp_path))
    text = out.read_text()
    assert text.index("id=headline") < text.index("id=figures") < text.index("id=tables") < text.index("id=raw")
    assert '<div class=scroll><table' in text and "<details><summary>" in text


def _rendered(page: Path, width: int = 1024) -> dict:
    """The page in headless Chromium at `width` px: its scroll width, the window's, the headline."""
    probe = page.with_name(page.stem + ".probe.html")
    script = ("<script>document.body.setAttribute('data-probe', JSON.stringify({scroll: "
              "document.documentElement.scrollWidth, body: document.body.scrollWidth, window: window.innerWidth, "
              "headline: (document.getElementById('headline') || {}).innerText || ''}));</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'data-probe="([^"]*)"', dom)
    assert m, dom[-2000:]
    import html

    return json.loads(html.unescape(m.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM and not BROWSER_REQUIRED, reason="no chromium here (apt-get install chromium)")
def test_the_run_report_in_a_real_browser_fits_the_window_with_its_headline(tiny_run, tmp_path):
    assert CHROMIUM, "JUDGEFLOW_BROWSER_TEST=1 but no chromium on PATH"
    page = tmp_path / "report.html"
    shutil.copy(tiny_run / "results" / "tiny" / "report.html", page)
    for width in (1280, 800):
        got = _rendered(page, width)
        assert got["scroll"] <= got["window"] and got["body"] <= got["window"], got
        assert "kept" in got["headline"] and "Certified N*" in got["headline"], got["headline"]


@pytest.mark.slow
def test_snakemake_report_zip_holds_the_marked_figures_and_tables(tiny_run, tmp_path):
    from project import copy_project, smk

    proj = copy_project(tiny_run, tmp_path / "p")
    smk(proj, "--report", str(tmp_path / "report.zip"), configfile=proj / "config" / "tiny.yaml")
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    for f in ("tp_curve.png", "bon_grid.png", "quality.csv", "table.csv", "report.html"):
        assert any(n.endswith(f) for n in names), (f, names[:40])
