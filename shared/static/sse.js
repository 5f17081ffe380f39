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
      if (es.readyState === EventSource.CONNECTING) {
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
    source = new EventSource(withParam(url, "last_event_id", lastEventId), { withCredentials });
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
