// sse-worker.js: the one SSE connection of this origin (issue 15), shared by every tab and app.
//
// Browsers give an origin six HTTP/1.1 connections and an EventSource holds one for good, so a
// few tabs used to exhaust them (the seventh page did not even load). Here one `GET /sse/mux`
// carries every stream of every tab as a topic (docs/mux.md). This file runs either as a module
// SharedWorker (served at /sse/worker.js) or, where there is no SharedWorker, is imported by the
// tab elected leader (sse.js); `Hub` is the same in both.
//
// Tab -> hub:  {op: "hello", tab, locked} · {op: "bye"|"ping", tab}
//              {op: "sub", tab, k, path, last} · {op: "unsub", tab, k}
// Hub -> tab:  {op: "ready"} · {op: "m", k, e, id, d} · {op: "t", k, state, status?, body?}
//              {op: "down"} (the mux dropped: every topic of the tab is retrying)
//              {op: "again"} (the tab was taken for dead: it sends hello and its topics again)

const MUX = "/sse/mux";
const SILENT_MS = 60000; // a tab without a lock that has not pinged for this long is gone

export class Hub {
  /** `send(tab, message)` reaches one tab; `gone(tab)` is told when a tab is forgotten. */
  constructor(send, gone = () => {}) {
    this.send = send;
    this.gone = gone;
    this.tabs = new Set();
    this.watched = new Set(); // tabs whose lock we wait for (granted = the tab died)
    this.pinged = new Map(); // tab -> when it last pinged (tabs that hold no lock)
    this.sweeper = null;
    this.topics = new Map(); // key -> {tab, path, last, sent: "no" | "posting" | "yes"}
    this.unsubs = new Set(); // keys the server knows and no tab wants any more
    this.es = null;
    this.conn = null;
    this.token = null;
    this.attempts = 0;
    this.timer = null;
    this.posting = false;
  }

  message(msg) {
    if (msg.op === "hello") this.hello(msg.tab, msg.locked);
    else if (msg.op === "ping") this.ping(msg.tab);
    else if (msg.op === "bye") this.forget(msg.tab);
    else if (msg.op === "sub") this.subscribe(msg);
    else if (msg.op === "unsub") this.unsubscribe(msg.k);
  }

  hello(tab, locked) {
    this.tabs.add(tab);
    // A closed tab says "bye" on pagehide, but a crashed one says nothing. Each tab holds the
    // lock "sse-tab:<id>" for its whole life; the browser releases it when the tab goes away for
    // any reason, so our queued request for it is granted exactly then.
    if (locked && navigator.locks) {
      if (!this.watched.has(tab)) {
        this.watched.add(tab);
        navigator.locks.request(`sse-tab:${tab}`, () => {
          this.watched.delete(tab);
          this.forget(tab);
        });
      }
    } else {
      this.ping(tab); // no Web Locks (not a secure context): the tab pings instead
    }
    this.send(tab, { op: "ready" });
  }

  ping(tab) {
    if (!this.tabs.has(tab)) {
      this.send(tab, { op: "again" }); // a live tab we took for dead (a hidden tab's slow timers)
      return;
    }
    this.pinged.set(tab, Date.now());
    this.sweeper ??= setInterval(() => {
      for (const [t, when] of this.pinged) if (Date.now() - when > SILENT_MS) this.forget(t);
    }, SILENT_MS / 4);
  }

  forget(tab) {
    for (const [k, t] of this.topics) if (t.tab === tab) this.unsubscribe(k);
    this.tabs.delete(tab);
    this.pinged.delete(tab);
    this.gone(tab);
  }

  subscribe({ tab, k, path, last }) {
    // A tab re-sends its topics when a new leader appears; one it already has stays as it is
    // (re-subscribing it would replay what may still be on its way to the tab: duplicates).
    if (this.topics.has(k)) return;
    this.tabs.add(tab);
    this.topics.set(k, { tab, path, last: last ?? null, sent: "no" });
    this.open();
    this.flush();
  }

  unsubscribe(k) {
    const t = this.topics.get(k);
    if (!t) return;
    this.topics.delete(k);
    if (t.sent !== "no") {
      this.unsubs.add(k);
      this.flush();
    }
  }

  open() {
    if (this.es || this.timer) return;
    const es = new EventSource(MUX);
    this.es = es;
    es.addEventListener("mux", (ev) => {
      const info = JSON.parse(ev.data);
      this.conn = info.conn;
      this.token = info.token;
      this.attempts = 0;
      // A new connection knows none of our topics: each resumes from the last id relayed to its
      // tab, which is the last one that tab has seen (one ordered path from here to it).
      this.unsubs.clear();
      for (const t of this.topics.values()) t.sent = "no";
      this.flush();
    });
    es.addEventListener("m", (ev) => {
      const f = JSON.parse(ev.data);
      const t = this.topics.get(f.k);
      if (!t) return; // unsubscribed meanwhile
      if (f.id !== null && f.id !== undefined) t.last = f.id;
      this.send(t.tab, { op: "m", ...f });
    });
    es.addEventListener("t", (ev) => {
      const f = JSON.parse(ev.data);
      const t = this.topics.get(f.k);
      if (!t) return;
      // Closed or refused: the server dropped the topic; the tab decides when to ask again.
      if (f.state !== "open") this.topics.delete(f.k);
      this.send(t.tab, { op: "t", ...f });
    });
    es.addEventListener("shutdown", () => this.lost());
    es.onerror = () => {
      this.lost();
      if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      // Given up (a 503 while the server drains, a proxy error): retry with backoff and jitter.
      es.close();
      this.es = null;
      this.attempts += 1;
      const base = Math.min(15000, 500 * 2 ** Math.min(this.attempts - 1, 10));
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.topics.size) this.open();
      }, base / 2 + Math.random() * (base / 2));
    };
  }

  /** The network is back: do not wait out the backoff. */
  wake() {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.attempts = 0;
    if (this.topics.size) this.open();
  }

  lost() {
    if (this.conn === null) return;
    this.conn = null;
    this.token = null;
    for (const tab of this.tabs) this.send(tab, { op: "down" });
  }

  restart() {
    if (this.es) this.es.close();
    this.es = null;
    this.lost();
    this.open();
  }

  // One POST at a time carries every pending change: twenty tabs opening at once cost a few
  // requests, not twenty, and the server sees them in order.
  async flush() {
    if (this.posting) return;
    this.posting = true;
    try {
      while (this.conn) {
        const conn = this.conn;
        const subs = [...this.topics].filter(([, t]) => t.sent === "no");
        const unsubscribe = [...this.unsubs];
        if (!subs.length && !unsubscribe.length) break;
        this.unsubs.clear();
        for (const [, t] of subs) t.sent = "posting";
        const subscribe = subs.map(([k, t]) => ({ k, path: t.path, last_event_id: t.last }));
        let res = null;
        let body = null;
        try {
          res = await fetch(`${MUX}/${encodeURIComponent(conn)}`, {
            method: "POST",
            headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
            body: JSON.stringify({ subscribe, unsubscribe }),
          });
          body = await res.json().catch(() => null);
        } catch {
          res = null;
        }
        if (conn !== this.conn) continue; // a new connection: everything is sent again anyway
        if (res === null) {
          // No answer (network): the stream will most likely drop too; if not, try again soon.
          for (const [, t] of subs) if (t.sent === "posting") t.sent = "no";
          setTimeout(() => this.flush(), 1000);
          break;
        }
        if (res.status === 404 || res.status === 401) {
          this.restart(); // that connection is gone on the server: open another one
          break;
        }
        for (const [k, t] of subs) {
          if (this.topics.get(k) !== t) continue; // dropped meanwhile (its unsub is queued)
          if (res.ok) {
            t.sent = "yes";
          } else {
            // 400/403/429: this batch was refused; its tabs back off and ask again, as a plain
            // EventSource would after a non-200 answer.
            this.topics.delete(k);
            this.send(t.tab, { op: "t", k, state: "error", status: res.status, body });
          }
        }
      }
    } finally {
      this.posting = false;
    }
  }
}

// As a SharedWorker: one MessagePort per tab.
if (typeof SharedWorkerGlobalScope === "function" && self instanceof SharedWorkerGlobalScope) {
  const ports = new Map();
  const hub = new Hub(
    (tab, msg) => ports.get(tab)?.postMessage(msg),
    (tab) => ports.delete(tab),
  );
  self.addEventListener("online", () => hub.wake());
  self.onconnect = (event) => {
    const port = event.ports[0];
    port.onmessage = (ev) => {
      if (ev.data.op === "hello" || ev.data.op === "ping") ports.set(ev.data.tab, port);
      hub.message(ev.data);
    };
  };
}
