// charts.js: streaming time-series charts on uPlot (from npm, served under /dashboard/vendor/).
import uPlot from "/dashboard/vendor/uplot/dist/uPlot.esm.js";
import { el } from "./dom.js";
import { BYTE_STEPS, byteTicks } from "./format.js";
import { clock, minutes } from "./time.js";

const HEIGHT = 150;
// The axes in the theme's colours (base.css), read when drawn: a canvas cannot use var(--muted),
// and light-dark() needs resolving, which a probe element's computed colour does.
const probe = el("span", { hidden: true });
document.body.append(probe);
const themed = {};
function cssColor(name) {
  if (!themed[name]) {
    probe.style.color = `var(${name})`;
    themed[name] = getComputedStyle(probe).color;
  }
  return themed[name];
}
const AXIS = {
  stroke: () => cssColor("--muted"),
  font: "11px system-ui, sans-serif",
  grid: { stroke: () => cssColor("--panel-2"), width: 1 },
  ticks: { stroke: () => cssColor("--border"), width: 1, size: 4 },
};
const plots = new Set();
window.addEventListener("themechange", () => {
  for (const k of Object.keys(themed)) delete themed[k];
  for (const p of plots) p.redraw(false, true);
});

// Time ticks every 10 s to 10 min, at most one per 64 px: a 5-minute window on a desktop panel
// gets a label a minute (there was one per 5 minutes). HH:MM once the step is whole minutes.
const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
const timeTicks = (ticks, step) => ticks.map((t) => (step >= 60 ? minutes(t) : clock(t)));

export class Chart {
  /**
   * @param {HTMLElement} container  where the chart goes; gets data-points="<n>" as it fills
   * @param {{series: {key: string, label: string, color: string}[], max?: number, format: (v:number)=>string}} spec
   */
  constructor(container, spec) {
    this.container = container;
    this.keys = spec.series.map((s) => s.key);
    this.hovered = null;
    this.window = 300;
    this.data = [[], ...this.keys.map(() => [])];
    this.format = spec.format;
    // Our own legend with the latest values, in the panel's header (uPlot's shows "–" until hovered).
    this.legend = container.parentElement.querySelector(".legend");
    this.at = el("span", "at");
    this.legend?.append(this.at);
    this.values = spec.series.map((s) => {
      const marker = el("i");
      marker.style.background = s.color;
      const value = el("b", null, "–");
      const item = el("span", null, marker, `${s.label} `, value);
      container.parentElement.querySelector(".legend")?.append(item);
      return value;
    });
    const yRange = spec.max ? [0, spec.max] : (u, min, max) => [0, Math.max(max * 1.15, 1)];
    // What the axes show, kept on the container too (data-x-ticks, data-y-ticks): canvas text
    // is not in the DOM, and tests and curious people can read it there.
    const label = (axis, fn) => (u, ticks, i, space, step) => {
      const out = fn(ticks, step);
      container.dataset[axis] = out.join(" | ");
      return out;
    };
    const opts = {
      width: Math.max(container.clientWidth, 200),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: false },
      padding: [8, 14, 0, 0],
      // The x axis always spans the whole window, so the ticks do not jump as it fills.
      scales: { x: { time: true, range: (u, min, max) => (max == null ? [min, max] : [max - this.window, max]) }, y: { range: yRange } },
      axes: [
        { ...AXIS, space: 64, size: 30, incrs: TIME_STEPS, values: label("xTicks", timeTicks) },
        {
          ...AXIS,
          size: 70,
          space: 24,
          ...(spec.bytes ? { incrs: BYTE_STEPS } : {}),
          values: label("yTicks", spec.bytes ? (ticks, step) => byteTicks(ticks, step) : (ticks) => ticks.map(spec.format)),
        },
      ],
      series: [
        {},
        ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          fill: `${s.color}22`,
          points: { show: false },
        })),
      ],
      // Hovering shows the values under the cursor in the panel's legend, with their time;
      // leaving shows the latest again.
      hooks: { setCursor: [(u) => this.showValues(u.cursor.idx)] },
    };
    this.plot = new uPlot(opts, this.data, container);
    plots.add(this.plot);
    new ResizeObserver(() => {
      const width = Math.max(container.clientWidth, 200);
      const height = Math.max(container.clientHeight, HEIGHT);
      if (width !== this.plot.width || height !== this.plot.height) this.plot.setSize({ width, height });
    }).observe(container);
  }

  /** Start over from a list of history points ({t, key: value, ...}). */
  reset(points, windowSeconds) {
    if (windowSeconds) this.window = windowSeconds;
    this.data = [points.map((p) => p.t), ...this.keys.map((k) => points.map((p) => p[k]))];
    this.draw();
  }

  /** Add one point; drop what has left the time window. */
  push(point) {
    const xs = this.data[0];
    if (xs.length && point.t <= xs[xs.length - 1]) return; // a frame we already have
    xs.push(point.t);
    this.keys.forEach((k, i) => this.data[i + 1].push(point[k]));
    let drop = 0;
    const cutoff = point.t - this.window;
    while (drop < xs.length && xs[drop] < cutoff) drop += 1;
    if (drop) this.data = this.data.map((col) => col.slice(drop));
    this.draw();
  }

  draw() {
    this.plot.setData(this.data);
    this.showValues(this.hovered);
    this.container.dataset.points = String(this.data[0].length);
  }

  /** The values at point ``idx`` (under the cursor), or the latest when ``idx`` is null. */
  showValues(idx) {
    this.hovered = idx == null || idx < 0 ? null : idx;
    const at = this.hovered ?? this.data[0].length - 1;
    this.values.forEach((b, i) => {
      const v = at >= 0 ? this.data[i + 1][at] : null;
      b.textContent = v == null ? "–" : this.format(v);
    });
    this.at.textContent = this.hovered == null ? "" : `at ${clock(this.data[0][at])}`;
    this.container.dataset.hover = this.hovered == null ? "" : String(this.data[0][at]);
  }
}
