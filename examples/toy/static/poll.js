// The poll page: one stream (`tally` events: the counts now, then after every vote), one POST per vote.
// sse.js is the project's shared EventSource wrapper (served from shared/static behind this app's).
import { connect } from "./sse.js";

const $ = (id) => document.getElementById(id);

function render(tally) {
  $("question").textContent = tally.question;
  $("total").textContent = String(tally.total);
  const list = $("options");
  list.replaceChildren(
    ...Object.entries(tally.counts).map(([option, count]) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.textContent = `${option}: ${count}`;
      button.addEventListener("click", () => vote(option));
      item.append(button);
      return item;
    }),
  );
}

async function vote(option) {
  const r = await fetch("/poll/vote", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ option }),
  });
  // The new counts arrive as a `tally` event, to this page like to every other one.
  $("error").textContent = r.ok ? "" : (await r.json()).detail;
}

connect("/poll/events", {
  on: { tally: render },
  onState: (state) => {
    $("state").textContent = state;
    $("state").dataset.state = state;
  },
});
