// Copy-paste commands on a page name the server the page came from, not a fixed
// http://127.0.0.1:8000: `./run serve --port 9000`, `--host`, or a proxy's name (issue 18).
// Each <span class="origin"> holds that default for a page read without scripts.
export function showOrigin(root = document) {
  for (const node of root.querySelectorAll(".origin")) node.textContent = location.origin; // text, never HTML
}
