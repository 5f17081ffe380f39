// xterm.js under this page's strict CSP (style-src 'self': no 'unsafe-inline').
//
// xterm's DOM renderer writes its CSS in the two forms that policy refuses: <style> elements
// (palette, cell size, scrollbar colours) and style="" attributes (24-bit colours). The browser
// drops each and logs an error for it: 70-88 a session (issue 18). The CSSOM is not subject to the
// CSP, and a script may already style anything through it, so handing scripts the CSSOM form of
// what they ask for weakens nothing; markup from strings (innerHTML, the parser) is still refused.
//
// - document.createElement("style") makes a hidden, inert <xterm-style> instead (no CSP check:
//   it is not a style element); the CSS text put in it is applied as a constructed stylesheet.
// - element.setAttribute("style", css) sets element.style.cssText.

const INERT = "xterm-style";
let installed = false;

/** Apply xterm's CSS through the CSSOM; ``root`` is the element the terminal opens in. */
export function cssomStyles(root) {
  if (!installed) {
    installed = true;
    const create = document.createElement.bind(document);
    document.createElement = (tag, options) => {
      if (String(tag).toLowerCase() !== "style") return create(tag, options);
      const el = create(INERT);
      el.hidden = true; // its text is CSS, never shown
      return el;
    };
    const setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (String(name).toLowerCase() === "style") this.style.cssText = String(value);
      else setAttribute.call(this, name, value);
    };
  }
  const sheets = new Map(); // <xterm-style> element -> {sheet, text}
  const ours = new WeakSet();
  const sync = () => {
    const present = new Set(root.querySelectorAll(INERT));
    for (const el of present) {
      let entry = sheets.get(el);
      if (!entry) {
        entry = { sheet: new CSSStyleSheet(), text: null };
        ours.add(entry.sheet);
        sheets.set(el, entry);
      }
      if (entry.text !== el.textContent) {
        entry.text = el.textContent;
        entry.sheet.replaceSync(entry.text);
      }
    }
    for (const el of [...sheets.keys()]) if (!present.has(el)) sheets.delete(el);
    const others = document.adoptedStyleSheets.filter((s) => !ours.has(s));
    document.adoptedStyleSheets = [...others, ...[...sheets.values()].map((e) => e.sheet)];
  };
  const isInert = (node) => node && node.nodeName === INERT.toUpperCase();
  new MutationObserver((mutations) => {
    const touched = mutations.some(
      (m) =>
        isInert(m.target) ||
        isInert(m.target.parentNode) ||
        [...m.addedNodes, ...m.removedNodes].some((n) => isInert(n) || (n.querySelector && n.querySelector(INERT))),
    );
    if (touched) sync();
  }).observe(root, { childList: true, subtree: true, characterData: true });
}
