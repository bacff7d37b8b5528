"""One self-contained HTML page with every figure and table of a run.

Images are embedded (base64), tables rendered from CSV/JSON/JSONL, and each section names the
file it shows, so the page can be mailed or opened from a cluster's scratch without the files.
"""
from __future__ import annotations

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .io import atomic_path

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em} .src{color:#777;font-size:.85em;font-family:monospace}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f4f4f4} img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em}
nav a{margin-right:1em}
"""


def _table(path: Path, max_rows: int) -> str:
    suffix = path.suffix
    if suffix == ".csv":
        df = pd.read_csv(path)
    elif suffix == ".tsv":
        df = pd.read_csv(path, sep="\t")
    elif suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
    elif suffix == ".json":
        data = json.loads(path.read_text())
        flat = pd.json_normalize(data, sep=".") if isinstance(data, dict) else pd.DataFrame(data)
        if isinstance(data, dict):
            return "<pre>" + html.escape(json.dumps(data, indent=2)[:20000]) + "</pre>"
        df = flat
    else:
        return "<pre>" + html.escape(path.read_text()[:20000]) + "</pre>"
    more = f"<p class=src>{len(df) - max_rows} more rows in the file</p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="") + more


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def build_report(sections: list[tuple[str, list[str]]], output: str, title: str, max_rows: int = 60,
                 root: str | None = None) -> None:
    """`sections`: [(heading, [file, ...])]; PNGs become pictures, CSV/TSV/JSON(L) tables."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=src>made {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>", "<nav>"]
    parts += [f'<a href="#s{i}">{html.escape(h)}</a>' for i, (h, files) in enumerate(sections) if files]
    parts.append("</nav>")
    for i, (heading, files) in enumerate(sections):
        if not files:
            continue
        parts.append(f'<h2 id="s{i}">{html.escape(heading)}</h2>')
        for f in files:
            p = Path(f)
            shown = str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p)
            parts.append(f"<h3>{html.escape(p.name)}</h3><p class=src>{html.escape(shown)}</p>")
            if not p.exists():
                parts.append("<p>(missing)</p>")
            elif p.suffix == ".png":
                parts.append(_image(p))
            else:
                parts.append(_table(p, max_rows))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")


def benchmark_table(tsv_files: list[str], output: str) -> None:
    """Per-rule benchmark files gathered into one CSV: rule, job, seconds, max RSS (MB)."""
    rows = []
    for f in sorted(tsv_files):
        p = Path(f)
        df = pd.read_csv(p, sep="\t")
        for _, r in df.iterrows():
            rows.append({"rule": p.parent.name, "job": p.stem, "s": r.get("s"), "max_rss_mb": r.get("max_rss"),
                         "mean_load": r.get("mean_load"), "cpu_time": r.get("cpu_time")})
    with atomic_path(output) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
