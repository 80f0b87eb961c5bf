"""HTML of the page, from what :mod:`web.view` read (no I/O here).

The overview is rendered on the server, so it reads with JavaScript off and
refreshes itself every few seconds; the sensor page is a shell whose script
(``static/sensor.js``) fetches the chart data and draws it with the vendored
uPlot.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

REFRESH_S = 10
MB = 1024 * 1024


def _layout(title: str, body: str, *, head: str = "", refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{meta}"
        f"<title>{escape(title)}</title>"
        "<link rel=\"stylesheet\" href=\"/static/style.css\">"
        f"{head}</head><body>{body}</body></html>\n"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _num(x: float | None, digits: int = 3) -> str:
    return "&ndash;" if x is None else f"{x:.{digits}g}"


def _flags(flags: dict[str, str] | None) -> str:
    if flags is None:
        return '<span class="muted">not yet evaluated</span>'
    cells = []
    for quantity, names in flags.items():
        css = "ok" if names == "ok" else "flag"
        cells.append(f'{quantity} <span class="{css}">{escape(names)}</span>')
    return "<br>".join(cells)


def _model(row: dict[str, Any]) -> str:
    model, training = row["model"], row["training"]
    if model is None:
        text = '<span class="muted">seasonal-naive</span>'
    else:
        mae = []
        for quantity, value in (model.get("mae_model") or {}).items():
            naive = (model.get("mae_naive") or {}).get(quantity)
            mae.append(f"{quantity} {_num(value)} vs {_num(naive)}")
        text = f"{escape(str(model['version']))}<br><small>MAE {escape('; '.join(mae))}</small>"
    if training and training["outcome"] != "accepted":
        text += (f'<br><small class="flag" title="{escape(str(training["detail"]))}">'
                 f'last training {escape(str(training["outcome"]))}</small>')
    return text


def _nights(nights: list[dict[str, Any]]) -> str:
    if not nights:
        return '<span class="muted">no night yet</span>'
    marks = []
    for n in nights:
        if n["leak"] is None:
            css, mark = "muted", "&middot;"
        elif n["leak"]:
            css, mark = "flag", "!"
        else:
            css, mark = "ok", "&check;"
        title = f"{n['night']}: MNF {_num(n['mnf'])}, threshold {_num(n['threshold'])}"
        marks.append(f'<span class="night {css}" title="{escape(title)}">{mark}</span>')
    return "".join(marks)


def overview_html(site: dict[str, Any], health: dict[str, Any]) -> str:
    """The site overview: one row per sensor, the uplinks, restarts, store and disk."""
    rows = []
    for row in site["sensors"]:
        stale = row["stale"]
        age = _age(row["age_s"])
        status = (f'<span class="badge stale">stale</span> {age}' if stale
                  else f'<span class="badge live">live</span> {age}')
        criteria = row["criteria"]
        rows.append(
            f'<tr class="{"stale" if stale else "live"}" data-sensor="{escape(row["sensor"])}">'
            f'<td><a href="/sensor/{escape(row["sensor"])}">{escape(row["sensor"])}</a></td>'
            f'<td class="age">{status}<br><small>{escape(row["last_time"] or "")}</small></td>'
            f'<td>{_num(row["flow"])} m&sup3;/h<br>{_num(row["pressure"])} kgf/cm&sup2;</td>'
            f'<td class="flags">{_flags(row["flags"])}</td>'
            f'<td>{"v%d <small>%s</small>" % (criteria["version"], escape(criteria["source"])) if criteria else "<span class=flag>none</span>"}</td>'
            f'<td>{_model(row)}</td>'
            f'<td class="nights">{_nights(row["nights"])}</td></tr>'
        )
    uplinks = "".join(
        f'<li>{escape(u["name"])}: {u["backlog"]} frame(s) waiting'
        + (f', oldest {_age(u["oldest_unsent_s"])}' if u["oldest_unsent_s"] is not None else "")
        + "</li>" for u in site["uplinks"])
    restarts = ", ".join(f"{escape(role)} {n}" for role, n in site["restarts"].items() if n) or "none"
    disk = ("unknown" if site["disk_free"] is None else
            f'{site["disk_free"] / MB:,.0f} MB free of {site["disk_total"] / MB:,.0f} MB')
    actors = ('<span class="ok">all answer</span>' if health["answered"]
              else f'<span class="flag">{escape(health["detail"])}</span>')
    body = (
        f'<header><h1>{escape(site["site"])}</h1><span>{escape(site["now"])} '
        f'({escape(site["timezone"])})</span></header><main>'
        '<table class="sensors"><thead><tr><th>sensor</th><th>last reading</th><th>values</th>'
        '<th>current flags</th><th>criteria</th><th>model (MAE vs naive)</th>'
        '<th>nights (oldest &rarr; newest)</th></tr></thead><tbody>'
        + ("".join(rows) or '<tr><td colspan="7" class="muted">no reading stored yet</td></tr>')
        + '</tbody></table><section class="site"><h2>gateway</h2><ul>'
        f'<li>actors: {actors}</li>'
        f'<li>outbox: <ul>{uplinks}</ul></li>'
        f'<li>restarts: {restarts}</li>'
        f'<li>rejected lines: {site["rejects"]}</li>'
        f'<li>store: {escape(site["store_path"])}, {site["store_used_pct"]}% used</li>'
        f'<li>disk: {disk}</li></ul>'
        '<p class="muted">read-only; <a href="/metrics">/metrics</a>, '
        '<a href="/healthz">/healthz</a>, <a href="/api/overview">JSON</a></p></section></main>'
    )
    return _layout(f'{site["site"]}: overview', body, refresh=True)


def sensor_html(sensor: str, ranges: list[str], chosen: str) -> str:
    """The sensor page's shell; ``static/sensor.js`` fetches and draws the charts."""
    buttons = "".join(
        f'<a class="range{" chosen" if r == chosen else ""}" href="?range={r}">{r}</a>'
        for r in ranges)
    # Raw text inside <script>: only "</" could end it early.
    config = json.dumps({"sensor": sensor, "range": chosen}).replace("<", "\\u003c")
    body = (
        f'<header><h1><a href="/">&larr;</a> sensor {escape(sensor)}</h1>'
        f'<nav>{buttons}</nav><span id="meta"></span></header><main>'
        '<section><h2>flow, m&sup3;/h</h2><div class="chart" id="chart-flow"></div></section>'
        '<section><h2>pressure, kgf/cm&sup2;</h2><div class="chart" id="chart-pressure"></div></section>'
        '<section><h2>minimum night flow, m&sup3;/h</h2><div class="chart" id="chart-night"></div></section>'
        '<div id="tip" class="tip" hidden></div>'
        f'<script id="page-config" type="application/json">{config}</script>'
        '</main>'
    )
    head = ('<link rel="stylesheet" href="/static/uPlot.min.css">'
            '<script src="/static/uPlot.iife.min.js"></script>'
            '<script defer src="/static/sensor.js"></script>')
    return _layout(f"sensor {sensor}", body, head=head)


def message_html(title: str, text: str) -> str:
    """A short page for an error (401, 404...)."""
    return _layout(title, f"<main><h1>{escape(title)}</h1><p>{escape(text)}</p></main>")
