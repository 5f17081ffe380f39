// time.js: one way to write a time on every page (issue 18: there were four). Unix seconds in,
// 24-hour local time out, dates as YYYY-MM-DD: "14:05:09", "14:05", "2026-12-02 14:05".
// Pure functions, no DOM.

const pad = (n) => String(n).padStart(2, "0");
const at = (t) => new Date(t * 1000);
const ymd = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;

/** "14:05:09" */
export function clock(t) {
  if (t == null || !Number.isFinite(t)) return "–";
  const d = at(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "14:05" */
export function minutes(t) {
  if (t == null || !Number.isFinite(t)) return "–";
  const d = at(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The time of day if today ("14:05", or "14:05:09" with seconds), else the date too. */
export function when(t, { seconds = false } = {}) {
  if (t == null || !Number.isFinite(t)) return "–";
  const d = at(t);
  const time = seconds ? clock(t) : minutes(t);
  return d.toDateString() === new Date().toDateString() ? time : `${ymd(d)} ${time}`;
}

/** "2026-12-03 14:05:09": for titles, where there is room for all of it. */
export function full(t) {
  if (t == null || !Number.isFinite(t)) return "–";
  return `${ymd(at(t))} ${clock(t)}`;
}
