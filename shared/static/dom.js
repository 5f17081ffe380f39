// dom.js: building DOM nodes, the one way every page does it (issue 17: there were three el()s).
// Text goes in as text nodes, never parsed as HTML: whatever a user typed or a server sent shows
// as the characters it is, "<img src=x onerror=...>" included.

/**
 * `el(tag, attrs, ...children)`: a new element.
 *
 * - `attrs` is a class name (`el("span", "tag ok", "alert")`), or an object of properties
 *   (`{ type: "button", title: "…", dataset: { id } }`); a key with a "-" (`aria-label`, `role`
 *   too) is set as an attribute. `class` / `className` set the class. Null or "" sets nothing.
 * - `children`: nodes, or anything else, appended as text (numbers too); null / undefined /
 *   false are skipped, so `cond && el(...)` reads naturally.
 *
 * Event handlers and markup are refused (`onclick`, `innerHTML`...): listen with
 * addEventListener, and build markup from elements, so that no string ever becomes HTML.
 */
export function el(tag, attrs = null, ...children) {
  const node = document.createElement(tag);
  if (typeof attrs === "string") {
    if (attrs) node.className = attrs;
  } else if (attrs) {
    for (const [key, value] of Object.entries(attrs)) setAttr(node, key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child)); // a string is a text node
  }
  return node;
}

const REFUSED = new Set(["innerhtml", "outerhtml", "srcdoc"]);

function setAttr(node, key, value) {
  if (value === null || value === undefined || value === false) return;
  const lower = key.toLowerCase();
  if (lower.startsWith("on") || REFUSED.has(lower)) {
    throw new TypeError(`el(): "${key}" is not set from a string (use addEventListener / elements)`);
  }
  if (key === "class" || key === "className") node.className = value;
  else if (key === "dataset") Object.assign(node.dataset, value);
  else if (key.includes("-") || key === "role") node.setAttribute(key, value === true ? "" : String(value));
  else node[key] = value; // a property: type, value, title, href, hidden, disabled, tabIndex...
}
