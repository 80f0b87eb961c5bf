// The sensor page: fetches /api/sensor/<id>?range=... and draws it with uPlot.
// No build step, no network beyond the gateway: uPlot is served from /static/.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const tip = document.getElementById("tip");
  const COLORS = {
    value: "#1f5fa8", band: "rgba(46, 160, 67, 0.16)", bandLine: "rgba(46, 160, 67, 0.7)",
    forecast: "#d9730d", forecastBand: "rgba(217, 115, 13, 0.16)", flag: "#c62828",
    baseline: "#555", threshold: "#c62828",
  };
  // Charts and their data, for a look from the browser's console (and the tests).
  window.wdn = { charts: {}, data: null, markers: {} };

  // JSON null means two things (see web/series.py align): no point of this
  // series at that time (undefined: the line goes on) or a gap (null: it breaks).
  function columns(aligned, names) {
    const out = [aligned.x];
    for (const name of names) {
      const ys = aligned.y[name].map((v) => (v === null ? undefined : v));
      for (const i of aligned.gaps[name] || []) ys[i] = null;
      out.push(ys);
    }
    return out;
  }

  function tzDate(zone) {
    return (ts) => uPlot.tzDate(new Date(ts * 1e3), zone);
  }

  function width(el) {
    return Math.max(320, el.clientWidth || 800);
  }

  function line(label, stroke, extra) {
    return Object.assign({ label, stroke, width: 1.5, points: { show: false } }, extra || {});
  }

  function quantityChart(el, quantity, chart, zone) {
    const names = ["value", "band_low", "band_high", "forecast", "forecast_low",
      "forecast_high", "flags"];
    const stepped = uPlot.paths.stepped({ align: 1 });
    const opts = {
      width: width(el), height: 260, tzDate: tzDate(zone),
      cursor: { points: { show: false } },
      legend: { live: true },
      series: [
        {},
        line(quantity, COLORS.value, { spanGaps: false }),
        line("band low", COLORS.bandLine, { width: 0.75, paths: stepped, spanGaps: true }),
        line("band high", COLORS.bandLine, { width: 0.75, paths: stepped, spanGaps: true }),
        line("forecast", COLORS.forecast, { dash: [6, 4], spanGaps: true }),
        line("forecast P10", "rgba(217,115,13,0.5)", { width: 1, spanGaps: true }),
        line("forecast P90", "rgba(217,115,13,0.5)", { width: 1, spanGaps: true }),
        {
          label: "flags raised", stroke: COLORS.flag, fill: COLORS.flag, width: 0,
          paths: () => null, points: { show: true, size: 9, stroke: COLORS.flag, fill: "#fff", width: 2 },
        },
      ],
      bands: [
        { series: [3, 2], fill: COLORS.band },
        { series: [6, 5], fill: COLORS.forecastBand },
      ],
      hooks: { setCursor: [(u) => hover(u, chart.markers)] },
    };
    el.textContent = "";
    return new uPlot(opts, columns(chart.data, names), el);
  }

  function nightChart(el, night, zone) {
    const opts = {
      width: width(el), height: 200, tzDate: tzDate(zone),
      cursor: { points: { show: true } },
      series: [
        {},
        line("MNF", COLORS.value, { spanGaps: true, points: { show: true, size: 5 } }),
        line("expected (baseline)", COLORS.baseline, { dash: [4, 4], spanGaps: true }),
        line("threshold", COLORS.threshold, { dash: [8, 4], spanGaps: true }),
        {
          label: "leak sign", stroke: COLORS.flag, width: 0, paths: () => null,
          points: { show: true, size: 11, stroke: COLORS.flag, fill: COLORS.flag },
        },
      ],
    };
    el.textContent = "";
    return new uPlot(opts, columns(night.data, ["mnf", "baseline", "threshold", "leak"]), el);
  }

  // The flag marker nearest the cursor (within a few pixels) shows why it fired:
  // the same line as `export detections`.
  function hover(u, markers) {
    const { left, top } = u.cursor;
    let best = null;
    let bestDistance = 12;
    if (left != null && left >= 0) {
      for (const m of markers) {
        const dx = u.valToPos(m.t, "x") - left;
        const dy = u.valToPos(m.y, "y") - top;
        const distance = Math.hypot(dx, dy);
        if (distance < bestDistance) {
          best = m;
          bestDistance = distance;
        }
      }
    }
    if (!best) {
      tip.hidden = true;
      return;
    }
    tip.textContent = best.methods.join(", ") + " raised\n" + best.text;
    const box = u.over.getBoundingClientRect();
    tip.style.left = (window.scrollX + box.left + u.valToPos(best.t, "x") + 12) + "px";
    tip.style.top = (window.scrollY + box.top + u.valToPos(best.y, "y") + 12) + "px";
    tip.hidden = false;
  }

  async function load() {
    const url = `/api/sensor/${encodeURIComponent(config.sensor)}?range=${encodeURIComponent(config.range)}`;
    const meta = document.getElementById("meta");
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin" });
    } catch (err) {
      meta.textContent = "the gateway does not answer: " + err;
      return;
    }
    const body = await response.json();
    if (!response.ok) {
      meta.textContent = body.error || response.statusText;
      return;
    }
    window.wdn.data = body;
    meta.textContent = `newest reading ${body.end_local}; ${body.readings} readings in range; ` +
      (body.forecast_issued ? `forecast issued ${body.forecast_issued} (${body.forecast_source})` : "no forecast yet");
    for (const quantity of ["flow", "pressure"]) {
      const chart = body.charts[quantity];
      window.wdn.markers[quantity] = chart.markers;
      window.wdn.charts[quantity] = quantityChart(
        document.getElementById("chart-" + quantity), quantity, chart, body.timezone);
    }
    window.wdn.charts.night = nightChart(document.getElementById("chart-night"), body.night, body.timezone);
    document.body.dataset.ready = "1";
  }

  window.addEventListener("resize", () => {
    for (const [name, u] of Object.entries(window.wdn.charts)) {
      u.setSize({ width: width(document.getElementById("chart-" + name)), height: u.height });
    }
  });
  load();
})();
