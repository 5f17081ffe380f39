// procs.js: the process table: sortable, filterable, and frozen on demand while you pick a target.
import { bytes, el, started } from "./format.js";

const SHOWN = 200;
const NUMERIC = new Set(["pid", "cpu", "mem", "rss", "start"]);

export class ProcessTable {
  constructor({ table, tbody, filter, freeze, count, onSelect }) {
    this.tbody = tbody;
    this.filterInput = filter;
    this.freezeButton = freeze;
    this.countEl = count;
    this.onSelect = onSelect;
    this.rows = [];
    this.total = 0;
    this.frozen = false;
    this.frozenAt = null;
    this.sortKey = "cpu";
    this.sortDir = "desc";
    this.selected = null; // the picked process as last listed: {pid, start, name, user, ...}

    table.querySelectorAll("th[data-key]").forEach((th) => {
      th.addEventListener("click", () => this.sortBy(th.dataset.key, table));
    });
    filter.addEventListener("input", () => this.render());
    freeze.addEventListener("click", () => this.setFrozen(!this.frozen));
    tbody.addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr[data-pid]");
      if (!tr) return;
      const pick = this.rows.find((r) => String(r.pid) === tr.dataset.pid && String(r.start) === tr.dataset.start);
      if (pick) this.select(pick);
    });
  }

  update(frame) {
    if (this.frozen) {
      this.countEl.textContent = `frozen at ${new Date(this.frozenAt).toLocaleTimeString()} · ${frame.procs_total} processes now`;
      return;
    }
    this.rows = frame.procs;
    this.total = frame.procs_total;
    if (this.selected) {
      const now = this.rows.find((r) => r.pid === this.selected.pid && r.start === this.selected.start);
      this.onSelect(now || this.selected, !now);
    }
    this.render();
  }

  setFrozen(frozen) {
    this.frozen = frozen;
    this.frozenAt = frozen ? Date.now() : null;
    this.freezeButton.setAttribute("aria-pressed", String(frozen));
    this.freezeButton.textContent = frozen ? "Frozen · resume updates" : "Freeze";
    if (!frozen) this.render();
    else this.countEl.textContent = `frozen at ${new Date(this.frozenAt).toLocaleTimeString()}`;
  }

  /** Forget every row and the selection (another host is on screen). */
  clear() {
    this.rows = [];
    this.total = 0;
    this.selected = null;
    if (this.frozen) this.setFrozen(false);
    this.render();
  }

  select(row) {
    this.selected = row;
    this.onSelect(row, false);
    this.render();
  }

  sortBy(key, table) {
    if (this.sortKey === key) this.sortDir = this.sortDir === "asc" ? "desc" : "asc";
    else {
      this.sortKey = key;
      this.sortDir = NUMERIC.has(key) && key !== "pid" ? "desc" : "asc";
    }
    table.querySelectorAll("th[data-key]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.key === key);
      if (th.dataset.key === key) th.dataset.dir = this.sortDir;
      else delete th.dataset.dir;
    });
    this.render();
  }

  visible() {
    const q = this.filterInput.value.trim().toLowerCase();
    let rows = this.rows;
    if (q) {
      rows = rows.filter(
        (r) => r.name.toLowerCase().includes(q) || r.user.toLowerCase().includes(q) || String(r.pid).startsWith(q),
      );
    }
    const k = this.sortKey;
    const sign = this.sortDir === "asc" ? 1 : -1;
    const cmp = NUMERIC.has(k) ? (a, b) => (a[k] - b[k]) * sign : (a, b) => String(a[k]).localeCompare(String(b[k])) * sign;
    return [...rows].sort((a, b) => cmp(a, b) || a.pid - b.pid);
  }

  render() {
    const rows = this.visible();
    const out = document.createDocumentFragment();
    const sel = this.selected;
    for (const r of rows.slice(0, SHOWN)) {
      const tr = el("tr");
      tr.dataset.pid = String(r.pid);
      tr.dataset.start = String(r.start);
      if (sel && sel.pid === r.pid && sel.start === r.start) tr.className = "selected";
      if (r.status === "stopped") tr.classList.add("stopped");
      tr.append(
        el("td", "num mono", r.pid),
        el("td", "name", r.name),
        el("td", "", r.user),
        el("td", `num mono${r.cpu >= 50 ? " hot" : ""}`, r.cpu.toFixed(1)),
        el("td", "num mono", r.mem.toFixed(1)),
        el("td", "num mono", bytes(r.rss)),
        el("td", `status ${r.status}`, r.status),
        el("td", "mono", started(r.start)),
      );
      out.append(tr);
    }
    this.tbody.replaceChildren(out);
    if (!this.frozen) {
      const listed = this.rows.length < this.total ? `${this.rows.length} busiest of ${this.total}` : `${this.total}`;
      const shown = rows.length > SHOWN ? `, first ${SHOWN} shown` : "";
      this.countEl.textContent = `${rows.length} matching · ${listed} processes${shown}`;
    }
  }
}
