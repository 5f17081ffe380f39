import { api, errorText } from "./api.js";
import { el } from "./dom.js";
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
  // el() puts data in as text, never HTML: a frame's data is whatever the server sent.
  log.prepend(el("li", cls, el("span", "type", type), el("span", "id", id ?? ""), el("span", "data", text)));
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
  try {
    const body = await api("POST", "/basics/interval", { seconds });
    addLine("interval", null, `now ${body.seconds}s`, "note");
  } catch (err) {
    addLine("error", null, errorText(err), "note"); // the server's reason, in the log
  }
});
api("GET", "/basics/interval")
  .then((b) => {
    $("interval").value = b.seconds;
  })
  .catch(() => {}); // the field keeps its default; the first tick shows the interval anyway
start();
showOrigin();
