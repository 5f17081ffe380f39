// render.js: turning user content into DOM nodes. Everything a user typed goes in as text
// (textContent / createTextNode); links and mentions are elements we build, never parsed HTML.
import { el } from "./dom.js";
import { full, when } from "./time.js";

// Same shape as the server's rule (chat/rules.py): letters, digits, "_", "." and "-", not
// ending in "." or "-", so "hi @bob." mentions "bob".
const WORD = "[\\p{L}\\p{N}\\p{M}_]";
const TOKENS = new RegExp(
  `(https?:\\/\\/[^\\s<>"]+[^\\s<>".,:;'!?)\\]])|(?<![\\p{L}\\p{N}\\p{M}_@])@(${WORD}(?:[\\p{L}\\p{N}\\p{M}_.\\-]*${WORD})?)`,
  "gu",
);

/** Fill `container` with `text`: links clickable, @mentions marked, mine highlighted. */
export function renderText(container, text, mentions, myName) {
  container.replaceChildren();
  const known = new Set((mentions || []).map((m) => m.toLowerCase()));
  const mine = (myName || "").toLowerCase();
  let at = 0;
  let mentionsMe = false;
  for (const match of text.matchAll(TOKENS)) {
    if (match.index > at) container.append(document.createTextNode(text.slice(at, match.index)));
    if (match[1]) {
      const a = el("a", "link", match[1]);
      a.href = match[1]; // only http(s) URLs reach here: no javascript: links
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      container.append(a);
    } else {
      const name = match[2].toLowerCase();
      if (known.has(name)) {
        const span = el("span", name === mine ? "mention me" : "mention", match[0]);
        if (name === mine) mentionsMe = true;
        container.append(span);
      } else {
        container.append(document.createTextNode(match[0]));
      }
    }
    at = match.index + match[0].length;
  }
  if (at < text.length) container.append(document.createTextNode(text.slice(at)));
  return mentionsMe;
}

// Times as on every page (shared/static/time.js): "14:05" today, "2026-12-02 14:05" before.
export const shortTime = (ts) => when(ts);
export const fullTime = (ts) => full(ts);

export function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function hue(seed) {
  let h = 0;
  for (const ch of seed) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

/** A round avatar with the name's first letter, coloured by the person's id. */
export function avatar(name, seed) {
  const node = el("span", "avatar", (Array.from(name)[0] || "?").toUpperCase());
  node.style.background = `hsl(${hue(seed || name)} 45% 38%)`; // CSSOM: allowed by the CSP
  node.setAttribute("aria-hidden", "true");
  return node;
}
