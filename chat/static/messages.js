// messages.js: the message list of the open room, kept consistent whatever order things arrive in.
//
// - Confirmed messages sit in #messages sorted by server id; each id is on screen at most once.
// - A message being sent sits in #outbox (local echo) under its client_msg_id until the server's
//   copy arrives, by the POST's answer or by the stream, whichever comes first: then the echo is
//   removed and the server copy takes its place. Exactly one copy, always.
// - Every message has a version, bumped by each edit, deletion and reaction. A copy or a patch
//   older than what is shown is ignored; a patch for a message not loaded yet (older than the
//   loaded pages) is kept and applied when its page loads.

import { errorText } from "./api.js";
import { el } from "./dom.js";
import { avatar, fileSize, fullTime, renderText, shortTime } from "./render.js";

const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "🙏"];
const GROUP_SECONDS = 300;
const MAX_PARKED = 1000;

export class MessageList {
  /**
   * actions: { react(msg, emoji), edit(msg, text) -> Promise, remove(msg) -> Promise,
   *            retry(clientId), discard(clientId), mediaLoaded(), editEnded() }
   */
  constructor({ list, outbox, me, actions }) {
    this.list = list;
    this.outbox = outbox;
    this.me = me;
    this.actions = actions;
    this.clear();
  }

  clear() {
    this.byId = new Map(); // id -> { msg, li, editing }
    this.pending = new Map(); // client_msg_id -> li
    this.parked = new Map(); // id -> [{ kind, patch }] for messages not loaded yet
    this.newest = null;
    this.oldest = null;
    this.divider = null;
    this.list.replaceChildren();
    this.outbox.replaceChildren();
  }

  get size() {
    return this.byId.size;
  }

  // -- server copies ---------------------------------------------------------------------------

  /** Show a message from history, a POST answer or the stream. Returns true if it is new here. */
  upsert(msg) {
    if (msg.author_id === this.me.id) this.confirm(msg.client_msg_id);
    const have = this.byId.get(msg.id);
    if (have) {
      if (msg.version < have.msg.version) return false;
      if (msg.deleted) this.drop(msg.id);
      else {
        have.msg = msg;
        this.paint(have);
      }
      return false;
    }
    if (msg.deleted) return false;
    const current = this.unpark(msg);
    if (!current) return false;
    const item = { msg: current, li: el("li"), editing: null };
    this.byId.set(current.id, item);
    this.place(item);
    this.paint(item);
    this.group(item.li);
    this.group(item.li.nextElementSibling);
    return true;
  }

  /** An edit, delete or reaction event. */
  patch(kind, patch) {
    const have = this.byId.get(patch.id);
    if (!have) {
      this.park(kind, patch);
      return;
    }
    if (patch.version <= have.msg.version) return; // already reflected in what we show
    if (kind === "delete") {
      this.drop(patch.id);
      return;
    }
    have.msg = applyPatch(have.msg, kind, patch);
    this.paint(have);
  }

  park(kind, patch) {
    if (this.newest !== null && patch.id > this.newest) return; // not ours to keep: never shown
    const list = this.parked.get(patch.id) || [];
    list.push({ kind, patch });
    this.parked.set(patch.id, list);
    if (this.parked.size > MAX_PARKED) this.parked.delete(this.parked.keys().next().value);
  }

  unpark(msg) {
    const list = this.parked.get(msg.id);
    if (!list) return msg;
    this.parked.delete(msg.id);
    let current = msg;
    for (const { kind, patch } of list.sort((a, b) => a.patch.version - b.patch.version)) {
      if (patch.version <= current.version) continue;
      if (kind === "delete") return null;
      current = applyPatch(current, kind, patch);
    }
    return current;
  }

  drop(id) {
    const have = this.byId.get(id);
    if (!have) return;
    this.byId.delete(id);
    const next = have.li.nextElementSibling;
    const hadFocus = have.li.contains(document.activeElement);
    have.li.remove();
    this.group(next);
    if (hadFocus) this.actions.editEnded?.(); // a keyboard user is not left on <body>
  }

  /** The newest message of mine with text, for Up in an empty composer (as in most chats). */
  lastEditable() {
    const mine = [...this.byId.values()].filter((i) => i.msg.author_id === this.me.id && i.msg.text);
    return mine.reduce((a, b) => (a && a.msg.id > b.msg.id ? a : b), null);
  }

  /** Edit a message by id (Up in the composer); false when there is none of mine to edit. */
  editLast() {
    const item = this.lastEditable();
    if (!item) return false;
    this.startEdit(item);
    item.li.scrollIntoView({ block: "nearest" });
    return true;
  }

  place(item) {
    const id = item.msg.id;
    item.li.dataset.id = String(id);
    if (this.newest === null || id > this.newest) {
      this.list.append(item.li);
      this.newest = id;
      if (this.oldest === null) this.oldest = id;
    } else if (id < this.oldest) {
      this.list.prepend(item.li);
      this.oldest = id;
    } else {
      const after = Array.from(this.list.querySelectorAll("li.msg")).find((li) => Number(li.dataset.id) > id);
      this.list.insertBefore(item.li, after || null);
    }
  }

  /** Consecutive messages of one author within a few minutes share one header. */
  group(li) {
    if (!li || !li.classList.contains("msg")) return;
    const prev = li.previousElementSibling;
    const a = prev && prev.classList.contains("msg") ? this.byId.get(Number(prev.dataset.id)) : null;
    const b = this.byId.get(Number(li.dataset.id));
    const cont = !!(a && b && a.msg.author_id === b.msg.author_id && b.msg.ts - a.msg.ts < GROUP_SECONDS);
    li.classList.toggle("cont", cont);
  }

  // -- the "new messages" marker ---------------------------------------------------------------

  /** Put the marker before the first message after `lastRead` not written by me. */
  markUnreadAfter(lastRead) {
    for (const [id, item] of [...this.byId].sort((x, y) => x[0] - y[0])) {
      if (id > lastRead && item.msg.author_id !== this.me.id) {
        this.markBefore(id);
        return;
      }
    }
  }

  markBefore(id) {
    const item = this.byId.get(id);
    if (!item || this.divider) return;
    this.divider = el("li", "divider");
    this.divider.append(el("span", null, "New messages"));
    this.list.insertBefore(this.divider, item.li);
    this.group(item.li);
  }

  clearMarker() {
    if (!this.divider) return;
    const next = this.divider.nextElementSibling;
    this.divider.remove();
    this.divider = null;
    this.group(next);
  }

  // -- local echo ------------------------------------------------------------------------------

  addPending(clientId, text, fileName) {
    const li = el("li", "msg mine pending");
    li.dataset.clientId = clientId;
    li.append(avatar(this.me.name, this.me.id));
    const body = el("div", "body");
    const meta = el("div", "meta");
    meta.append(el("span", "author", this.me.name), el("span", "status", fileName ? "uploading…" : "sending…"));
    const content = el("div", "text");
    if (fileName) content.textContent = `📎 ${fileName}`;
    else renderText(content, text, [], this.me.name);
    body.append(meta, content);
    li.append(body);
    this.outbox.append(li);
    this.pending.set(clientId, li);
    return li;
  }

  setPendingStatus(clientId, text) {
    const li = this.pending.get(clientId);
    if (li) li.querySelector(".status").textContent = text;
  }

  failPending(clientId, detail) {
    const li = this.pending.get(clientId);
    if (!li) return;
    li.classList.add("failed");
    const status = li.querySelector(".status");
    status.textContent = `not sent: ${detail}`;
    const retry = el("button", "link-button", "Retry");
    retry.addEventListener("click", () => {
      li.classList.remove("failed");
      status.textContent = "sending…";
      this.actions.retry(clientId);
    });
    const discard = el("button", "link-button", "Discard");
    discard.addEventListener("click", () => this.confirm(clientId));
    status.after(retry, discard);
  }

  confirm(clientId) {
    const li = this.pending.get(clientId);
    if (!li) return;
    this.pending.delete(clientId);
    li.remove();
  }

  // -- drawing one message ---------------------------------------------------------------------

  paint(item) {
    const { msg, li } = item;
    const mine = msg.author_id === this.me.id;
    li.classList.add("msg");
    li.classList.toggle("mine", mine);
    li.dataset.author = msg.author;
    li.dataset.time = shortTime(msg.ts); // shown beside grouped messages on hover
    const body = el("div", "body");
    const meta = el("div", "meta");
    const time = el("time", "time", shortTime(msg.ts));
    time.title = fullTime(msg.ts);
    meta.append(el("span", "author", msg.author), time);
    if (msg.edited_at) {
      const edited = el("span", "edited", "(edited)");
      edited.title = `edited ${fullTime(msg.edited_at)}`;
      meta.append(edited);
    }
    body.append(meta);
    let mentionsMe = false;
    if (item.editing) {
      body.append(item.editing);
    } else if (msg.text) {
      const text = el("div", "text");
      mentionsMe = renderText(text, msg.text, msg.mentions, this.me.name);
      body.append(text);
    }
    if (msg.file) body.append(this.fileView(msg.file));
    if (msg.reactions.length) body.append(this.reactionsView(msg));
    li.classList.toggle("mention-me", mentionsMe);
    // A repaint (a reaction, an edit) replaces the buttons: the one that had the keyboard focus
    // gets it back, or the bar's first one, so a keyboard user is not thrown back to <body>.
    const focused = li.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    li.replaceChildren(avatar(msg.author, msg.author_id), body, this.actionsView(item, mine));
    if (focused && !item.editing) {
      const again = li.querySelector(`[data-key="${CSS.escape(focused)}"]`) || li.querySelector('[data-key="react"]');
      again?.focus();
    }
  }

  fileView(file) {
    if (file.image) {
      const link = el("a", "file image");
      link.href = file.url;
      link.target = "_blank";
      link.rel = "noopener";
      const img = el("img");
      img.src = file.url;
      img.alt = file.name;
      img.loading = "lazy";
      img.addEventListener("load", () => this.actions.mediaLoaded());
      link.append(img);
      return link;
    }
    const card = el("a", "file card");
    card.href = file.url;
    card.download = file.name;
    const info = el("span", "file-info");
    info.append(el("span", "file-name", file.name), el("span", "file-size", fileSize(file.size)));
    const dot = file.name.lastIndexOf(".");
    const ext = dot > 0 ? file.name.slice(dot + 1, dot + 5).toUpperCase() : "FILE";
    card.append(el("span", "file-icon", ext), info, el("span", "file-get", "Download"));
    return card;
  }

  reactionsView(msg) {
    const row = el("div", "reactions");
    for (const { emoji, users } of msg.reactions) {
      const mine = users.some((u) => u.id === this.me.id);
      const chip = el("button", mine ? "reaction mine" : "reaction");
      chip.type = "button";
      chip.setAttribute("aria-pressed", String(mine));
      chip.title = users.map((u) => u.name).join(", ");
      chip.dataset.emoji = emoji;
      chip.dataset.key = `chip ${emoji}`;
      chip.setAttribute("aria-label", `${emoji} ${users.length}: ${chip.title}${mine ? " (you; press to remove)" : ""}`);
      chip.append(el("span", "emoji", emoji), el("span", "count", String(users.length)));
      chip.addEventListener("click", () => this.actions.react(msg, emoji));
      row.append(chip);
    }
    return row;
  }

  actionsView(item, mine) {
    // Shown on hover and whenever one of its buttons has the keyboard focus (Tab reaches them;
    // Shift+Tab from the composer lands on the newest message's).
    const bar = el("div", "actions");
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", `Message from ${item.msg.author}`);
    const palette = el("div", "palette");
    palette.hidden = true;
    const react = el("button", "act react", "☺+");
    for (const emoji of QUICK_EMOJI) {
      const b = el("button", "pick", emoji);
      b.type = "button";
      b.title = `React with ${emoji}`;
      b.setAttribute("aria-label", `React with ${emoji}`);
      b.dataset.key = `pick ${emoji}`;
      b.addEventListener("click", () => {
        palette.hidden = true;
        react.setAttribute("aria-expanded", "false");
        react.focus();
        this.actions.react(item.msg, emoji);
      });
      palette.append(b);
    }
    palette.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        palette.hidden = true;
        react.setAttribute("aria-expanded", "false");
        react.focus();
      }
    });
    react.type = "button";
    react.title = "Add a reaction";
    react.dataset.key = "react";
    react.setAttribute("aria-label", "Add a reaction");
    react.setAttribute("aria-expanded", "false");
    react.addEventListener("click", () => {
      palette.hidden = !palette.hidden;
      react.setAttribute("aria-expanded", String(!palette.hidden));
      if (!palette.hidden) palette.querySelector("button").focus();
    });
    bar.append(palette, react);
    if (mine) {
      if (item.msg.text) {
        const edit = el("button", "act edit", "Edit");
        edit.type = "button";
        edit.dataset.key = "edit";
        edit.addEventListener("click", () => this.startEdit(item));
        bar.append(edit);
      }
      const del = el("button", "act delete", "Delete");
      del.type = "button";
      del.dataset.key = "delete";
      let armed = null;
      del.addEventListener("click", () => {
        if (!armed) {
          // Ask once more instead of a modal dialog: the second click within 3 s deletes.
          del.textContent = "Delete?";
          del.classList.add("armed");
          armed = setTimeout(() => {
            armed = null;
            del.textContent = "Delete";
            del.classList.remove("armed");
          }, 3000);
          return;
        }
        clearTimeout(armed);
        this.actions.remove(item.msg);
      });
      bar.append(del);
    }
    return bar;
  }

  startEdit(item) {
    if (item.editing) return;
    const box = el("div", "editor");
    const area = el("textarea");
    area.value = item.msg.text;
    area.rows = Math.min(8, item.msg.text.split("\n").length + 1);
    area.setAttribute("aria-label", "Edit message");
    const hint = el("div", "hint muted", "Enter to save · Shift+Enter for a new line · Esc to cancel");
    box.append(area, hint);
    item.editing = box;
    const stop = () => {
      item.editing = null;
      this.paint(item);
      this.actions.editEnded?.();
    };
    area.addEventListener("keydown", async (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        stop();
      } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        const text = area.value.trim();
        if (!text || text === item.msg.text) {
          stop();
          return;
        }
        hint.textContent = "saving…";
        try {
          const updated = await this.actions.edit(item.msg, text);
          item.editing = null;
          this.upsert(updated);
          this.paint(item);
          this.actions.editEnded?.();
        } catch (err) {
          hint.textContent = `not saved: ${errorText(err)}`;
          hint.classList.add("error");
        }
      }
    });
    this.paint(item);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }
}

function applyPatch(msg, kind, patch) {
  if (kind === "edit") {
    return { ...msg, text: patch.text, mentions: patch.mentions, edited_at: patch.edited_at, version: patch.version };
  }
  if (kind === "reaction") return { ...msg, reactions: patch.reactions, version: patch.version };
  return msg;
}
