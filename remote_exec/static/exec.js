// exec.js: the /exec/ page. Start runs, list them, watch one (a pty run in xterm.js, a pipe run
// as text with stderr marked), and drive it: input, EOF, signals, terminate, resize, share.
//
// Output arrives on GET /exec/runs/{id}/events (one EventSource, through sse.js); everything the
// page does goes out as POSTs. Chunks are JSON {"text": ...} or {"b64": ...}, so bytes that are
// not UTF-8 reach the terminal intact. User text is only ever put in the DOM with textContent.

import { ApiError, api, errorText } from "./api.js";
import { el } from "./dom.js";
import { say } from "./notice.js";
import { connect } from "./sse.js";
import { cssomStyles } from "./xterm_csp.js";
import { signInHint } from "./hint.js";
import { when } from "./time.js";
import { Terminal } from "/exec/vendor/@xterm/xterm/lib/xterm.mjs";
import { FitAddon } from "/exec/vendor/@xterm/addon-fit/lib/addon-fit.mjs";

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const MAX_PIPE_CHARS = 2_000_000; // what a pipe view keeps on screen; the raw link has it all

let me = null; // {role, name, run_id}
let policy = null;
const runs = new Map(); // id -> run summary
let listStream = null;
let current = null; // the run on screen
let term = null;
let fit = null;

// -- small helpers ------------------------------------------------------------------------------

const unauthorized = (err) => err instanceof ApiError && err.status === 401;

// The shared api(), and what a 401 means on this page: the session ended (expired, revoked,
// logged out elsewhere), so back to the login form. Throws what api() throws.
async function call(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (err) {
    if (unauthorized(err) && path !== "/exec/login") {
      signedIn.set(false);
      if (me) {
        me = null;
        showLogin("Your session ended: log in again.");
      }
    }
    throw err;
  }
}

function explain(err) {
  const text = errorText(err);
  // A policy refusal names its rule and how it could be allowed (issue 14): show both.
  const extra = err instanceof ApiError ? err.extra : null;
  return extra && extra.rule ? `${text} [${extra.rule}] To allow it: ${extra.allow}` : text;
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function bytesOf(chunk) {
  if (chunk && typeof chunk.b64 === "string") return Uint8Array.from(atob(chunk.b64), (c) => c.charCodeAt(0));
  return encoder.encode(chunk && typeof chunk.text === "string" ? chunk.text : "");
}

function fmtTime(t) {
  return t ? when(t, { seconds: true }) : "";
}

function fmtDuration(s) {
  if (s == null) return "";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function exitText(r) {
  switch (r.status) {
    case "running": return "running";
    case "exited": return `exit ${r.exit_code ?? r.code}`;
    case "signalled": return `killed by SIG${r.signal}`;
    case "timeout": return "timed out";
    case "terminated": return "terminated";
    case "failed": return "failed to start";
    case "lost": return "lost (its server died while it ran)";
    case "unreachable": return "unreachable (its server is not answering)";
    default: return r.status || "";
  }
}

// A shell-like split for the command box: quotes and backslashes, no expansion.
function splitArgs(line) {
  const out = [];
  let cur = "";
  let quote = null;
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has) out.push(cur);
      cur = "";
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (quote) throw new Error("unclosed quote in the command");
  if (has) out.push(cur);
  return out;
}

function ensureTerminal() {
  if (term) return term;
  term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 13,
    scrollback: 5000,
    // The ANSI palette in the colours of base.css, readable on the dark background.
    theme: {
      background: "#0b0f14", foreground: "#e6edf3", cursor: "#4aa3ff", selectionBackground: "#2a4a6b",
      black: "#484f58", red: "#f85149", green: "#3fb950", yellow: "#d29922",
      blue: "#4aa3ff", magenta: "#bc8cff", cyan: "#39c5cf", white: "#b1bac4",
      brightBlack: "#6e7681", brightRed: "#ff7b72", brightGreen: "#56d364", brightYellow: "#e3b341",
      brightBlue: "#79c0ff", brightMagenta: "#d2a8ff", brightCyan: "#56d4dd", brightWhite: "#f0f6fc",
    },
  });
  fit = new FitAddon();
  term.loadAddon(fit);
  cssomStyles($("term")); // before open(): xterm writes its CSS as it builds its DOM
  term.open($("term"));
  term.onData((data) => typeKeys(data));
  // Tab belongs to the program while it runs (completion in a shell), but not after it ended
  // and never Shift+Tab: then the browser moves the focus on, and the terminal is no keyboard
  // trap (issue 18). Returning false leaves the key to the browser.
  term.attachCustomKeyEventHandler((ev) => !(ev.key === "Tab" && (ev.shiftKey || term.options.disableStdin)));
  return term;
}

function proposeSize() {
  ensureTerminal();
  const run = $("run");
  const box = $("term");
  const wasHidden = [run.hidden, box.hidden];
  run.hidden = false;
  box.hidden = false;
  const dims = fit.proposeDimensions();
  [run.hidden, box.hidden] = wasHidden;
  if (!dims || !Number.isFinite(dims.cols) || !Number.isFinite(dims.rows)) return { cols: 100, rows: 30 };
  return { cols: Math.max(20, Math.min(500, dims.cols)), rows: Math.max(5, Math.min(200, dims.rows)) };
}

// -- login ---------------------------------------------------------------------------------------

function showLogin(message = "") {
  if (listStream) listStream.close();
  if (current && current.stream) current.stream.close();
  $("app").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  say($("login-error"), message);
  $("token").focus();
}

async function login(token, name) {
  try {
    await call("POST", "/exec/login", { token, name: name || null });
  } catch (err) {
    showLogin(unauthorized(err) ? "That token is not valid (or has expired)." : explain(err));
    return false;
  }
  signedIn.set(true);
  return true;
}

const signedIn = signInHint("exec.signed-in");

async function boot() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    // The token came in the fragment (never sent to a server); swap it for the cookie, then
    // drop it from the address bar and the history.
    const run = params.get("run");
    history.replaceState(null, "", location.pathname + (run ? `#run=${run}` : ""));
    await login(token, null);
  } else if (!signedIn.maybe()) {
    showLogin(); // never logged in from this browser: nothing to ask the server
    return;
  }
  try {
    me = await call("GET", "/exec/me");
  } catch (err) {
    if (!token || !unauthorized(err)) showLogin(unauthorized(err) ? "" : explain(err));
    return;
  }
  signedIn.set(true);
  await showApp();
}

async function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = me.role === "operator" ? `signed in as ${me.name}` : `${me.name} · read-only`;
  const operator = me.role === "operator";
  $("new-run").hidden = !operator;
  $("readonly-note").hidden = operator;
  if (operator) {
    const p = await call("GET", "/exec/policy").catch(() => null); // none: the form still works
    if (p) {
      policy = p;
      $("cwd").placeholder = policy.default_cwd;
      $("shell-label").hidden = !policy.shell;
      const cmds = policy.commands === "any" ? "any command" : policy.commands.join(", ");
      $("policy-note").textContent =
        `Policy: ${cmds}; inside ${policy.cwd_roots.join(", ")}; ` +
        `timeout ${fmtDuration(policy.default_timeout_s)} (max ${fmtDuration(policy.max_timeout_s)}).`;
    }
  }
  await loadRuns();
  if (!me.run_id) {
    listStream = connect("/exec/events", {
      on: { run: (run) => upsertRun(run), revoked: accessEnded },
      onOpen: () => loadRuns(),
    });
  }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("run") || me.run_id;
  if (wanted) openRun(wanted);
}

// -- the run list -------------------------------------------------------------------------------------

async function loadRuns() {
  let data;
  try {
    data = await call("GET", "/exec/runs");
  } catch {
    return; // the list stays as it was; the stream keeps it current
  }
  runs.clear();
  for (const run of data.runs) runs.set(run.id, run);
  renderRuns();
}

function upsertRun(run) {
  runs.set(run.id, run);
  renderRuns();
}

function renderRuns() {
  const sorted = [...runs.values()].sort((a, b) => b.started_at - a.started_at);
  const items = sorted.map((run) => {
    const li = el("li", { dataset: { id: run.id, status: run.status }, tabIndex: 0 });
    if (current && current.id === run.id) li.classList.add("selected");
    const cmd = el("div", { className: "cmd mono", title: run.command }, run.command);
    const meta = el("div", "meta");
    const parts = [
      ["owner", run.owner],
      ["started", fmtTime(run.started_at)],
      ["time", run.status === "running" ? fmtDuration(Date.now() / 1000 - run.started_at) : fmtDuration(run.duration_s)],
      ["exit", exitText(run)],
    ];
    for (const [cls, text] of parts) meta.append(el("span", cls, text));
    li.append(cmd, meta);
    li.addEventListener("click", () => openRun(run.id));
    li.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") openRun(run.id);
    });
    return li;
  });
  $("runs").replaceChildren(...items);
  $("no-runs").hidden = items.length > 0;
}

setInterval(() => {
  for (const li of $("runs").querySelectorAll('li[data-status="running"]')) {
    const run = runs.get(li.dataset.id);
    if (run) li.querySelector(".time").textContent = fmtDuration(Date.now() / 1000 - run.started_at);
  }
}, 1000);

// -- one run ---------------------------------------------------------------------------------------------

function closeRun() {
  if (!current) return;
  if (current.stream) current.stream.close();
  current = null;
}

function setState(state, text) {
  $("state").dataset.state = state;
  $("state").textContent = text || state;
}

function openRun(id) {
  closeRun();
  current = { id, run: null, pty: false, decoders: {}, ended: false, keys: "", sending: false };
  history.replaceState(null, "", `${location.pathname}#run=${id}`);
  $("empty").hidden = true;
  $("run").hidden = false;
  $("out").replaceChildren();
  $("notices").replaceChildren();
  $("share-box").hidden = true;
  say($("action-error"), "");
  $("controls").hidden = true;
  $("viewers").hidden = true;
  $("raw-link").href = `/exec/runs/${encodeURIComponent(id)}/output`;
  for (const li of $("runs").children) li.classList.toggle("selected", li.dataset.id === id);
  const mine = current;
  const only = (fn) => (data, ev) => {
    if (current === mine) fn(data, ev);
  };
  mine.stream = connect(`/exec/runs/${encodeURIComponent(id)}/events`, {
    on: {
      run: only(onRunInfo),
      stdout: only((d) => onChunk("stdout", d)),
      stderr: only((d) => onChunk("stderr", d)),
      input: only(onInput),
      resize: only(onResize),
      notice: only((d) => addNotice(d.text, "notice")),
      truncated: only((d) => {
        addNotice(d.message, "warn");
        if (mine.pty) term.write(`\r\n\x1b[33m[${d.message}]\x1b[0m\r\n`);
        else appendOut("note", `\n[${d.message}]\n`);
      }),
      viewers: only(onViewers),
      exit: only(onExit),
      unreachable: only(onUnreachable),
      reachable: only(onReachable),
      revoked: accessEnded,
    },
    onState: (s) => {
      if (current === mine && !mine.ended) setState(s);
    },
    onReset: only(() => clearOutput()),
  });
}

function clearOutput() {
  current.decoders = {};
  $("out").replaceChildren();
  $("notices").replaceChildren();
  if (current.pty) term.reset();
}

function onRunInfo(info) {
  const run = info.run;
  const first = current.run === null;
  current.run = run;
  if (!first) return; // a reconnect: the view already holds everything up to our last id
  current.pty = run.pty;
  $("run-title").textContent = run.command;
  $("run-title").title = run.command;
  $("run-meta").textContent = `${run.cwd} · ${run.owner} · ${run.pty ? "pty" : "pipes"}`;
  $("legend").hidden = run.pty;
  setRunStatus(run);
  $("term").hidden = !run.pty;
  $("out").hidden = run.pty;
  if (run.pty) {
    ensureTerminal();
    term.reset();
    term.options.disableStdin = me.role !== "operator";
    if (current.focusTerm && run.status === "running") term.focus(); // typing goes to the run just started
  }
  const live = run.status === "running";
  $("controls").hidden = !(me.role === "operator" && live);
  if (me.role === "operator" && live && run.pty) setTimeout(fitToWindow, 50);
}

function setRunStatus(r) {
  const node = $("run-status");
  node.dataset.status = r.status;
  let text = exitText(r);
  if (r.status !== "running" && r.duration_s != null) text += ` after ${fmtDuration(r.duration_s)}`;
  node.textContent = text;
}

function onChunk(kind, chunk) {
  const bytes = bytesOf(chunk);
  if (current.pty) {
    term.write(bytes);
    return;
  }
  const dec = current.decoders[kind] || (current.decoders[kind] = new TextDecoder("utf-8"));
  appendOut(kind, dec.decode(bytes, { stream: true }));
}

function onInput(d) {
  if (current.pty) return;
  if (d.eof) appendOut("input eof", "⏎ EOF\n");
  else appendOut("input", new TextDecoder().decode(bytesOf(d)));
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

function appendOut(cls, text) {
  if (!text) return;
  const out = $("out");
  const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  const plain = text.replace(ANSI, "");
  const last = out.lastElementChild;
  if (last && last.className === cls) last.append(plain);
  else out.append(el("span", { className: cls, title: cls === "stderr" && "stderr" }, plain));
  current.shown = (current.shown || 0) + plain.length;
  while (current.shown > MAX_PIPE_CHARS && out.firstElementChild) {
    current.shown -= out.firstElementChild.textContent.length;
    out.firstElementChild.remove();
  }
  if (atBottom) out.scrollTop = out.scrollHeight;
}

function onResize(size) {
  if (!current.pty) return;
  ensureTerminal();
  term.resize(size.cols, size.rows);
}

function onViewers(d) {
  $("viewers").hidden = false;
  $("viewers").textContent = `${d.count} watching`;
}

function onExit(info) {
  current.ended = true;
  current.stream.close();
  setState("closed", "ended");
  $("viewers").hidden = true;
  $("controls").hidden = true;
  const run = { ...(current.run || {}), ...info, exit_code: info.code };
  setRunStatus(run);
  if (info.status === "lost" && info.reason) addNotice(info.reason, "warn");
  if (current.pty) {
    term.options.disableStdin = true;
    term.write("\x1b[?25l"); // no blinking cursor on a finished run
  }
  if (runs.has(current.id)) upsertRun({ ...runs.get(current.id), ...run, duration_s: info.duration_s });
}

// The run's instance stopped answering (killed, crashed, cut off): its output may stop, and
// input cannot reach it. "lost" follows (as its exit) once that instance is known to be gone.
function onUnreachable(d) {
  const run = { ...(current.run || {}), status: "unreachable" };
  setRunStatus(run);
  setState("retrying", "owner unreachable");
  $("controls").hidden = true;
  addNotice(d.text, "warn");
  if (runs.has(current.id)) upsertRun({ ...runs.get(current.id), status: "unreachable" });
}

function onReachable(d) {
  setRunStatus({ ...(current.run || {}), status: "running" });
  setState("open");
  $("controls").hidden = !(me && me.role === "operator");
  addNotice(d.text, "notice");
  if (runs.has(current.id)) upsertRun({ ...runs.get(current.id), status: "running" });
}

// The token or session this page uses was revoked, expired or logged out: the server ended the
// stream. Reconnecting would only get 401, so stop here and say why.
function accessEnded(d) {
  me = null;
  closeRun();
  showLogin(`Access ended: ${(d && d.detail) || "your token was revoked"}. Log in again to keep watching.`);
}

function addNotice(text, cls) {
  $("notices").append(el("li", cls, text));
  if (!current.pty && cls === "notice") appendOut("note", `\n[${text}]\n`);
}

// -- driving a run -----------------------------------------------------------------------------------

// A control of the run on screen: {ok, data}, and a refusal shown under the controls.
async function post(path, body) {
  try {
    const data = await call("POST", path, body);
    say($("action-error"), "");
    return { ok: true, data };
  } catch (err) {
    say($("action-error"), explain(err));
    return { ok: false, data: null };
  }
}

function typeKeys(data) {
  // Keystrokes from the terminal: sent in order, batched while a request is in flight.
  if (!current || !current.pty || current.ended || me.role !== "operator") return;
  current.keys += data;
  if (!current.sending) flushKeys(current);
}

async function flushKeys(run) {
  run.sending = true;
  try {
    while (run.keys && !run.ended) {
      const data = run.keys;
      run.keys = "";
      const r = await post(`/exec/runs/${run.id}/input`, { data, input_id: newId() });
      if (!r.ok) break;
    }
  } finally {
    run.sending = false;
  }
}

function fitToWindow() {
  if (!current || !current.pty || current.ended || me.role !== "operator" || !fit) return;
  const dims = fit.proposeDimensions();
  if (!dims || !Number.isFinite(dims.cols)) return;
  const cols = Math.max(20, Math.min(500, dims.cols));
  const rows = Math.max(5, Math.min(200, dims.rows));
  if (cols !== term.cols || rows !== term.rows) post(`/exec/runs/${current.id}/resize`, { cols, rows });
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(fitToWindow, 200);
});

$("input-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current) return;
  const line = $("input-line").value + (current.pty ? "\r" : "\n");
  const r = await post(`/exec/runs/${current.id}/input`, { data: line, input_id: newId() });
  if (r.ok) $("input-line").value = "";
});

$("eof").addEventListener("click", () => {
  if (current) post(`/exec/runs/${current.id}/input`, { eof: true, input_id: newId() });
});

for (const button of document.querySelectorAll("button.sig")) {
  button.addEventListener("click", () => {
    if (current) post(`/exec/runs/${current.id}/signal`, { signal: button.dataset.signal });
  });
}

$("terminate").addEventListener("click", () => {
  if (current) post(`/exec/runs/${current.id}/terminate`);
});

$("share").addEventListener("click", async () => {
  if (!current) return;
  const r = await post("/exec/tokens", { run_id: current.id, label: `run ${current.id}` });
  if (!r.ok) return;
  $("share-box").hidden = false;
  $("share-url").value = location.origin + r.data.url;
  $("share-url").select();
});

$("start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  say($("start-error"), "");
  const line = $("command").value.trim();
  if (!line) return;
  const body = { pty: $("pty").checked };
  const cwd = $("cwd").value.trim();
  if (cwd) body.cwd = cwd;
  if (policy && policy.shell && $("use-shell").checked) body.command = line;
  else {
    try {
      body.argv = splitArgs(line);
    } catch (err) {
      say($("start-error"), err.message);
      return;
    }
  }
  if (body.pty) Object.assign(body, proposeSize());
  $("start").disabled = true;
  try {
    let run;
    try {
      run = await call("POST", "/exec/runs", body);
    } catch (err) {
      say($("start-error"), explain(err));
      return;
    }
    upsertRun(run);
    openRun(run.id);
    current.focusTerm = body.pty; // once the terminal is on screen (onRunInfo)
  } finally {
    $("start").disabled = false;
  }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ok = await login($("token").value.trim(), $("name").value.trim());
  $("token").value = "";
  if (ok) boot();
});

$("logout").addEventListener("click", async () => {
  await call("POST", "/exec/logout").catch(() => {}); // logged out here either way
  signedIn.set(false);
  closeRun();
  me = null;
  showLogin("Logged out.");
});

window.addEventListener("hashchange", () => {
  // A login link opened in a tab that already shows the page.
  if (new URLSearchParams(location.hash.slice(1)).has("token")) boot();
});

boot();

// Pipe mode drops colours by the programs' own choice (they see no terminal): say so, not silently.
const showPtyNote = () => {
  $("pty-note").hidden = $("pty").checked;
};
$("pty").addEventListener("change", showPtyNote);
showPtyNote();
