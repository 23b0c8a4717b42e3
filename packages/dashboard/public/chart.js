// @ts-check
// ferry's one chart code path, an ES module: the dashboard's charts (app.js imports it) and
// results.html's (inlined there as a module script with uPlot, so the report stays one file). A
// chart is a JSON description (ChartSpec), drawn by uPlot (its IIFE build, the one global) with a
// series per cell, a colour and a dash pattern each, and each series' best epoch ringed.

/**
 * @typedef {object} ChartSpec
 * @property {string} title
 * @property {string} xLabel
 * @property {string} yLabel
 * @property {string} xSeries the x series' name in the legend
 * @property {boolean} percent y values are shares, shown as percentages
 * @property {boolean} integerX ticks only at whole x values (epochs)
 * @property {number} lineWidth
 * @property {string[]} labels a label per series
 * @property {(number | null)[][]} data x values, then a y array per series (null: no value)
 * @property {number[]} best per series, the index of the x value to ring (-1: none)
 * @property {number} points how many points the longest series has (the page says it: tests follow it)
 */

/** @typedef {{ label: string, values: (number | null)[], best: number }} EpochSeries */

// Okabe-Ito (colour-blind safe), and a dash pattern per series so that colour is never the only cue.
const CHART_PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#999999', '#F0E442'];
const CHART_DASHES = [[], [8, 4], [2, 3], [10, 4, 2, 4], [1, 3], [14, 6]];

/**
 * A metric per epoch of several series (x: epochs 1..n).
 * @param {string} title
 * @param {string} yLabel
 * @param {EpochSeries[]} series
 * @param {boolean} percent
 * @returns {ChartSpec}
 */
function chartEpochs(title, yLabel, series, percent) {
  const n = Math.max(1, ...series.map((s) => s.values.length));
  return {
    title,
    xLabel: 'epoch',
    yLabel,
    xSeries: 'epoch',
    percent,
    integerX: true,
    lineWidth: 2,
    labels: series.map((s) => s.label),
    data: [
      Array.from({ length: n }, (_, i) => i + 1),
      ...series.map((s) => Array.from({ length: n }, (_, i) => s.values[i] ?? null)),
    ],
    best: series.map((s) => s.best),
    points: Math.max(0, ...series.map((s) => s.values.length)),
  };
}

/**
 * Step-level train loss of several series on a shared x axis (epochs elapsed, fractional).
 * @param {string[]} labels
 * @param {{ x: number, loss: number }[][]} steps
 * @returns {ChartSpec}
 */
function chartSteps(labels, steps) {
  const xs = [...new Set(steps.flatMap((s) => s.map((p) => p.x)))].sort((a, b) => a - b);
  const at = steps.map((s) => new Map(s.map((p) => [p.x, p.loss])));
  return {
    title: 'train loss per step',
    xLabel: 'epochs elapsed',
    yLabel: 'train loss',
    xSeries: 'epochs',
    percent: false,
    integerX: false,
    lineWidth: 1.5,
    labels,
    data: [xs, ...at.map((m) => xs.map((x) => m.get(x) ?? null))],
    best: [],
    points: xs.length,
  };
}

/**
 * The page's chart colours (CSS variables --fg and --grid, so light and dark both work).
 * @returns {{ fg: string, grid: string }}
 */
function chartTheme() {
  const style = getComputedStyle(document.body);
  const get = (/** @type {string} */ name) => style.getPropertyValue(name).trim() || '#888';
  return { fg: get('--fg'), grid: get('--grid') };
}

/**
 * uPlot's options for a chart.
 * @param {ChartSpec} spec
 * @param {number} width
 * @param {{ best: number[] }} rings read at each draw (updates change it in place)
 * @returns {import('uplot').Options}
 */
function chartOptions(spec, width, rings) {
  const { fg, grid } = chartTheme();
  const fmt = (/** @type {number} */ v) => (spec.percent ? (v * 100).toFixed(1) + '%' : v.toFixed(3));
  /** @type {(label: string, values?: import('uplot').Axis['values']) => import('uplot').Axis} */
  const axis = (label, values) => ({
    label,
    stroke: fg,
    grid: { stroke: grid },
    ticks: { stroke: grid },
    ...(values ? { values } : {}),
  });
  return {
    title: spec.title,
    width,
    height: 260,
    scales: { x: { time: false } },
    axes: [
      axis(
        spec.xLabel,
        spec.integerX ? (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : '')) : undefined,
      ),
      axis(spec.yLabel, spec.percent ? (_u, ticks) => ticks.map((t) => (t * 100).toFixed(0) + '%') : undefined),
    ],
    series: [
      { label: spec.xSeries },
      ...spec.labels.map((label, k) => ({
        label,
        stroke: CHART_PALETTE[k % CHART_PALETTE.length],
        dash: CHART_DASHES[k % CHART_DASHES.length],
        width: spec.lineWidth,
        spanGaps: true,
        value: (/** @type {unknown} */ _u, /** @type {number | null} */ v) => (v == null ? '-' : fmt(v)),
      })),
    ],
    hooks: { draw: [(u) => chartRings(u, rings.best)] },
  };
}

/**
 * Rings each series' best point.
 * @param {import('uplot')} u
 * @param {number[]} best
 */
function chartRings(u, best) {
  const ctx = u.ctx;
  best.forEach((b, k) => {
    const y = u.data[k + 1]?.[b];
    if (b < 0 || y == null) return;
    ctx.beginPath();
    ctx.strokeStyle = CHART_PALETTE[k % CHART_PALETTE.length] ?? '#000';
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.arc(u.valToPos(b + 1, 'x', true), u.valToPos(y, 'y', true), 5 * devicePixelRatio, 0, 2 * Math.PI);
    ctx.stroke();
  });
}

/**
 * Draws a chart into `box` (emptied first); `update` feeds it new data of the same series.
 * @param {HTMLElement} box
 * @param {ChartSpec} spec
 * @param {number} width
 * @returns {Chart}
 */
function chartPlot(box, spec, width) {
  box.innerHTML = '';
  const rings = { best: spec.best };
  const data = /** @type {import('uplot').AlignedData} */ (spec.data);
  const chart = new uPlot(chartOptions(spec, width, rings), data, box);
  box.dataset.series = String(spec.labels.length);
  box.dataset.points = String(spec.points);
  return {
    plot: chart,
    update(next) {
      rings.best = next.best;
      box.dataset.points = String(next.points);
      chart.setData(/** @type {import('uplot').AlignedData} */ (next.data));
    },
  };
}

/**
 * Draws every `[data-chart]` element of a page: its JSON holds chartEpochs's arguments (results.html
 * and curves.html, written by the CLI).
 */
function chartPlotAll() {
  for (const box of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[data-chart]'))) {
    /** @type {{ title: string, yLabel: string, series: EpochSeries[], percent: boolean }} */
    const a = JSON.parse(box.dataset.chart ?? '{}');
    const width = Math.min(720, Math.max(280, (box.parentElement?.clientWidth ?? 720) - 16));
    chartPlot(box, chartEpochs(a.title, a.yLabel, a.series, a.percent), width);
  }
}

/* exported FerryChart */
/** The chart module's interface (the dashboard's app.js and the CLI's report pages use it). */
export const FerryChart = {
  PALETTE: CHART_PALETTE,
  DASHES: CHART_DASHES,
  epochChart: chartEpochs,
  stepChart: chartSteps,
  plot: chartPlot,
  plotAll: chartPlotAll,
};
