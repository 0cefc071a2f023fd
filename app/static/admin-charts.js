// Charts for the admin pages, drawn with uPlot (app/static/vendor, MIT). Every chart has a table beside it
// carrying the same numbers, so the pages stay usable with charts turned off (the header's checkbox) or when
// uPlot is missing. A chart's element records how many points it draws in data-points (the tests read it).
"use strict";

const COLOURS = ["#0a66c2", "#b3261e", "#16794c", "#8a4baf", "#c77700", "#00838f", "#5d4037", "#616161"];

function chartsOn() {
  return typeof uPlot !== "undefined" && localStorage.getItem("crossmodal-admin-charts") !== "off";
}

function chartWidth(el) {
  return Math.max(260, Math.min(el.clientWidth || 420, 900));
}

// A line chart of series sharing one x axis: lines = [{label, values}], values aligned with xs (null: a gap).
function lineChart(el, title, xs, lines, opts = {}) {
  el.dataset.points = String(xs.length);
  if (!chartsOn() || !xs.length) { el.replaceChildren(); el.hidden = !chartsOn() ? true : el.hidden; return; }
  el.hidden = false;
  const data = [xs, ...lines.map((l) => l.values)];
  const key = lines.map((l) => l.label).join("|");
  if (el._chart && el._key === key) { el._chart.setData(data); return; }
  if (el._chart) el._chart.destroy();
  el.replaceChildren();
  el._key = key;
  el._chart = new uPlot({
    title, width: chartWidth(el), height: 220,
    scales: { x: { time: false }, y: opts.log ? { distr: 3 } : {} },
    axes: [
      { label: opts.xLabel || "step", ...(opts.xValues ? { values: (u, splits) => splits.map((v) => opts.xValues[v] ?? "") } : {}) },
      { label: opts.yLabel || "", size: 60, values: (u, splits) => splits.map(tick) },
    ],
    series: [{ label: opts.xLabel || "step" }, ...lines.map((l, i) => ({
      label: l.label, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true,
      points: { show: opts.points ?? xs.length < 40 },
    }))],
  }, data, el);
}

// an axis tick: small rates as 1.0e-4, others without float noise
function tick(v) {
  if (v == null) return "";
  if (v !== 0 && Math.abs(v) < 0.01) return v.toExponential(1);
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString() : String(+v.toFixed(3));
}

// Curves with x values of their own (recall@10 against QPS per ladder rung): uPlot's mode 2.
function xyChart(el, title, curves, opts = {}) {
  el.dataset.points = String(curves.reduce((n, c) => n + c.xs.length, 0));
  if (!chartsOn() || !curves.length) { el.replaceChildren(); return; }
  if (el._chart) el._chart.destroy();
  el.replaceChildren();
  const marks = opts.marks || [];
  const xs = curves.flatMap((c) => c.xs);
  const [lo, hi] = [Math.min(...xs), Math.max(...xs)];
  el._chart = new uPlot({
    mode: 2, title, width: chartWidth(el), height: 260,
    scales: { x: { time: false, range: () => [Math.max(0, lo - 0.05), Math.min(1.05, hi + 0.05)] }, y: { distr: opts.logY ? 3 : 1 } },
    axes: [{ label: opts.xLabel || "" }, { label: opts.yLabel || "", size: 70, values: (u, splits) => splits.map(tick) }],
    series: [{}, ...curves.map((c, i) => ({
      facets: [{ scale: "x", auto: true }, { scale: "y", auto: true }],
      label: c.label, stroke: COLOURS[i % COLOURS.length], width: c.dots ? 0 : 1.5,
      paths: c.dots ? () => null : uPlot.paths.linear(), points: { show: false },
    }))],
    hooks: { draw: [(u) => {
      curves.forEach((c, i) => dots(u, c, COLOURS[i % COLOURS.length]));
      marks.forEach((m) => drawMark(u, m));
    }] },
  }, [null, ...curves.map((c) => [c.xs, c.ys])], el);
}

// every point of a curve as a dot (the published choice as a big ringed one), drawn on the canvas
function dots(u, curve, colour) {
  const ctx = u.ctx;
  const r = (curve.size || 4) * devicePixelRatio / 2;
  ctx.save();
  curve.xs.forEach((x, j) => {
    const px = u.valToPos(x, "x", true);
    const py = u.valToPos(curve.ys[j], "y", true);
    ctx.beginPath();
    ctx.arc(px, py, r, 0, 2 * Math.PI);
    ctx.fillStyle = curve.dots ? "rgba(0,0,0,0)" : colour;
    ctx.strokeStyle = colour;
    ctx.lineWidth = curve.dots ? 3 * devicePixelRatio : 1;
    if (!curve.dots) ctx.fill();
    ctx.stroke();
  });
  ctx.restore();}

// A vertical dashed line at x (the target recall) with its label.
function drawMark(u, mark) {
  const x = Math.round(u.valToPos(mark.x, "x", true));
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = mark.colour || "#999";
  ctx.setLineDash([6, 4]);
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.fillStyle = mark.colour || "#555";
  ctx.font = `${12 * devicePixelRatio}px sans-serif`;
  ctx.fillText(mark.label, x + 4, u.bbox.top + 14 * devicePixelRatio);
  ctx.restore();
}

function barChart(el, title, labels, groups, opts = {}) {
  // grouped values per label drawn as points joined per group: x is the label's index
  const xs = labels.map((_, i) => i);
  if (el._chart) { el._chart.destroy(); el._chart = null; }
  lineChart(el, title, xs, groups, { ...opts, points: true, xLabel: opts.xLabel || "metric", xValues: labels });
}
