// theme.js: the light/dark switch in every page's header (issue 18). A classic script loaded in
// <head> (not a module: modules run after the first paint, and a stored "light" would flash dark).
// With no choice stored, base.css follows the system's prefers-color-scheme; a choice puts
// data-theme="light|dark" on <html>, remembered in localStorage for every page of the origin.
// Anything drawn on a canvas (the dashboard's charts) listens for the "themechange" event.
(() => {
  const KEY = "theme";
  const CHOICES = { auto: "System", light: "Light", dark: "Dark" };
  const root = document.documentElement;

  function stored() {
    try {
      const v = localStorage.getItem(KEY);
      return v === "light" || v === "dark" ? v : "auto";
    } catch {
      return "auto"; // storage refused (private mode, a sandbox): follow the system
    }
  }

  function apply(choice) {
    if (choice === "auto") delete root.dataset.theme;
    else root.dataset.theme = choice;
    window.dispatchEvent(new CustomEvent("themechange", { detail: { choice } }));
  }

  apply(stored());
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => apply(stored()));

  let select = null;
  function addSwitch() {
    const header = document.querySelector("header.top");
    if (!header || select) return;
    const label = document.createElement("label");
    label.className = "theme-switch";
    label.append("Theme");
    select = document.createElement("select");
    select.id = "theme";
    for (const [value, text] of Object.entries(CHOICES)) select.append(new Option(text, value));
    select.value = stored();
    select.addEventListener("change", () => {
      try {
        if (select.value === "auto") localStorage.removeItem(KEY);
        else localStorage.setItem(KEY, select.value);
      } catch {
        // not remembered, still applied to this page
      }
      apply(select.value);
    });
    label.append(select);
    (header.querySelector("nav") || header).append(label);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", addSwitch);
  else addSwitch();
  // Another tab of the same origin changed it.
  window.addEventListener("storage", (ev) => {
    if (ev.key !== KEY && ev.key !== null) return;
    if (select) select.value = stored();
    apply(stored());
  });
})();
