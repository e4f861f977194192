"""A replay as one self-contained HTML file: inline SVG charts, no scripts, no downloads.

Charts: the score distributions of the candidate and of what was served (histograms over
the same bins) and, for classifiers, the calibration curves (mean predicted against
observed rate per bin, with the diagonal). Then the metrics and the per-segment table.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from eventml.learning.replay import Replay

W, H, PAD = 520, 300, 40
COLORS = {"candidate": "#d62728", "served": "#1f77b4"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return html.escape(str(v))


def _histograms(r: Replay) -> str:
    series = {"candidate": r.candidate_scores, "served": r.served_scores}
    series = {k: v[np.isfinite(v)] for k, v in series.items() if len(v)}
    if not series:
        return "<p>no scores</p>"
    allv = np.concatenate(list(series.values()))
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, 31)
    dens = {k: np.histogram(v, edges)[0] / max(len(v), 1) for k, v in series.items()}
    top = max(float(d.max()) for d in dens.values()) or 1.0
    bw = (W - 2 * PAD) / 30
    parts = [_axes(f"{lo:.3g}", f"{hi:.3g}", "score", "share of rows")]
    for k, d in dens.items():
        pts = " ".join(
            f"{PAD + (i + 0.5) * bw:.1f},{H - PAD - (H - 2 * PAD) * float(v) / top:.1f}"
            for i, v in enumerate(d)
        )
        parts.append(
            f'<polyline fill="none" stroke="{COLORS[k]}" stroke-width="2" points="{pts}"/>'
        )
    return _svg("Score distributions", parts, list(dens))


def _calibration(r: Replay) -> str:
    if not r.calibration:
        return ""
    parts = [_axes("0", "1", "mean predicted", "observed rate")]
    parts.append(
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{PAD}" stroke="#999" stroke-dasharray="4"/>'
    )
    for k, bins in r.calibration.items():
        pts = " ".join(
            f"{PAD + (W - 2 * PAD) * b['predicted']:.1f},{H - PAD - (H - 2 * PAD) * b['observed']:.1f}"
            for b in bins
        )
        parts.append(
            f'<polyline fill="none" stroke="{COLORS[k]}" stroke-width="2" points="{pts}"/>'
        )
        for b in bins:
            x = PAD + (W - 2 * PAD) * b["predicted"]
            y = H - PAD - (H - 2 * PAD) * b["observed"]
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[k]}"/>')
    return _svg("Calibration", parts, list(r.calibration))


def _axes(lo: str, hi: str, xlabel: str, ylabel: str) -> str:
    return (
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'<text x="{PAD}" y="{H - PAD + 16}" font-size="11">{lo}</text>'
        f'<text x="{W - PAD}" y="{H - PAD + 16}" font-size="11" text-anchor="end">{hi}</text>'
        f'<text x="{W / 2}" y="{H - 6}" font-size="12" text-anchor="middle">{xlabel}</text>'
        f'<text x="12" y="{H / 2}" font-size="12" transform="rotate(-90 12 {H / 2})" '
        f'text-anchor="middle">{ylabel}</text>'
    )


def _svg(title: str, parts: list[str], keys: list[str]) -> str:
    legend = "".join(
        f'<rect x="{W - PAD - 110}" y="{PAD + 16 * i - 9}" width="10" height="10" fill="{COLORS[k]}"/>'
        f'<text x="{W - PAD - 95}" y="{PAD + 16 * i}" font-size="12">{k}</text>'
        for i, k in enumerate(keys)
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
        f"{''.join(parts)}{legend}</svg></figure>"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def replay_html(r: Replay) -> str:
    """The replay as an HTML page."""
    metrics = [{"metric": k, "value": v} for k, v in sorted(r.metrics.items())]
    title = f"Replay of {r.candidate} on endpoint {r.endpoint}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:right}th{background:#f4f4f4}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{r.kind}; positive class {html.escape(str(r.positive))}</p>"
        f"{_histograms(r)}{_calibration(r)}"
        f"<h2>Metrics</h2>{_table(metrics)}<h2>Segments</h2>{_table(r.segments)}"
        "</body></html>\n"
    )


def write_html(r: Replay, path: Path) -> None:
    path.write_text(replay_html(r), encoding="utf-8")
