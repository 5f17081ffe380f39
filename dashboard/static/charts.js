// charts.js: streaming time-series charts on uPlot (from npm, served under /dashboard/vendor/).
import uPlot from "/dashboard/vendor/uplot/dist/uPlot.esm.js";

const HEIGHT = 150;
// The axes in the theme's colours (base.css), read when drawn: a canvas cannot use var(--muted),
// and light-dark() needs resolving, which a probe element's computed colour does.
const probe = document.createElement("span");
probe.hidden = true;
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

const pad = (n) => String(n).padStart(2, "0");
function hms(t) {
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export class Chart {
  /**
   * @param {HTMLElement} container  where the chart goes; gets data-points="<n>" as it fills
   * @param {{series: {key: string, label: string, color: string}[], max?: number, format: (v:number)=>string}} spec
   */
  constructor(container, spec) {
    this.container = container;
    this.keys = spec.series.map((s) => s.key);
    this.window = 300;
    this.data = [[], ...this.keys.map(() => [])];
    this.format = spec.format;
    // Our own legend with the latest values, in the panel's header (uPlot's shows "–" until hovered).
    this.values = spec.series.map((s) => {
      const item = document.createElement("span");
      const marker = document.createElement("i");
      marker.style.background = s.color;
      const value = document.createElement("b");
      value.textContent = "–";
      item.append(marker, `${s.label} `, value);
      container.parentElement.querySelector(".legend")?.append(item);
      return value;
    });
    const yRange = spec.max ? [0, spec.max] : (u, min, max) => [0, Math.max(max * 1.15, 1)];
    const opts = {
      width: Math.max(container.clientWidth, 200),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, points: { size: 5 } },
      legend: { show: false },
      padding: [8, 14, 0, 0],
      scales: { x: { time: true }, y: { range: yRange } },
      axes: [
        { ...AXIS, space: 70, size: 30, values: (u, ticks) => ticks.map(hms) },
        { ...AXIS, size: 64, values: (u, ticks) => ticks.map((v) => spec.format(v)) },
      ],
      series: [
        { value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleTimeString()) },
        ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          fill: `${s.color}22`,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : spec.format(v)),
        })),
      ],
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
    const last = this.data[0].length - 1;
    this.values.forEach((b, i) => {
      const v = last >= 0 ? this.data[i + 1][last] : null;
      b.textContent = v == null ? "–" : this.format(v);
    });
    this.container.dataset.points = String(this.data[0].length);
  }
}
