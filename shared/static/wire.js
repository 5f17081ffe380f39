// wire.js: the wire view (issue 18), a panel on every page showing live what the pattern puts on
// the wire: each SSE frame the page receives (↓: id, event, data, size, time) and each request it
// sends (↑: method, URL, body, status, round-trip time), with pause, clear and copy-as-curl.
// Open it with the "Wire" button in the header or ?wire=1 in the address (the index links each
// pattern so).
//
// - Frames come from sse.js, which dispatches a "sse:frame" CustomEvent on window for each one:
//   {url, id, event, data, size, time}. EventSource gives a frame without an id: line the last
//   id seen, so that is the id shown.
// - Requests are seen by wrapping window.fetch, so this module must run before the page's own
//   scripts (its <script type="module"> comes first: modules run in document order). GETs are
//   left out: they read state; the pattern's upstream half is what the page sends.
// - Everything shown is text (textContent), never HTML: frame data is whatever the server sent.
import { el } from "./dom.js";
import { clock } from "./time.js";

const MAX_ROWS = 500;
const MAX_TEXT = 4000;
const param = () => new URLSearchParams(location.search).get("wire");

let panel = null;
let list = null;
let counts = null;
let paused = false;
const held = []; // rows that came in while paused, shown on resume
let frames = 0;
let requests = 0;

const clip = (s) => (s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}… (${s.length} characters)` : s);
const SHORT = 240;

/** A frame's or a request's text: whole if short, else its start with the rest behind a
 * disclosure (a snapshot frame is many kilobytes). No inner scroll box: the list scrolls. */
function textBlock(cls, text) {
  const pre = el("pre", cls, clip(text));
  if (text.length <= SHORT) return pre;
  const box = el("details", `${cls}-more`);
  box.append(el("summary", cls, `${text.slice(0, SHORT)}…`), pre);
  box.addEventListener("toggle", () => box.querySelector("summary").classList.toggle("open", box.open));
  return box;
}
const sizeText = (n) => (n == null ? "" : n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`);
const pathOf = (url) => {
  const u = new URL(url, location.href);
  return u.origin === location.origin ? u.pathname + u.search : u.href;
};

/** A shell-safe curl command line for a request: what to paste in a terminal to send it again. */
export function curl(method, url, headers, body) {
  const q = (s) => `'${String(s).replaceAll("'", "'\\''")}'`;
  const parts = ["curl", "-i", "-X", method, q(new URL(url, location.href).href)];
  for (const [k, v] of headers) parts.push("-H", q(`${k}: ${v}`));
  if (typeof body === "string") parts.push("--data-raw", q(body));
  else if (body != null) parts.push("--data-binary", "@FILE");
  return parts.join(" ");
}

// -- what is recorded -------------------------------------------------------------------------

function frame({ url, id, event, data, size, time }) {
  if (!list) return; // the panel was never opened: nothing is kept
  frames += 1;
  const row = el("li", "wire-row down");
  const head = el("div", "wire-head");
  head.append(
    el("span", "wire-time", clock(time / 1000)),
    el("span", "wire-dir", "↓ SSE"),
    el("span", "wire-event", event),
    el("span", "wire-id", id ? `id ${id}` : ""),
    el("span", "wire-size", sizeText(size)),
    el("span", "wire-url", pathOf(url)),
  );
  row.dataset.event = event;
  row.dataset.id = id || "";
  row.dataset.data = data.length <= MAX_TEXT ? data : "";
  row.append(head, textBlock("wire-data", data));
  add(row);
}

function request(rec) {
  requests += 1;
  const row = el("li", "wire-row up pending");
  const head = el("div", "wire-head");
  const status = el("span", "wire-status", "…");
  const rtt = el("span", "wire-rtt", "");
  const copy = el("button", "wire-copy", "copy as curl");
  copy.type = "button";
  copy.setAttribute("aria-label", `Copy ${rec.method} ${pathOf(rec.url)} as a curl command`);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(rec.curl);
      copy.textContent = "copied";
    } catch {
      copy.textContent = "select it below"; // no clipboard: the command is shown in the row
    }
    setTimeout(() => (copy.textContent = "copy as curl"), 1500);
  });
  head.append(
    el("span", "wire-time", clock(rec.time / 1000)),
    el("span", "wire-dir", `↑ ${rec.method}`),
    el("span", "wire-url", pathOf(rec.url)),
    status,
    rtt,
    copy,
  );
  const sent = textBlock("wire-data", rec.body == null ? "(no body)" : typeof rec.body === "string" ? rec.body : "(binary body)");
  const answer = el("pre", "wire-answer", "");
  const command = el("code", "wire-curl", rec.curl);
  row.dataset.method = rec.method;
  row.dataset.url = pathOf(rec.url);
  row.append(head, sent, answer, command);
  add(row);
  return {
    done(res, text, ms) {
      row.classList.remove("pending");
      row.classList.toggle("failed", !res.ok);
      row.dataset.status = String(res.status);
      status.textContent = `${res.status} ${res.statusText || ""}`.trim();
      rtt.textContent = `${Math.round(ms)} ms`;
      answer.textContent = text == null ? "" : clip(text);
    },
    error(err, ms) {
      row.classList.remove("pending");
      row.classList.add("failed");
      row.dataset.status = "0";
      status.textContent = `network error: ${err.message}`;
      rtt.textContent = `${Math.round(ms)} ms`;
    },
  };
}

function add(row) {
  if (paused) {
    held.push(row);
    if (held.length > MAX_ROWS) held.shift();
  } else {
    list.prepend(row);
    while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
  }
  refresh();
}

function refresh() {
  counts.textContent = `${frames} frames ↓ · ${requests} requests ↑${paused ? ` · ${held.length} held` : ""}`;
}

window.addEventListener("sse:frame", (ev) => frame(ev.detail));

const nativeFetch = window.fetch.bind(window);
window.fetch = async (input, init = {}) => {
  const method = String(init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
  if (!list || method === "GET" || method === "HEAD") return nativeFetch(input, init);
  const url = new URL(input instanceof Request ? input.url : String(input), location.href).href;
  const body = init.body ?? null;
  const headers = [...new Headers(init.headers || (input instanceof Request ? input.headers : undefined))];
  const rec = request({ method, url, body, time: Date.now(), curl: curl(method, url, headers, body) });
  const began = performance.now();
  try {
    const res = await nativeFetch(input, init);
    const ms = performance.now() - began;
    // The answer's text from a copy (the page reads the original); files are not read.
    const type = res.headers.get("content-type") || "";
    const text = type.includes("json") || type.startsWith("text/") ? await res.clone().text() : null;
    rec.done(res, text, ms);
    return res;
  } catch (err) {
    rec.error(err, performance.now() - began);
    throw err;
  }
};

// -- the panel ------------------------------------------------------------------------------------

function build() {
  panel = el("section", "wire-panel");
  panel.id = "wire";
  panel.setAttribute("aria-label", "Wire view: what this page receives and sends");
  const bar = el("div", "wire-bar");
  const title = el("h2", "wire-title", "Wire");
  counts = el("span", "wire-counts muted", "");
  const pause = el("button", "", "Pause");
  pause.type = "button";
  pause.id = "wire-pause";
  pause.setAttribute("aria-pressed", "false");
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      for (const row of held.splice(0)) list.prepend(row);
      while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
    }
    refresh();
  });
  const clear = el("button", "", "Clear");
  clear.type = "button";
  clear.id = "wire-clear";
  clear.addEventListener("click", () => {
    list.replaceChildren();
    held.length = 0;
    frames = 0;
    requests = 0;
    refresh();
  });
  const close = el("button", "", "Close");
  close.type = "button";
  close.addEventListener("click", () => show(false));
  const key = el("span", "wire-key small");
  key.append(el("span", "down", "↓ received (SSE)"), " ", el("span", "up", "↑ sent"));
  bar.append(title, key, counts, pause, clear, close);
  list = el("ol", "wire-list mono");
  list.tabIndex = 0; // a scroll box the keyboard can scroll too
  list.setAttribute("aria-label", "Frames and requests, newest first");
  panel.append(bar, list);
  refresh();
  document.body.append(panel);
}

let toggle = null;
function show(open) {
  if (open && !panel) {
    build();
    toggle?.setAttribute("aria-controls", "wire"); // only once there is such an element
  }
  if (panel) panel.hidden = !open;
  document.body.classList.toggle("wire-open", open);
  if (toggle) toggle.setAttribute("aria-pressed", String(open));
  const u = new URL(location.href);
  if (open) u.searchParams.set("wire", "1");
  else u.searchParams.delete("wire");
  history.replaceState(history.state, "", u.pathname + u.search + u.hash);
}

function addToggle() {
  const header = document.querySelector("header.top");
  if (!header) return;
  toggle = el("button", "wire-toggle", "Wire");
  toggle.type = "button";
  toggle.id = "wire-toggle";
  toggle.title = "Show the SSE frames this page receives and the requests it sends";
  toggle.setAttribute("aria-pressed", "false");
  toggle.addEventListener("click", () => show(!(panel && !panel.hidden)));
  (header.querySelector("nav") || header).append(toggle);
}

// Modules run after the document is parsed: the header and body are there.
addToggle();
if (param() === "1") show(true);
