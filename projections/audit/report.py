"""The audit report: JSON for machines, one self-contained HTML page for people.

The HTML has no scripts and loads nothing: inline CSS, and for each tenant an inline SVG
chart of settled tokens over time (prompt and completion stacked), then the table of
discrepancies with the events involved.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from projections.audit.model import Discrepancy, jsonable
from projections.audit.run import AuditResult, generated_at

_W, _H, _PAD = 640, 170, 44
_MAX_TENANTS_CHARTED = 60


def to_json(result: AuditResult) -> dict[str, Any]:
    f = result.findings
    t = result.timings
    events = result.stats.events
    return {
        "ok": result.ok,
        "generated_at": generated_at().isoformat(),
        "options": {
            "tenant": result.options.tenant,
            "period": None if result.options.period is None else f"{result.options.period:%Y-%m}",
        },
        "log": {
            "read_to": result.read_to,
            "records": result.stats.records,
            "events": events,
            "undecodable": len(result.stats.undecodable),
        },
        "checks": {name: tally.to_json() for name, tally in f.tallies.items()},
        "views": jsonable(result.views),
        "pending_decisions": result.pending_decisions,
        "redelivered_requests": result.redelivered_requests,
        "discrepancies": [d.to_json() for d in f.discrepancies],
        "warnings": f.warnings,
        "tenants": jsonable(result.tenants),
        "timings": {
            "read_s": round(t.read_s, 3),
            "fold_s": round(t.fold_s, 3),
            "decide_s": round(t.decide_s, 3),
            "compare_s": round(t.compare_s, 3),
            "check_s": round(t.check_s, 3),
            "total_s": round(t.total_s, 3),
            "events_per_s": round(events / t.total_s, 1) if t.total_s else None,
        },
    }


def report_paths(path: Path) -> tuple[Path, Path]:
    """(JSON, HTML) paths for ``--report PATH``: PATH's suffix picks one, the other sits
    beside it; without a suffix both get one."""
    if path.suffix in (".json", ".html", ".htm"):
        base = path.with_suffix("")
        return (path if path.suffix == ".json" else base.with_suffix(".json")), (
            path if path.suffix != ".json" else base.with_suffix(".html")
        )
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".html")


def write(result: AuditResult, path: Path) -> tuple[Path, Path]:
    data = to_json(result)
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(data), encoding="utf-8")
    return json_path, html_path


# --- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.ok{color:#176b2c}.bad{color:#b3261e}
table{border-collapse:collapse;width:100%;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px} .tenant{margin:1.2em 0 2em} svg text{font:11px system-ui,sans-serif}
"""


def _e(value: Any) -> str:
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    return html.escape("—" if value is None else str(value))


def chart(points: list[list[Any]], title: str) -> str:
    """An SVG bar chart of ``[label, prompt, completion]`` points, stacked."""
    if not points:
        return "<p>No settled usage.</p>"
    top = max(p + c for _, p, c in points) or 1
    inner_w, inner_h = _W - 2 * _PAD, _H - 2 * _PAD + 14
    step = inner_w / len(points)
    bar = max(1.0, step * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(title)}">',
        f'<text x="{_PAD}" y="14">{_e(title)}</text>',
        f'<line x1="{_PAD}" y1="{_PAD + inner_h - 14}" x2="{_W - _PAD}" '
        f'y2="{_PAD + inner_h - 14}" stroke="#999"/>',
        f'<text x="4" y="{_PAD - 16}">{top:,}</text>',
        f'<text x="4" y="{_PAD + inner_h - 14}">0</text>',
    ]
    base = _PAD + inner_h - 14
    scale = (inner_h - 30) / top
    for i, (label, prompt, completion) in enumerate(points):
        x = _PAD + i * step
        hp, hc = prompt * scale, completion * scale
        tip = f"{label}: {prompt:,} prompt + {completion:,} completion tokens"
        parts.append(
            f"<g><title>{_e(tip)}</title>"
            f'<rect x="{x:.1f}" y="{base - hp:.1f}" width="{bar:.1f}" height="{hp:.1f}" '
            f'fill="#4c78a8"/>'
            f'<rect x="{x:.1f}" y="{base - hp - hc:.1f}" width="{bar:.1f}" height="{hc:.1f}" '
            f'fill="#f58518"/></g>'
        )
    parts.append(f'<text x="{_PAD}" y="{_H - 6}">{_e(points[0][0])}</text>')
    parts.append(f'<text x="{_W - _PAD}" y="{_H - 6}" text-anchor="end">{_e(points[-1][0])}</text>')
    parts.append(
        f'<text x="{_W - _PAD}" y="14" text-anchor="end"><tspan fill="#4c78a8">■ prompt</tspan> '
        f'<tspan fill="#f58518">■ completion</tspan></text></svg>'
    )
    return "".join(parts)


def _discrepancy_rows(items: list[dict[str, Any]]) -> str:
    rows = []
    for d in items:
        events = "<br>".join(
            f"<code>{_e(r['stream'])}:{r['offset']} {_e(r['type'])} {_e(r['event_id'])}</code>"
            for r in d["events"]
        )
        if d["more_events"]:
            events += f"<br>… and {d['more_events']} more"
        rows.append(
            f"<tr><td>{_e(d['check'])}</td><td>{_e(d['tenant'])}</td><td>{_e(d['field'])}</td>"
            f"<td>{_e(d['expected'])}</td><td>{_e(d['found'])}</td><td>{events}"
            f"{'<br>' + _e(d['detail']) if d['detail'] else ''}</td></tr>"
        )
    return "".join(rows)


def render_html(data: dict[str, Any]) -> str:
    ok = data["ok"]
    status = (
        '<p class="ok"><b>Everything agrees.</b></p>'
        if ok
        else f'<p class="bad"><b>{len(data["discrepancies"])} discrepancies.</b></p>'
    )
    checks = "".join(
        f"<tr><td>{_e(name)}</td><td class='{'ok' if c['ok'] else 'bad'}'>"
        f"{'ok' if c['ok'] else 'FAILED'}</td><td class='num'>{c['checked']:,}</td>"
        f"<td class='num'>{c['failed']:,}</td></tr>"
        for name, c in data["checks"].items()
    )
    disc = (
        "<p>None.</p>"
        if not data["discrepancies"]
        else "<table><tr><th>check</th><th>tenant</th><th>field</th><th>expected</th>"
        "<th>found</th><th>events involved</th></tr>"
        + _discrepancy_rows(data["discrepancies"])
        + "</table>"
    )
    warnings = "".join(f"<li>{_e(w)}</li>" for w in data["warnings"])
    tenants = []
    for i, (tid, t) in enumerate(sorted(data["tenants"].items())):
        r = t["reservations"]
        usage = "".join(
            f"<tr><td>{_e(p)}</td><td class='num'>{u['requests']:,}</td>"
            f"<td class='num'>{u['prompt']:,}</td><td class='num'>{u['completion']:,}</td>"
            f"<td class='num'>{_e(t['invoices'].get(p, {}).get('total'))} "
            f"{_e(' '.join(t['invoices'].get(p, {}).get('currency', [])))}</td></tr>"
            for p, u in sorted(t["usage"].items())
        )
        figure = (
            chart(t["series"]["points"], f"{tid}: settled tokens per {t['series']['bucket']}")
            if i < _MAX_TENANTS_CHARTED
            else ""
        )
        tenants.append(
            f"<div class='tenant'><h3>{_e(tid)}</h3>{figure}"
            f"<p>reservations: {r['made']:,} made, {r['settled']:,} settled, "
            f"{r['released']:,} released, {r['expired']:,} expired, {r['open']:,} open; "
            f"{r['rejected']:,} requests rejected. Tokens: {r['reserved']:,} reserved = "
            f"{r['charged']:,} charged + {r['returned']:,} returned + "
            f"{r['released_tokens']:,} released + {r['expired_tokens']:,} expired + "
            f"{r['open_tokens']:,} open.</p>"
            "<table><tr><th>period</th><th>requests billed</th><th>prompt tokens</th>"
            f"<th>completion tokens</th><th>invoice</th></tr>{usage}</table></div>"
        )
    log = data["log"]
    timings = data["timings"]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>quotaflow audit</title>"
        f"<style>{_CSS}</style></head><body><h1>quotaflow audit</h1>"
        f"<p>{_e(data['generated_at'])} — {log['records']:,} records, {log['events']:,} events "
        f"read in {timings['total_s']} s; tenant {_e(data['options']['tenant'] or 'all')}, "
        f"period {_e(data['options']['period'] or 'all')}.</p>{status}"
        "<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>checked</th>"
        f"<th>failed</th></tr>{checks}</table>"
        f"<h2>Discrepancies</h2>{disc}"
        + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
        + f"<h2>Tenants</h2>{''.join(tenants) or '<p>None.</p>'}</body></html>\n"
    )


def summary_lines(result: AuditResult) -> list[str]:
    """A few lines for the terminal."""
    out = []
    for d in result.findings.discrepancies[:50]:
        out.append(_line(d))
    if len(result.findings.discrepancies) > 50:
        out.append(f"… and {len(result.findings.discrepancies) - 50} more (see the report)")
    return out


def _line(d: Discrepancy) -> str:
    culprit = f" [{d.events[0]}]" if d.events else ""
    what = f"{d.check}: {d.tenant or '-'} {d.field}"
    return f"{what}: expected {d.expected!r}, found {d.found!r}{culprit}"
