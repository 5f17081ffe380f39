// The poll page: one stream (`tally` events: the counts now, then after every vote), one POST per vote.
// sse.js, dom.js, api.js and notice.js are the project's shared browser helpers (served from
// shared/static behind this app's own files): copy this page's shape for yours.
import { api, errorText } from "./api.js";
import { el } from "./dom.js";
import { say } from "./notice.js";
import { connect } from "./sse.js";

const $ = (id) => document.getElementById(id);

function render(tally) {
  $("question").textContent = tally.question;
  $("total").textContent = tally.total === 1 ? "1 vote" : `${tally.total} votes`;
  const most = Math.max(1, ...Object.values(tally.counts));
  $("options").replaceChildren(
    ...Object.entries(tally.counts).map(([option, count]) => {
      const button = el("button", { type: "button", "aria-label": `Vote for ${option}` }, "Vote");
      button.addEventListener("click", () => vote(option));
      const bar = el("span", "bar");
      bar.style.width = `${(100 * count) / most}%`;
      return el("li", null, button, el("span", "option", option), el("span", "track", bar), el("span", "count", count));
    }),
  );
}

async function vote(option) {
  try {
    await api("POST", "/poll/vote", { option });
    say($("error"), ""); // the new counts arrive as a `tally` event, to this page like to every other one
  } catch (err) {
    say($("error"), errorText(err));
  }
}

connect("/poll/events", {
  on: { tally: render },
  onState: (state) => {
    $("state").textContent = state;
    $("state").dataset.state = state;
  },
});
