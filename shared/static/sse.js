// sse.js: a small wrapper around EventSource shared by every page of this project.
//
// What it adds to the browser's EventSource:
// - a connection state for a badge: "connecting" | "open" | "retrying" | "failed";
// - recovery when the browser gives up for good: a non-200 answer (a 503 during a restart, a
//   proxy error) closes a native EventSource permanently, so we re-create it with backoff and
//   jitter, passing the last event id as ?last_event_id= (a new EventSource cannot set headers);
// - the last event id seen, for the page to keep;
// - `onReset`: the server could not resume from our id, so the page must reload its state;
// - any number of tabs (issue 15): every stream of every tab of this origin goes through ONE
//   connection, `GET /sse/mux` (sse-worker.js), held by a SharedWorker, else by a leader tab; a
//   page opens its own EventSource per stream only where neither works (see `choose()`);
// - a `sse:frame` window event for every frame delivered to the page (the wire view, issue 18).
//
// Usage:
//   import { connect } from "./sse.js";
//   const stream = connect("/chat/rooms/general/events", {
//     lastEventId: idFromHistory,
//     on: { message: (data, ev) => ..., typing: (data) => ... },   // data is parsed JSON when it is JSON
//     onState: (state) => badge.textContent = state,
//     onReset: (info) => reloadEverything(),
//   });
//   stream.close();
//
// `url` may be a function, called at every (re)connect. With `native: false` we never let the
// browser reconnect by itself (it would reuse the first URL); we re-create the EventSource with a
// fresh URL instead. `session()` below needs that: its URL carries the session token.

const STATES = ["connecting", "open", "retrying", "failed"];

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function withParam(url, name, value) {
  const u = new URL(url, location.href);
  if (value == null || value === "") u.searchParams.delete(name);
  else u.searchParams.set(name, value);
  return u.pathname + u.search;
}

// -- the one connection per origin (issue 15) ------------------------------------------------------
//
// Every stream of this page becomes a topic of the origin's shared `GET /sse/mux`, whoever holds
// it: a SharedWorker; else the tab that holds the Web Lock "sse-mux-leader", relaying over a
// BroadcastChannel (when it closes or crashes the lock passes to another tab, which opens a new
// mux, and every tab re-sends its topics with its own last ids: no gap, no duplicate); else,
// with neither API, or on a server without the mux (/sse/worker.js is 404: a bare app in a test
// rig), one EventSource per stream, as before.

const WORKER = "/sse/worker.js";
const CHANNEL = "sse-mux";
// Unique among this origin's tabs is enough (crypto.randomUUID() needs a secure context).
const newId = () => Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);
const tab = newId();
const live = new Map(); // key -> topic of this tab (keys are never reused: late frames are dropped)
let seq = 0;
let chosen = null; // Promise of a post(message) function, or of null: one EventSource per stream
let send = null;
const utf8 = new TextEncoder();

function carrier() {
  chosen ??= choose().then((post) => (send = post));
  return chosen;
}

async function choose() {
  if (typeof SharedWorker === "function") {
    try {
      return await viaWorker();
    } catch {
      // No worker script (no mux here) or no module workers: the leader tab may still work.
    }
  }
  if (navigator.locks && typeof BroadcastChannel === "function") {
    try {
      return await viaLeader();
    } catch {
      // No mux on this server.
    }
  }
  return null;
}

// The hub learns that a tab crashed when the lock the tab holds for its whole life is released;
// without Web Locks (not a secure context) the tab pings, and silence means it is gone.
const PING_MS = 10000;
let tabLock = null;
function holdTabLock() {
  if (!navigator.locks) return Promise.resolve();
  tabLock ??= new Promise((granted) =>
    navigator.locks.request(`sse-tab:${tab}`, () => {
      granted();
      return new Promise(() => {});
    }),
  );
  return tabLock;
}

async function viaWorker() {
  await holdTabLock();
  const worker = new SharedWorker(WORKER, { type: "module", name: CHANNEL });
  const port = worker.port;
  await new Promise((ready, fail) => {
    worker.addEventListener("error", fail); // the script did not load: this server has no mux
    port.onmessage = (ev) => (ev.data.op === "ready" ? ready() : receive(ev.data));
    port.postMessage({ op: "hello", tab, locked: Boolean(navigator.locks) });
  });
  const post = (msg) => port.postMessage(msg);
  if (!navigator.locks) setInterval(() => post({ op: "ping", tab }), PING_MS);
  return post;
}

async function viaLeader() {
  const { Hub } = await import(WORKER); // also the probe: no such script, no mux on this server
  await holdTabLock();
  const channel = new BroadcastChannel(CHANNEL);
  const post = (msg) => channel.postMessage({ ...msg, to: "hub" });
  let leader = null; // the hub we follow; frames from an earlier one are dropped
  channel.onmessage = (ev) => {
    const m = ev.data;
    if (m.to !== tab && m.to !== "*") return;
    if (m.op !== "ready") {
      if (m.hub === leader) receive(m);
    } else if (m.hub !== leader) {
      leader = m.hub; // a new leader knows nothing yet: tell it everything we listen to
      resend(post);
    }
  };
  navigator.locks.request("sse-mux-leader", () => lead(Hub)); // queued until we are first
  post({ op: "hello", tab, locked: true });
  return post;
}

function lead(Hub) {
  const id = newId();
  const channel = new BroadcastChannel(CHANNEL);
  const hub = new Hub((to, msg) => channel.postMessage({ ...msg, to, hub: id }));
  channel.onmessage = (ev) => ev.data.to === "hub" && hub.message(ev.data);
  addEventListener("online", () => hub.wake());
  channel.postMessage({ op: "ready", to: "*", hub: id });
  return new Promise(() => {}); // lead for the rest of this page's life
}

function receive(m) {
  if (m.op === "again") resend(send);
  else if (m.op === "down") for (const topic of live.values()) topic.feed(m);
  else live.get(m.k)?.feed(m);
}

function resend(post) {
  post({ op: "hello", tab, locked: Boolean(navigator.locks) });
  for (const topic of live.values()) topic.resend();
}

// A closing tab says so at once (a crashed one is found by its lock); one back from the
// back/forward cache may have been forgotten meanwhile.
addEventListener("pagehide", () => send?.({ op: "bye", tab }));
addEventListener("pageshow", (ev) => ev.persisted && send && resend(send));

export function connect(url, options = {}) {
  const {
    on = {},
    onState = () => {},
    onReset = () => {},
    onOpen = () => {},
    minDelay = 500,
    maxDelay = 15000,
    maxRetries = Infinity,
    withCredentials = false,
    native = true,
  } = options;
  let lastEventId = options.lastEventId ?? null;
  let state = null;
  let started = false;
  let attempts = 0;
  let timer = null;
  let closed = false;
  let post; // undefined while choosing, null for our own EventSource, else the mux's
  let source = null; // our own EventSource
  let key = null; // our mux topic while subscribed
  let path = null; // what we asked for last, for the wire view

  const setState = (next) => {
    if (next === state || !STATES.includes(next)) return;
    state = next;
    onState(next);
  };

  const handlers = { ...on };

  // One frame, from either path. `id` is the frame's own id, if any.
  const deliver = (type, data, id, ev) => {
    if (id) lastEventId = id;
    ev ??= new MessageEvent(type, { data, lastEventId: lastEventId ?? "" });
    const detail = { url: path, id: id || null, event: type, data, size: utf8.encode(data).length, time: Date.now() };
    dispatchEvent(new CustomEvent("sse:frame", { detail }));
    if (type === "reset") onReset(parse(data), ev);
    else if (type === "shutdown") setState("retrying");
    else handlers[type]?.(parse(data), ev);
  };

  const scheduleRetry = () => {
    attempts += 1;
    if (attempts > maxRetries) {
      setState("failed");
      return;
    }
    setState("retrying");
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(attempts - 1, 10));
    const delay = base / 2 + Math.random() * (base / 2); // "equal jitter"
    timer = setTimeout(post ? subscribe : open, delay);
  };

  const target = () => {
    setState(started ? "retrying" : "connecting");
    started = true;
    return typeof url === "function" ? url() : url;
  };

  // -- our own EventSource -------------------------------------------------------------------------
  const listen = (es, type) =>
    es.addEventListener(type, (ev) => {
      if (handlers[type] || type === "reset" || type === "shutdown") deliver(type, ev.data, ev.lastEventId, ev);
    });

  const open = () => {
    timer = null;
    if (closed) return;
    path = withParam(target(), "last_event_id", lastEventId);
    const es = new EventSource(path, { withCredentials });
    source = es;
    for (const type of new Set([...Object.keys(handlers), "reset", "shutdown"])) listen(es, type);
    es.onopen = () => {
      attempts = 0;
      setState("open");
      onOpen();
    };
    es.onerror = () => {
      if (closed) return;
      if (native && es.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself and sends Last-Event-ID.
        setState("retrying");
        return;
      }
      // CLOSED: the browser has given up (non-200, wrong content type). We take over.
      es.close();
      scheduleRetry();
    };
  };

  // -- a topic of the shared connection ------------------------------------------------------------
  const topic = {
    feed(m) {
      if (m.op === "m") deliver(m.e, m.d, m.id);
      else if (m.op === "down") setState("retrying"); // the holder reconnects and re-subscribes us
      else if (m.state === "open") {
        attempts = 0;
        setState("open");
        onOpen();
      } else {
        // The topic's stream ended or was refused: ask again later, as EventSource would; not
        // after a 204, which is the server saying "nothing more, ever" (docs/mux.md).
        live.delete(key);
        key = null;
        if (m.status !== 204) scheduleRetry();
      }
    },
    resend() {
      post({ op: "sub", tab, k: key, path, last: lastEventId });
    },
  };

  const subscribe = () => {
    timer = null;
    if (closed) return;
    path = withParam(target(), "last_event_id", null);
    key = `${tab}:${++seq}`;
    live.set(key, topic);
    topic.resend();
  };

  const unsubscribe = () => {
    if (key === null) return;
    live.delete(key);
    post({ op: "unsub", tab, k: key });
    key = null;
  };

  setState("connecting");
  carrier().then((chosenPost) => {
    post = chosenPost;
    if (!closed) (post ? subscribe : open)();
  });

  const stop = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (post) unsubscribe();
    else if (source) source.close();
  };

  return {
    get state() {
      return state;
    },
    get lastEventId() {
      return lastEventId;
    },
    /** Register another event handler (before or after connecting). */
    on(type, handler) {
      const known = type in handlers;
      handlers[type] = handler;
      if (source && !known) listen(source, type);
    },
    /** Start over (for example after "failed"), from the last id. */
    reconnect() {
      stop();
      closed = false;
      attempts = 0;
      if (post !== undefined) (post ? subscribe : open)();
    },
    close() {
      closed = true;
      stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// session(): make this page a client that answers the server's requests (SSE + POST, JSON-RPC).
//
// The stream starts with `event: session` {client_id, token}; the server then sends
// `event: request` {jsonrpc, id, method, params, deadline} and `event: cancel` {id, reason}.
// We answer each request once by POSTing a JSON-RPC response with `Authorization: Bearer token`.
// A request can arrive twice (it is re-sent when we reconnect while it is pending): we dedupe by id.
//
//   const s = session("/bidi/events", "/bidi/respond", {
//     clientId: "alice",                      // optional: otherwise the server picks one
//     onRequest: (req) => { ...; req.reply(result) or req.fail(code, message) },
//     onCancel: (id, reason) => ...,
//     onSession: ({client_id}) => ...,
//     onState: (state) => ...,
//   });
export function session(eventsUrl, respondUrl, options = {}) {
  const { onRequest = () => {}, onCancel = () => {}, onSession = () => {}, onReplaced = () => {} } = options;
  const storageKey = options.storageKey ?? null;
  let saved = null;
  if (storageKey) {
    try {
      saved = JSON.parse(sessionStorage.getItem(storageKey) || "null");
    } catch {
      saved = null;
    }
  }
  let clientId = saved?.client_id ?? options.clientId ?? null;
  let token = saved?.token ?? null;
  const seen = new Map(); // request id -> "open" | "answered" | "cancelled"
  const remember = (id, state) => {
    seen.delete(id);
    seen.set(id, state);
    // Ids are only re-sent while pending, so a bounded memory is enough (a long-lived page).
    while (seen.size > 1000) seen.delete(seen.keys().next().value);
  };

  const url = () => {
    let u = withParam(eventsUrl, "client_id", clientId);
    u = withParam(u, "token", token);
    return u;
  };

  async function post(message) {
    const res = await fetch(respondUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(message),
    });
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    return { ok: res.ok, status: res.status, body };
  }

  const stream = connect(url, {
    ...options,
    native: false,
    on: {
      ...(options.on || {}),
      session: (data) => {
        clientId = data.client_id;
        token = data.token;
        if (storageKey) sessionStorage.setItem(storageKey, JSON.stringify(data));
        onSession(data);
      },
      request: (msg) => {
        if (seen.has(msg.id)) return;
        remember(msg.id, "open");
        const finish = async (message) => {
          if (seen.get(msg.id) !== "open") return { ok: false, status: 0, body: { detail: "already closed" } };
          remember(msg.id, "answered");
          try {
            return await post(message);
          } catch (err) {
            // Not delivered: forget the id, so the server's re-send after a reconnect shows it again.
            seen.delete(msg.id);
            return { ok: false, status: 0, body: { detail: `network error (${err.message}): not delivered` } };
          }
        };
        onRequest({
          ...msg,
          reply: (result) => finish({ jsonrpc: "2.0", id: msg.id, result }),
          fail: (code, message, data) =>
            finish({ jsonrpc: "2.0", id: msg.id, error: data === undefined ? { code, message } : { code, message, data } }),
        });
      },
      cancel: (data) => {
        if (seen.get(data.id) === "open") remember(data.id, "cancelled");
        onCancel(data.id, data.reason);
      },
      replaced: (data) => {
        stream.close();
        onReplaced(data);
      },
    },
  });
  return {
    get clientId() {
      return clientId;
    },
    get state() {
      return stream.state;
    },
    close: () => stream.close(),
  };
}
