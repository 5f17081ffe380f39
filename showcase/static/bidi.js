// /bidi/: this page is a client the server can ask (session() from sse.js), and a form to ask
// any connected client through POST /bidi/trigger. Text from requests and answers goes into the
// DOM with textContent only.
import { ApiError, api, errorText } from "./api.js";
import { el } from "./dom.js";
import { say } from "./notice.js";
import { session } from "./sse.js";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "bidi-session";
const REJECTED = -32001; // shared.jsonrpc.REJECTED: a person said no
const cards = new Map(); // request id -> { li, deadline, closed }
let me = null;
let picked = false; // the person chose a client in the list

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function setBadge(state, text = state) {
  $("state").dataset.state = state;
  $("state").textContent = text;
}

const showNotice = (text) => say($("notice"), text);

// -- this page as a client ------------------------------------------------------------------------

function start() {
  session("/bidi/events", "/bidi/respond", {
    storageKey: STORAGE_KEY,
    onSession: ({ client_id }) => {
      me = client_id;
      $("me").textContent = client_id;
      for (const node of document.querySelectorAll(".me-copy")) node.textContent = client_id;
      $("cli-hint").textContent =
        `sse trigger ${location.origin}/bidi/trigger \\\n    --client-id ${client_id} --message "hello"`;
      refreshClients();
    },
    onState: (state) => setBadge(state),
    onRequest: addRequest,
    onCancel: (id, reason) => closeCard(id, `cancelled by the server: ${reason}`, "cancelled"),
    onReplaced: () => {
      // Another tab (a duplicated one shares our saved session) took over this client id.
      sessionStorage.removeItem(STORAGE_KEY);
      showNotice("Another tab took over this page's client id, so this page started a new session with a new id.");
      for (const id of cards.keys()) closeCard(id, "moved to the other tab", "cancelled");
      start();
    },
  });
}

function addRequest(req) {
  $("empty").hidden = true;
  const li = el("li", "request");
  li.dataset.id = req.id;

  const head = el("div", "head");
  head.append(el("span", "method", req.method), el("code", "rid", req.id.slice(0, 8)));
  const left = el("span", "left");
  head.append(left);

  const bar = el("div", "bar");
  const fill = el("div", "fill");
  bar.append(fill);

  const params = el("pre", "params mono", req.params === undefined ? "(no params)" : pretty(req.params));

  const answer = el("textarea", "answer");
  answer.rows = 2;
  answer.placeholder = 'Your answer: text, or JSON such as {"ok": true}';
  answer.setAttribute("aria-label", `answer to ${req.method}`);

  const send = el("button", "primary reply", "Answer");
  send.type = "button";
  const reject = el("button", "danger reject", "Reject");
  reject.type = "button";
  const actions = el("div", "row actions");
  actions.append(send, reject);
  const status = el("p", "status muted");

  li.append(head, bar, params, answer, actions, status);
  $("requests").prepend(li);

  const total = Math.max(0.001, req.deadline * 1000 - Date.now());
  const card = { li, left, fill, status, answer, buttons: [send, reject], deadline: req.deadline * 1000, total, closed: false };
  cards.set(req.id, card);
  tick(card);

  send.addEventListener("click", async () => {
    const text = answer.value.trim();
    let result = text;
    try {
      result = JSON.parse(text);
    } catch {
      // not JSON: the answer is the text itself
    }
    lock(card, "sending…");
    report(card, await req.reply(result), "answered");
  });
  reject.addEventListener("click", async () => {
    lock(card, "sending…");
    report(card, await req.fail(REJECTED, "rejected by the person at the page"), "rejected");
  });
  answer.focus();
}

function lock(card, text) {
  card.closed = true;
  for (const b of card.buttons) b.disabled = true;
  card.answer.disabled = true;
  card.status.textContent = text;
}

function report(card, res, what) {
  if (res.ok) {
    closeCard(card.li.dataset.id, `${what} · delivered to the waiter`, what);
  } else {
    const detail = res.body?.detail ?? "no answer from the server";
    closeCard(card.li.dataset.id, `${what}, but refused (${res.status}): ${detail}`, "refused");
  }
}

function closeCard(id, text, cls) {
  const card = cards.get(id);
  if (!card) return;
  lock(card, text);
  card.li.classList.add("closed", cls);
  card.left.textContent = cls;
}

function tick(card) {
  if (card.closed) return;
  const remaining = card.deadline - Date.now();
  if (remaining <= 0) {
    card.left.textContent = "deadline passed";
    card.fill.style.width = "0%";
    card.li.classList.add("late");
    return;
  }
  card.left.textContent = `${(remaining / 1000).toFixed(1)} s left`;
  card.fill.style.width = `${Math.min(100, (100 * remaining) / card.total).toFixed(1)}%`;
  card.li.classList.toggle("urgent", remaining < 5000);
}

setInterval(() => {
  for (const card of cards.values()) tick(card);
}, 100);

// -- asking a client ------------------------------------------------------------------------------

async function refreshClients() {
  let list = [];
  try {
    list = await api("GET", "/bidi/clients");
  } catch {
    return; // asked again in 2 s
  }
  const select = $("target");
  const chosen = select.value;
  const options = [];
  const rows = [];
  list.sort((a, b) => (a.client_id === me ? -1 : b.client_id === me ? 1 : a.client_id.localeCompare(b.client_id)));
  for (const c of list) {
    const label = c.client_id === me ? `${c.client_id} (this page)` : c.client_id;
    const option = el("option", "", label);
    option.value = c.client_id;
    options.push(option);

    const tr = el("tr");
    let state = c.connected ? "connected" : `away ${c.away_s ?? 0} s`;
    if (c.instance) state += ` · ${c.instance}`; // which instance holds it (several instances)
    tr.append(el("td", "mono", label), el("td", c.connected ? "ok" : "warn", state), el("td", "", String(c.pending)));
    rows.push(tr);
  }
  select.replaceChildren(...options);
  // Keep what the person picked; until they pick, prefer another client over this page itself.
  const other = list.find((c) => c.client_id !== me);
  if (list.some((c) => c.client_id === chosen) && (picked || chosen !== me || !other)) select.value = chosen;
  else if (other) select.value = other.client_id;
  $("clients").replaceChildren(...rows);
  $("send").disabled = list.length === 0;
  $("send-hint").textContent = list.length === 0 ? "no client is connected" : "";
}

$("target").addEventListener("focus", refreshClients);
$("target").addEventListener("change", () => {
  picked = true;
});
setInterval(refreshClients, 2000);

$("trigger").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const clientId = $("target").value;
  if (!clientId) return;
  const method = $("method").value.trim() || "analyze";
  const message = $("message").value;
  const timeout = Number($("timeout").value) || 30;

  $("no-results").hidden = true;
  const li = el("li", "result waiting");
  const head = el("div", "head");
  head.append(el("span", "to", `→ ${clientId}`), el("span", "method", method), el("span", "took muted", "waiting…"));
  const sent = el("div", "sent muted", message ? `“${message}”` : "(no message)");
  const body = el("pre", "body mono", "");
  li.append(head, sent, body);
  $("results").prepend(li);
  while ($("results").children.length > 50) $("results").lastChild.remove();

  const began = performance.now();
  let payload;
  try {
    payload = await api("POST", "/bidi/trigger", { client_id: clientId, method, params: { message }, timeout_s: timeout });
  } catch (err) {
    const wall = Math.round(performance.now() - began);
    li.className = "result error";
    if (!(err instanceof ApiError)) {
      head.lastChild.textContent = "network error";
      body.textContent = String(err);
      return;
    }
    head.lastChild.textContent = `HTTP ${err.status} after ${wall} ms`;
    // The client's JSON-RPC error, when it answered with one; else the server's own detail.
    const extra = err.extra;
    body.textContent = extra && typeof extra === "object" && "code" in extra
      ? `error ${extra.code}: ${extra.message}`
      : errorText(err);
    refreshClients();
    return;
  }
  const wall = Math.round(performance.now() - began);
  li.className = "result ok";
  head.lastChild.textContent = `round trip ${payload.rtt_ms} ms (server) · ${wall} ms (here)`;
  body.textContent = pretty(payload.result);
  refreshClients();
});

start();
refreshClients();
