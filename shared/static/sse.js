// sse.js: a small wrapper around EventSource shared by every page of this project.
//
// What it adds to the browser's EventSource:
// - a connection state for a badge: "connecting" | "open" | "retrying" | "failed";
// - recovery when the browser gives up for good: a non-200 answer (a 503 during a restart, a
//   proxy error) closes a native EventSource permanently, so we re-create it with backoff and
//   jitter, passing the last event id as ?last_event_id= (a new EventSource cannot set headers);
// - the last event id seen, for the page to keep;
// - `onReset`: the server could not resume from our id, so the page must reload its state.
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
  let source = null;
  let attempts = 0;
  let timer = null;
  let closed = false;

  const setState = (next) => {
    if (next === state || !STATES.includes(next)) return;
    state = next;
    onState(next);
  };

  const track = (ev) => {
    if (ev.lastEventId) lastEventId = ev.lastEventId;
    // Every frame this page takes in, for the wire view (wire.js).
    const detail = { url: ev.target.url, id: ev.lastEventId, event: ev.type, data: ev.data, size: new Blob([ev.data]).size, time: Date.now() };
    window.dispatchEvent(new CustomEvent("sse:frame", { detail }));
  };

  const handlers = { ...on };
  const wire = (es) => {
    for (const [type, handler] of Object.entries(handlers)) {
      es.addEventListener(type, (ev) => {
        track(ev);
        handler(parse(ev.data), ev);
      });
    }
    es.addEventListener("reset", (ev) => {
      track(ev);
      onReset(parse(ev.data), ev);
    });
    es.addEventListener("shutdown", (ev) => {
      track(ev);
      setState("retrying");
    });
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
      scheduleReopen();
    };
  };

  const open = () => {
    timer = null;
    if (closed) return;
    setState(attempts === 0 && state === null ? "connecting" : "retrying");
    const target = typeof url === "function" ? url() : url;
    source = new EventSource(withParam(target, "last_event_id", lastEventId), { withCredentials });
    wire(source);
  };

  const scheduleReopen = () => {
    attempts += 1;
    if (attempts > maxRetries) {
      setState("failed");
      return;
    }
    setState("retrying");
    const base = Math.min(maxDelay, minDelay * 2 ** Math.min(attempts - 1, 10));
    const delay = base / 2 + Math.random() * (base / 2); // "equal jitter"
    timer = setTimeout(open, delay);
  };

  open();

  return {
    get state() {
      return state;
    },
    get lastEventId() {
      return lastEventId;
    },
    /** Register another event handler (before or after connecting). */
    on(type, handler) {
      handlers[type] = handler;
      if (source) {
        source.addEventListener(type, (ev) => {
          track(ev);
          handler(parse(ev.data), ev);
        });
      }
    },
    /** Start over (for example after "failed"), from the last id. */
    reconnect() {
      if (timer) clearTimeout(timer);
      if (source) source.close();
      closed = false;
      attempts = 0;
      open();
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      if (source) source.close();
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
