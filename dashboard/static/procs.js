// procs.js: the process table: sortable, filterable, and frozen on demand while you pick a target.
//
// By keyboard (issue 18): each column header is a button (aria-sort on the sorted one); the rows
// are one Tab stop (roving tabindex): Up/Down/Home/End move, Space picks the row, Enter picks it
// and moves to the first action button. Rows are kept across frames (keyed by pid and start
// time) so the focused one keeps its focus while the numbers change under it.
import { el } from "./dom.js";
import { bytes, clock, started } from "./format.js";

const SHOWN = 200;
const NUMERIC = new Set(["pid", "cpu", "mem", "rss", "start"]);

export class ProcessTable {
  constructor({ table, tbody, filter, freeze, count, onSelect, onEnter }) {
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
    this.trs = new Map(); // "pid:start" -> its <tr>, reused from frame to frame
    this.current = null; // the key of the row that is the table's Tab stop
    this.onEnter = onEnter || (() => {});

    table.querySelectorAll("th[data-key]").forEach((th) => {
      const button = el("button", "sort", th.textContent);
      button.type = "button";
      button.addEventListener("click", () => this.sortBy(th.dataset.key, table));
      th.replaceChildren(button);
    });
    this.showSort(table);
    tbody.addEventListener("keydown", (ev) => this.key(ev));
    tbody.addEventListener("focusin", (ev) => {
      const tr = ev.target.closest("tr[data-key]");
      if (tr) this.current = tr.dataset.key;
    });
    filter.addEventListener("input", () => this.render());
    freeze.addEventListener("click", () => this.setFrozen(!this.frozen));
    tbody.addEventListener("click", (ev) => {
      // (a click also focuses the row: it has a tabindex)
      const tr = ev.target.closest("tr[data-pid]");
      if (!tr) return;
      const pick = this.rows.find((r) => String(r.pid) === tr.dataset.pid && String(r.start) === tr.dataset.start);
      if (pick) this.select(pick);
    });
  }

  update(frame) {
    if (this.frozen) {
      this.countEl.textContent = `frozen at ${clock(this.frozenAt / 1000)} · ${frame.procs_total} processes now`;
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
    else this.countEl.textContent = `frozen at ${clock(this.frozenAt / 1000)}`;
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
    this.showSort(table);
    this.render();
  }

  showSort(table) {
    table.querySelectorAll("th[data-key]").forEach((th) => {
      const on = th.dataset.key === this.sortKey;
      th.classList.toggle("sorted", on);
      if (on) {
        th.dataset.dir = this.sortDir;
        th.setAttribute("aria-sort", this.sortDir === "asc" ? "ascending" : "descending");
      } else {
        delete th.dataset.dir;
        th.removeAttribute("aria-sort");
      }
    });
  }

  key(ev) {
    const tr = ev.target.closest("tr[data-key]");
    if (!tr) return;
    const rows = [...this.tbody.rows];
    const at = rows.indexOf(tr);
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1, PageDown: at + 10, PageUp: at - 10 }[ev.key];
    if (to !== undefined) {
      ev.preventDefault();
      const next = rows[Math.max(0, Math.min(rows.length - 1, to))];
      this.current = next.dataset.key;
      this.roving();
      next.focus();
    } else if (ev.key === " " || ev.key === "Enter") {
      ev.preventDefault();
      const pick = this.rows.find((r) => rowKey(r) === tr.dataset.key);
      if (pick) this.select(pick);
      if (ev.key === "Enter") this.onEnter();
    }
  }

  roving() {
    const rows = [...this.tbody.rows];
    const stop = rows.find((tr) => tr.dataset.key === this.current) || rows.find((tr) => tr.classList.contains("selected")) || rows[0];
    for (const tr of rows) tr.tabIndex = tr === stop ? 0 : -1;
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
    const sel = this.selected;
    const focused = this.tbody.contains(document.activeElement) ? document.activeElement : null;
    const keep = new Map();
    const order = [];
    for (const r of rows.slice(0, SHOWN)) {
      const key = rowKey(r);
      const tr = this.trs.get(key) || el("tr");
      tr.dataset.key = key;
      tr.dataset.pid = String(r.pid);
      tr.dataset.start = String(r.start);
      const picked = Boolean(sel && sel.pid === r.pid && sel.start === r.start);
      tr.className = picked ? "selected" : "";
      tr.setAttribute("aria-selected", String(picked));
      if (r.status === "stopped") tr.classList.add("stopped");
      const cells = [
        ["num mono", r.pid],
        ["name", r.name],
        ["", r.user],
        [`num mono${r.cpu >= 50 ? " hot" : ""}`, r.cpu.toFixed(1)],
        ["num mono", r.mem.toFixed(1)],
        ["num mono", bytes(r.rss)],
        [`status ${r.status}`, r.status],
        ["mono", started(r.start)],
      ];
      if (tr.cells.length !== cells.length) tr.replaceChildren(...cells.map(([c, t]) => el("td", c, t)));
      else {
        cells.forEach(([c, t], i) => {
          const td = tr.cells[i];
          if (td.className !== c) td.className = c;
          if (td.textContent !== String(t)) td.textContent = String(t);
        });
      }
      keep.set(key, tr);
      order.push(tr);
    }
    for (const [key, tr] of this.trs) if (!keep.has(key)) tr.remove();
    this.trs = keep;
    // Put the rows in order, moving only those out of place (moveBefore keeps the focus where
    // the browser has it; elsewhere the focus is given back below).
    const move = this.tbody.moveBefore ? (n, ref) => this.tbody.moveBefore(n, ref) : (n, ref) => this.tbody.insertBefore(n, ref);
    order.forEach((tr, i) => {
      const there = this.tbody.rows[i] || null;
      if (there !== tr) tr.isConnected ? move(tr, there) : this.tbody.insertBefore(tr, there);
    });
    this.roving();
    if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
    if (!this.frozen) {
      const listed = this.rows.length < this.total ? `${this.rows.length} busiest of ${this.total}` : `${this.total}`;
      const shown = rows.length > SHOWN ? `, first ${SHOWN} shown` : "";
      this.countEl.textContent = `${rows.length} matching · ${listed} processes${shown}`;
    }
  }
}

const rowKey = (r) => `${r.pid}:${r.start}`;
