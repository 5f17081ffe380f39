// dashboard.js: the page. One stream for the metrics and events of the host on screen (any host
// the server can see: ?host=), one session stream (when logged in) over which the server asks
// this page to confirm dangerous actions, whichever host they are for.
import { connect, session, withParam } from "./sse.js";
import { Chart } from "./charts.js";
import { ProcessTable } from "./procs.js";
import { HostSwitcher } from "./hosts.js";
import { Confirmer } from "./confirm.js";
import { ApiError, api, errorText } from "./api.js";
import { el } from "./dom.js";
import { say } from "./notice.js";
import { bytes, clock, duration, level, pct, rate, started } from "./format.js";

const $ = (id) => document.getElementById(id);
const state = {
  settings: null,
  canControl: false,
  session: null,
  frames: 0,
  lastT: 0,
  rulesDirty: false,
  alertEvents: [], // newest first
  activeAlerts: new Map(), // alert_id -> payload
  seen: new Set(), // stored event ids already shown (snapshot + replay can overlap)
  activity: [],
};

const hosts = new HostSwitcher({
  select: $("host-select"),
  count: $("host-count"),
  banner: $("host-banner"),
  onSwitch: () => switchStream(),
});
// Every per-host request names the host on screen (none yet: the server's own host).
const forHost = (url) => withParam(url, "host", hosts.host);

// -- charts ---------------------------------------------------------------------------------------
const percent = (v) => `${v.toFixed(0)} %`;
const charts = {
  cpu: new Chart($("chart-cpu").querySelector(".chart"), {
    series: [{ key: "cpu", label: "CPU", color: "#4aa3ff" }],
    max: 100,
    format: percent,
  }),
  mem: new Chart($("chart-mem").querySelector(".chart"), {
    series: [
      { key: "mem", label: "Memory", color: "#3fb950" },
      { key: "swap", label: "Swap", color: "#d29922" },
    ],
    max: 100,
    format: percent,
  }),
  net: new Chart($("chart-net").querySelector(".chart"), {
    series: [
      { key: "rx", label: "↓ in", color: "#a371f7" },
      { key: "tx", label: "↑ out", color: "#4aa3ff" },
    ],
    format: rate,
    bytes: true,
  }),
  disk: new Chart($("chart-disk").querySelector(".chart"), {
    series: [
      { key: "rd", label: "read", color: "#3fb950" },
      { key: "wr", label: "write", color: "#f85149" },
    ],
    format: rate,
    bytes: true,
  }),
};

function point(f) {
  return {
    t: f.t,
    cpu: f.cpu.total,
    mem: f.mem.percent,
    swap: f.swap.percent,
    load: f.load[0],
    rx: f.net_rate.rx_bps,
    tx: f.net_rate.tx_bps,
    rd: f.disk_rate.read_bps,
    wr: f.disk_rate.write_bps,
  };
}

// -- process table and selection ---------------------------------------------------------------------
const actionButtons = [...document.querySelectorAll("#selection button[data-action]")];
const table = new ProcessTable({
  table: $("proc-table"),
  tbody: $("proc-rows"),
  filter: $("proc-filter"),
  freeze: $("freeze"),
  count: $("proc-count"),
  // Enter on a row: on to its actions (the first one this session may use).
  onEnter: () => actionButtons.find((b) => !b.disabled)?.focus(),
  onSelect: (row, gone) => {
    $("selection").dataset.has = "yes";
    const text =
      `PID ${row.pid} · ${row.name} · ${row.user} · started ${started(row.start)} · ${row.status}` +
      (gone ? " · no longer listed" : "");
    // A live region: said again only when it changes, not at every frame.
    if ($("sel-text").textContent !== text) $("sel-text").textContent = text;
    $("sel-text").className = gone ? "warn" : "";
    updateControls();
  },
});

// -- rendering a frame ---------------------------------------------------------------------------------
function tile(id, value, sub, lvl = "ok") {
  const t = $(id);
  t.querySelector(".value").textContent = value;
  t.querySelector(".sub").textContent = sub;
  t.dataset.level = lvl;
}

function bar(label, percentValue, text) {
  const row = el("div", "bar-row");
  const track = el("div", "bar-track");
  const fill = el("div", `bar-fill ${level(percentValue)}`);
  fill.style.width = `${Math.min(100, Math.max(0, percentValue))}%`; // CSSOM: allowed by the CSP
  track.append(fill);
  row.append(el("span", "bar-label mono", label), track, el("span", "bar-value mono", text));
  return row;
}

function rateRows(tbody, entries, a, b) {
  const rows = entries.map(([name, r]) => {
    const tr = el("tr");
    tr.append(el("td", "mono", name), el("td", "num mono", rate(r[a])), el("td", "num mono", rate(r[b])));
    return tr;
  });
  tbody.replaceChildren(...rows);
}

function applyFrame(f) {
  if (f.t <= state.lastT) return; // the snapshot after a reconnect repeats the frame we have
  state.lastT = f.t;
  state.frames += 1;
  $("frames").textContent = String(state.frames);
  $("last-frame").textContent = clock(f.t);

  const cores = f.cpu.count;
  tile("tile-cpu", pct(f.cpu.total), `${cores} core${cores === 1 ? "" : "s"}`, level(f.cpu.total));
  tile("tile-load", f.load[0].toFixed(2), `5 min ${f.load[1].toFixed(2)} · 15 min ${f.load[2].toFixed(2)}`,
    level((100 * f.load[0]) / Math.max(cores, 1), 100, 200));
  tile("tile-mem", pct(f.mem.percent), `${bytes(f.mem.used)} of ${bytes(f.mem.total)}`, level(f.mem.percent));
  tile("tile-swap", f.swap.total ? pct(f.swap.percent) : "none", f.swap.total ? `${bytes(f.swap.used)} of ${bytes(f.swap.total)}` : "not configured",
    level(f.swap.percent, 50, 80));
  const net = f.net_rate;
  const disk = f.disk_rate;
  tile("tile-net", rate(net.rx_bps + net.tx_bps), `↓ ${rate(net.rx_bps)} · ↑ ${rate(net.tx_bps)}`);
  tile("tile-disk", rate(disk.read_bps + disk.write_bps), `R ${rate(disk.read_bps)} · W ${rate(disk.write_bps)}`);
  tile("tile-procs", String(f.procs_total), `${f.procs.filter((p) => p.status === "running").length} running`);
  tile("tile-uptime", duration(f.uptime_s), `booted ${started(f.t - f.uptime_s)}`);
  if (f.temps.length) {
    const hot = f.temps.reduce((a, b) => (b.current > a.current ? b : a));
    tile("tile-temp", `${hot.current.toFixed(0)} °C`, hot.label, level(hot.current, 70, 85));
  } else {
    tile("tile-temp", "–", "no sensors");
  }

  $("cores").replaceChildren(...f.cpu.per_core.map((p, i) => bar(`cpu${i}`, p, pct(p, 0))));
  $("mounts").replaceChildren(
    ...f.disks.map((d) => {
      const row = bar(d.mount, d.percent, pct(d.percent, 0));
      row.title = `${d.device} (${d.fstype}): ${bytes(d.used)} of ${bytes(d.total)}`;
      return row;
    }),
  );
  rateRows($("ifaces"), Object.entries(f.net_io), "rx_bps", "tx_bps");
  rateRows($("disk-devs"), Object.entries(f.disk_io), "read_bps", "write_bps");
  $("temps").textContent = f.temps.length
    ? f.temps.map((s) => `${s.label} ${s.current.toFixed(0)} °C`).join(" · ")
    : "No temperature sensors on this machine.";

  table.update(f);
  const p = point(f);
  for (const c of Object.values(charts)) c.push(p);
}

function applyHistory(h) {
  for (const c of Object.values(charts)) c.reset(h.points, h.seconds);
}

// -- settings ---------------------------------------------------------------------------------------------
function applySettings(s) {
  if (state.settings && s.version < state.settings.version) return; // a replayed, older change
  state.settings = s;
  $("interval-label").textContent = `every ${s.interval} s`;
  $("paused-label").hidden = !s.paused;
  $("pause").textContent = s.paused ? "Resume sampling" : "Pause";
  if (document.activeElement !== $("interval")) $("interval").value = String(s.interval);
  if (!state.rulesDirty) renderRules(s.rules);
  if (s.detail) $("settings-status").textContent = `${s.detail} (${s.by})`;
}

function ruleRow(rule) {
  const row = el("div", "rule row");
  const metric = el("select");
  for (const [key, m] of Object.entries(state.settings.metrics)) {
    const opt = el("option", "", m.label);
    opt.value = key;
    metric.append(opt);
  }
  metric.value = rule.metric;
  metric.setAttribute("aria-label", "metric");
  const above = el("input", "narrow");
  Object.assign(above, { type: "number", min: "0", step: "any", value: String(rule.above) });
  above.setAttribute("aria-label", "threshold");
  const forS = el("input", "narrow");
  Object.assign(forS, { type: "number", min: "0", max: "3600", step: "any", value: String(rule.for_s) });
  forS.setAttribute("aria-label", "for seconds");
  const remove = el("button", "icon", "×");
  remove.title = "Remove this rule";
  remove.addEventListener("click", () => {
    row.remove();
    state.rulesDirty = true;
  });
  for (const input of [metric, above, forS]) input.addEventListener("input", () => (state.rulesDirty = true));
  row.append(metric, el("span", "muted", ">"), above, el("span", "muted", "for"), forS, el("span", "muted", "s"), remove);
  row.rule = () => ({ metric: metric.value, above: Number(above.value), for_s: Number(forS.value) });
  return row;
}

function renderRules(rules) {
  $("rules").replaceChildren(...rules.map(ruleRow));
  updateControls();
}

// -- alerts, activity, audit --------------------------------------------------------------------------------
function onAlertEvent(payload, id) {
  if (id && state.seen.has(id)) return;
  if (id) state.seen.add(id);
  if (payload.state === "firing") state.activeAlerts.set(payload.alert_id, payload);
  else state.activeAlerts.delete(payload.alert_id);
  state.alertEvents.unshift(payload);
  state.alertEvents.length = Math.min(state.alertEvents.length, 30);
  renderAlerts();
}

function alertDetail(a) {
  const unit = state.settings?.metrics?.[a.metric]?.unit ?? "";
  const value = a.value == null ? "" : ` · ${a.state === "firing" ? "now" : "at"} ${Number(a.value).toFixed(1)} ${unit}`;
  const why = a.state === "resolved" && a.reason ? ` · ${a.reason}` : "";
  return `since ${clock(a.since)}${value}${why}`;
}

function renderAlerts() {
  const n = state.activeAlerts.size;
  $("alert-count").hidden = n === 0;
  $("alert-count").textContent = `${n} firing`;
  const items = state.alertEvents.map((a) => {
    const firing = a.state === "firing" && state.activeAlerts.has(a.alert_id);
    const li = el("li", firing ? "firing" : a.state);
    li.append(
      el("span", "when mono", clock(a.at)),
      el("span", `tag ${a.state === "firing" ? "bad" : "ok"}`, a.state === "firing" ? "alert" : "resolved"),
      el("span", "what", a.label),
      el("span", "muted small detail", alertDetail(a)),
    );
    return li;
  });
  $("alerts").replaceChildren(...(items.length ? items : [el("li", "muted empty", "No alerts.")]));
}

const PHASE_TAG = { started: "info", confirming: "warn", succeeded: "ok", failed: "bad" };

function targetText(t) {
  return t ? `PID ${t.pid} ${t.name} (${t.user})` : "";
}

function onCommand(c, id) {
  if (id && state.seen.has(id)) return;
  if (id) state.seen.add(id);
  state.activity.unshift(c);
  state.activity.length = Math.min(state.activity.length, 30);
  const items = state.activity.map((e) => {
    const li = el("li");
    const phase = e.phase === "failed" && e.outcome ? e.outcome : e.phase;
    li.append(
      el("span", "when mono", clock(e.at)),
      el("span", `tag ${PHASE_TAG[e.phase] || "info"}`, phase),
      el("span", "what", `${e.action} ${targetText(e.target) || (e.params?.pid ? `PID ${e.params.pid}` : "")}`),
      el("span", "muted small detail", `${e.who}${e.detail ? ` — ${e.detail}` : ""}`),
    );
    return li;
  });
  $("activity").replaceChildren(...items);
  if (c.phase === "succeeded" || c.phase === "failed") loadAudit();
}

const RESULT_TAG = { succeeded: "ok", declined: "warn", unanswered: "warn" };

// Who said yes (issue 14.1): "login <id>, page <client id>", a page opened by that login.
const confirmedBy = (r) => (r.confirmed_by ? `; confirmed by ${r.confirmed_by}` : "");

async function loadAudit() {
  const host = hosts.host;
  let rows;
  try {
    rows = await api("GET", forHost("/dashboard/audit?limit=50"));
  } catch {
    return; // the list stays as it was; the next command's outcome loads it again
  }
  if (host !== hosts.host) return; // another host is on screen by now
  const items = rows.map((r) => {
    const li = el("li");
    li.dataset.commandId = r.command_id;
    li.append(
      el("span", "when mono", clock(r.at)),
      el("span", `tag ${RESULT_TAG[r.result] || "bad"}`, r.result),
      el("span", "what", `${r.action} ${r.target || ""}`),
      el("span", "muted small detail", `${r.who}${confirmedBy(r)} — ${r.detail}`),
    );
    return li;
  });
  $("audit").replaceChildren(...(items.length ? items : [el("li", "muted empty", "Nothing done yet.")]));
}

// -- control: login, session, commands -----------------------------------------------------------------------
const confirmer = new Confirmer($("confirm"));

function updateControls() {
  const can = state.canControl;
  const picked = Boolean(table.selected);
  for (const b of actionButtons) b.disabled = !can || !picked;
  $("nice").disabled = !can || !picked;
  for (const id of ["interval", "apply-interval", "pause", "add-rule", "save-rules"]) $(id).disabled = !can;
  for (const input of $("rules").querySelectorAll("input, select, button")) input.disabled = !can;
  $("view-only-note").hidden = can;
}

function setControl(can) {
  state.canControl = can;
  $("control-state").textContent = can ? "control enabled" : "view only";
  $("control-state").dataset.mode = can ? "control" : "view";
  $("login-open").hidden = can;
  $("logout").hidden = !can;
  if (can && !state.session) {
    state.session = session("/dashboard/session/events", "/dashboard/session/respond", {
      storageKey: "dashboard-session",
      onRequest: (req) => confirmer.ask(req),
      onCancel: (id, reason) => confirmer.cancelled(id, reason),
      onSession: () => (document.body.dataset.session = "ready"),
    });
  } else if (!can && state.session) {
    state.session.close();
    state.session = null;
    delete document.body.dataset.session;
  }
  updateControls();
}

async function whoami() {
  const me = await api("GET", "/dashboard/whoami").catch(() => null); // unknown: view only
  if (me) setControl(me.can_control);
}

async function login(token) {
  try {
    await api("POST", "/dashboard/login", { token });
  } catch (err) {
    return errorText(err);
  }
  setControl(true);
  return null;
}

/** A command: {ok, detail}, the server's word either way (a 401: control has ended). */
async function command(body) {
  try {
    const data = await api("POST", forHost("/dashboard/commands"), body);
    return { ok: true, detail: data?.detail ?? "done" };
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) setControl(false);
    return { ok: false, detail: errorText(err) };
  }
}

function status(elId, ok, text) {
  $(elId).textContent = text;
  $(elId).className = `small ${ok === null ? "muted" : ok ? "ok" : "bad"}`;
}

for (const button of actionButtons) {
  button.addEventListener("click", async () => {
    const sel = table.selected;
    if (!sel) return;
    const action = button.dataset.action;
    if (!state.session?.clientId) {
      status("cmd-status", false, "The confirmation channel is not connected yet; try again in a moment.");
      return;
    }
    const body = { action, pid: sel.pid, start_time: sel.start, client_id: state.session.clientId };
    if (action === "renice") body.nice = Number($("nice").value);
    const what = `${action} PID ${sel.pid} on ${hosts.host}`;
    status("cmd-status", null, `${what}: waiting for the server…`);
    const r = await command(body);
    status("cmd-status", r.ok, `${what}: ${r.detail}`);
  });
}

$("apply-interval").addEventListener("click", async () => {
  const r = await command({ action: "set_interval", seconds: Number($("interval").value) });
  if (!r.ok) status("settings-status", false, r.detail);
});
$("pause").addEventListener("click", async () => {
  const r = await command({ action: state.settings?.paused ? "resume_sampling" : "pause_sampling" });
  if (!r.ok) status("settings-status", false, r.detail);
});
$("add-rule").addEventListener("click", () => {
  $("rules").append(ruleRow({ metric: "cpu", above: 90, for_s: 10 }));
  state.rulesDirty = true;
});
$("save-rules").addEventListener("click", async () => {
  const rules = [...$("rules").children].map((row) => row.rule());
  const r = await command({ action: "set_rules", rules });
  if (r.ok) state.rulesDirty = false;
  status("settings-status", r.ok, r.detail);
});

$("login-open").addEventListener("click", () => {
  say($("login-error"), "");
  $("login").showModal();
});
$("login-cancel").addEventListener("click", () => $("login").close());
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = await login($("login-token").value);
  $("login-token").value = "";
  if (error) say($("login-error"), error);
  else $("login").close();
});
$("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/dashboard/logout");
  } catch (err) {
    status("cmd-status", false, `not logged out: ${errorText(err)}`);
    return;
  }
  setControl(false);
});

// -- the stream ---------------------------------------------------------------------------------------------
function setBadge(s) {
  $("state").dataset.state = s;
  $("state").textContent = s;
}

function openStream() {
  return connect(forHost("/dashboard/events"), {
    on: {
      hosts: (info) => hosts.update(info),
      snapshot: (snap) => {
        applySettings(snap.settings);
        state.activeAlerts = new Map(snap.alerts.active.map((a) => [a.alert_id, a]));
        for (const a of [...snap.alerts.recent].reverse()) onAlertEvent(a, a.event_id);
        renderAlerts();
        if (snap.metrics) applyFrame(snap.metrics);
      },
      history: applyHistory,
      metrics: applyFrame,
      alert: (a, ev) => onAlertEvent(a, ev.lastEventId),
      resolved: (a, ev) => onAlertEvent(a, ev.lastEventId),
      command: (c, ev) => onCommand(c, ev.lastEventId),
      settings: applySettings,
      gone: (g) => {
        hosts.gone(g.host);
        loadHosts();
      },
    },
    onState: setBadge,
    onReset: () => loadAudit(),
  });
}

async function loadHosts() {
  const info = await api("GET", "/dashboard/hosts").catch(() => null); // the stream's `hosts` comes too
  if (info) hosts.update(info);
}

// Another host: a new stream on its topic, and nothing of the previous host left on screen (above
// all not a selected process: its PID means nothing on the other machine).
function switchStream() {
  stream.close();
  Object.assign(state, {
    settings: null,
    frames: 0,
    lastT: 0,
    rulesDirty: false,
    alertEvents: [],
    activeAlerts: new Map(),
    seen: new Set(),
    activity: [],
  });
  $("frames").textContent = "0";
  $("last-frame").textContent = "–";
  for (const t of document.querySelectorAll(".tile")) {
    t.querySelector(".value").textContent = "–";
    t.querySelector(".sub").textContent = "–";
    t.dataset.level = "ok";
  }
  for (const id of ["cores", "mounts", "ifaces", "disk-devs"]) $(id).replaceChildren();
  $("temps").textContent = "–";
  for (const c of Object.values(charts)) c.reset([]);
  table.clear();
  $("selection").dataset.has = "no";
  $("sel-text").textContent = "Click a row to pick a target (or Tab to the table, arrows, Enter).";
  $("sel-text").className = "muted";
  for (const id of ["cmd-status", "settings-status"]) $(id).textContent = "";
  renderAlerts();
  $("activity").replaceChildren(el("li", "muted empty", "No commands yet."));
  $("audit").replaceChildren(el("li", "muted empty", "Nothing done yet."));
  updateControls();
  stream = openStream();
  loadAudit();
}

let stream = openStream();
loadHosts();

// A link printed by `python -m dashboard` carries the token in the fragment (never sent to the
// server, never logged): log in with it, then drop it from the address bar.
if (location.hash.startsWith("#token=")) {
  const token = decodeURIComponent(location.hash.slice(7));
  history.replaceState(null, "", location.pathname + location.search);
  login(token).then((error) => error && whoami());
} else {
  whoami();
}
loadAudit();
