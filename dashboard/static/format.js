// format.js: numbers for people. Pure functions, no DOM.
import { when } from "./time.js";

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

// Axis steps for bytes: 1, 2 or 5 times a power of ten, in one binary unit (issue 18: the
// decimal steps uPlot picks by default read 381 and 191 MiB/s).
const MANTISSAS = [1, 2, 5, 10, 20, 50, 100, 200, 500];
export const BYTE_STEPS = UNITS.flatMap((_, k) => MANTISSAS.map((m) => m * 1024 ** k));

/** Tick labels for byte steps of ``step``: every label in the step's unit ("0", "2 MiB/s", "4 MiB/s"). */
export function byteTicks(values, step, suffix = "/s") {
  let k = 0;
  while (k < UNITS.length - 1 && step >= 1024 ** (k + 1)) k += 1;
  return values.map((v) => (v === 0 ? "0" : `${+(v / 1024 ** k).toFixed(2)} ${UNITS[k]}${suffix}`));
}

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

export { clock } from "./time.js";

/** A process start time: the time of day if today, else the date too. */
export const started = (t) => when(t, { seconds: true });

/** "ok" | "warn" | "bad" for a percentage, for colouring. */
export const level = (p, warn = 75, bad = 90) => (p == null ? "ok" : p >= bad ? "bad" : p >= warn ? "warn" : "ok");
