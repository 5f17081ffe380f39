// notice.js: one way to show a page's error or notice (issue 17), in a region its HTML declares
// with role="alert" (an error: said at once) or role="status" / aria-live="polite" (a notice).
// The region is in the page's HTML from the start (empty, hidden): a live region created together
// with its text is missed by some screen readers. The text is set anew each time, so the same
// refusal twice in a row (the same bad name submitted again) is said again.

/** Show `text` in `region`, or clear and hide it when `text` is empty. As text, never HTML. */
export function say(region, text) {
  const value = text == null ? "" : String(text);
  region.textContent = value;
  region.hidden = value === "";
}
