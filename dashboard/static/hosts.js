// hosts.js: the host switcher. Every dashboard instance on one backend publishes its host; the
// page lists the hosts its server can see, shows the one in the URL (?host=), and says so when a
// host goes away (its dashboard stopped): the last state stays on screen, marked as gone.
import { el } from "./dom.js";
import { clock } from "./format.js";

export class HostSwitcher {
  constructor({ select, count, banner, onSwitch }) {
    this.select = select;
    this.count = count;
    this.banner = banner;
    this.onSwitch = onSwitch;
    this.self = null; // the host of the server this page is connected to
    this.hosts = new Map(); // name -> {name, live, owner?, instances?, gone_at?}
    this.current = new URLSearchParams(location.search).get("host") || null;
    select.addEventListener("change", () => this.go(select.value, true));
    window.addEventListener("popstate", () => {
      const host = new URLSearchParams(location.search).get("host") || this.self;
      if (host && host !== this.current) this.go(host, false);
    });
  }

  /** The host on screen (null until the server has said which one is its own). */
  get host() {
    return this.current || this.self;
  }

  /** A `hosts` event or GET /dashboard/hosts: {self?, hosts: [...]}. */
  update(info) {
    if (info.self) this.self = info.self;
    this.hosts = new Map(info.hosts.map((h) => [h.name, h]));
    this.render();
  }

  /** The server said the host on screen went away (event `gone`). */
  gone(host) {
    const h = this.hosts.get(host) || { name: host };
    this.hosts.set(host, { ...h, live: false, gone_at: Date.now() / 1000 });
    this.render();
  }

  go(host, push) {
    if (!host || host === this.host) return;
    this.current = host;
    if (push) {
      const url = new URL(location.href);
      if (host === this.self) url.searchParams.delete("host");
      else url.searchParams.set("host", host);
      history.pushState(null, "", url.pathname + url.search);
    }
    this.render();
    this.onSwitch(host);
  }

  render() {
    const shown = this.host;
    const names = [...this.hosts.keys()];
    if (shown && !this.hosts.has(shown)) names.push(shown);
    names.sort();
    const options = names.map((name) => {
      const h = this.hosts.get(name);
      const tags = [];
      if (name === this.self) tags.push("this server");
      if (!h) tags.push("unknown");
      else if (!h.live) tags.push("gone");
      const opt = el("option", "", tags.length ? `${name} · ${tags.join(", ")}` : name);
      opt.value = name;
      opt.dataset.live = String(Boolean(h?.live));
      return opt;
    });
    this.select.replaceChildren(...options);
    if (shown) this.select.value = shown;
    const live = [...this.hosts.values()].filter((h) => h.live).length;
    this.count.textContent = `${live} host${live === 1 ? "" : "s"} live`;
    const h = shown ? this.hosts.get(shown) : null;
    const down = Boolean(shown && this.hosts.size && (!h || !h.live));
    document.body.dataset.host = shown || "";
    if (shown) document.title = `${shown} · Dashboard`;
    document.body.dataset.hostState = down ? "gone" : "live";
    this.select.dataset.state = down ? "gone" : "live";
    this.banner.hidden = !down;
    if (down) {
      this.banner.textContent = h
        ? `Host ${shown} is gone: its dashboard stopped${h.gone_at ? ` at ${clock(h.gone_at)}` : ""}. ` +
          "Its last state stays on screen; the page reconnects if it comes back."
        : `No host named ${shown} is known to this server.`;
    }
  }
}
