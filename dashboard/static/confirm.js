// confirm.js: the server asks this page "terminate PID 4242 `sleep` started 10:02 by root?".
// One question at a time, with the server's deadline counting down; only an explicit "Yes"
// answers {confirmed: true}. "No", Escape or closing the dialog answers a JSON-RPC error.
import { started } from "./format.js";

const REJECTED = -32001; // shared/jsonrpc.py: a person said no

export class Confirmer {
  constructor(dialog) {
    this.dialog = dialog;
    this.queue = [];
    this.current = null;
    this.timer = null;
    this.q = (sel) => dialog.querySelector(sel);
    dialog.addEventListener("close", () => this.closed());
  }

  ask(req) {
    if (req.method !== "confirm") {
      req.fail(-32601, `this page does not handle ${req.method}`);
      return;
    }
    this.queue.push(req);
    this.next();
  }

  cancelled(id, reason) {
    this.queue = this.queue.filter((r) => r.id !== id);
    if (this.current?.id === id) {
      this.current.gone = reason || "cancelled";
      this.dialog.close("cancelled");
    }
  }

  next() {
    if (this.current || !this.queue.length) return;
    const req = (this.current = this.queue.shift());
    const p = req.params;
    const t = p.target;
    const verb = p.action.charAt(0).toUpperCase() + p.action.slice(1);
    const extra = p.action === "renice" ? ` to nice ${p.params.nice}` : "";
    this.q("#confirm-title").textContent = `${verb} a process?`;
    this.q("#confirm-question").textContent =
      `${verb} PID ${t.pid} “${t.name}” started ${started(t.start_time)} by ${t.user}${extra}?`;
    this.q("#confirm-cmdline").textContent = t.cmdline || "(no command line)";
    this.q("#confirm-yes").textContent = `Yes, ${p.action}`;
    this.dialog.returnValue = "";
    this.tick();
    this.timer = setInterval(() => this.tick(), 250);
    this.dialog.showModal();
    this.q("#confirm-no").focus();
  }

  tick() {
    const left = Math.max(0, Math.ceil(this.current.deadline - Date.now() / 1000));
    this.q("#confirm-deadline").textContent = `The server stops waiting in ${left} s.`;
  }

  closed() {
    clearInterval(this.timer);
    const req = this.current;
    this.current = null;
    if (req && !req.gone) {
      if (this.dialog.returnValue === "yes") req.reply({ confirmed: true });
      else req.fail(REJECTED, "declined by the operator");
    }
    this.next();
  }
}
