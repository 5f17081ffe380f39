// format.js: numbers for people. Pure functions, no DOM.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(Math.abs(n) >= 10 || i === 0 ? 0 : 1)} ${UNITS[i]}`;
}

export const rate = (n) => (n == null ? "–" : `${bytes(n)}/s`);

export const pct = (n, digits = 1) => (n == null ? "–" : `${Number(n).toFixed(digits)} %`);

export function duration(seconds) {
  if (seconds == null) return "–";
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

const pad = (n) => String(n).padStart(2, "0");

export function clock(t) {
  if (t == null) return "–";
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A process start time: the time of day if today, else the date too. */
export function started(t) {
  const d = new Date(t * 1000);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return clock(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "ok" | "warn" | "bad" for a percentage, for colouring. */
export const level = (p, warn = 75, bad = 90) => (p == null ? "ok" : p >= bad ? "bad" : p >= warn ? "warn" : "ok");

/** Create an element with a class and text (never HTML). */
export function el(tag, className = "", text = null) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = String(text);
  return e;
}
