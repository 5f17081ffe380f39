import { showOrigin } from "./origin.js";
import { connect } from "./sse.js";

const $ = (id) => document.getElementById(id);
const log = $("log");
let stream = null;
let count = 0;
let resets = 0;
let lastId = null;
let shownEvery = null; // the ticker's interval as this page last showed it

function addLine(type, id, text, cls = "") {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  for (const [name, value] of [["type", type], ["id", id ?? ""], ["data", text]]) {
    const span = document.createElement("span");
    span.className = name;
    span.textContent = value; // never innerHTML: data is text
    li.append(span);
  }
  log.prepend(li);
  while (log.children.length > 500) log.lastChild.remove();
}

function setState(state) {
  $("state").dataset.state = state;
  $("state").textContent = state;
  $("connect").disabled = stream !== null;
  $("disconnect").disabled = stream === null;
}

function start() {
  if (stream) return;
  stream = connect("/basics/events", {
    lastEventId: lastId,
    on: {
      tick: (data, ev) => {
        count += 1;
        lastId = ev.lastEventId;
        $("count").textContent = String(count);
        $("last-id").textContent = lastId;
        // A tick made well before it arrived was missed while away and replayed from the log.
        const age = typeof data?.t === "number" ? Date.now() / 1000 - data.t : 0;
        const every = typeof data?.every === "number" ? data.every : null;
        const replayed = age > Math.max(2, 2 * (every ?? 1));
        addLine(replayed ? "replayed" : "tick", ev.lastEventId, ev.data, replayed ? "tick replayed" : "tick");
        if (every !== null && !replayed && every !== shownEvery) {
          if (shownEvery !== null) addLine("interval", null, `the ticker now ticks every ${every} s, for everybody watching`, "note");
          shownEvery = every;
          if (document.activeElement !== $("interval")) $("interval").value = every;
        }
      },
    },
    onState: setState,
    onReset: (info, ev) => {
      resets += 1;
      lastId = ev.lastEventId || null;
      $("resets").textContent = String(resets);
      addLine("reset", ev.lastEventId, ev.data, "reset");
    },
  });
}

function stop() {
  if (!stream) return;
  stream.close();
  stream = null;
  setState("closed");
  $("state").textContent = "disconnected";
  addLine("—", null, "disconnected by you", "note");
}

$("connect").addEventListener("click", start);
$("disconnect").addEventListener("click", stop);
$("clear").addEventListener("click", () => {
  log.replaceChildren();
  count = 0;
  $("count").textContent = "0";
});
$("apply").addEventListener("click", async () => {
  const seconds = Number($("interval").value);
  const res = await fetch("/basics/interval", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ seconds }),
  });
  const body = await res.json();
  addLine(res.ok ? "interval" : "error", null, res.ok ? `now ${body.seconds}s` : body.detail, "note");
});
fetch("/basics/interval").then((r) => r.json()).then((b) => { $("interval").value = b.seconds; });
start();
showOrigin();
