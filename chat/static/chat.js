// chat.js: the chat page. Session, room list (lobby stream), the open room (room stream).
//
// No gap between history and live: the first history page comes with the room's latest event
// id (read in the same database snapshot) and the stream connects from exactly there. A reset
// (the server cannot resume from our id) reloads the room from scratch.

import { connect } from "./sse.js";
import { ApiError, api, errorText } from "./api.js";
import { newClientId, persist, retryNow, retryable } from "./retry.js";
import { el } from "./dom.js";
import { say } from "./notice.js";
import { MessageList } from "./messages.js";
import { avatar } from "./render.js";
import { signInHint } from "./hint.js";

const $ = (id) => document.getElementById(id);
const MAX_TEXT = 4000;
const MAX_FILE = 10 * 1024 * 1024;
const TYPING_SEND_EVERY = 2500; // ms between our "typing" signals
const TYPING_SHOW_FOR = 4000; // ms a "typing" signal stays on screen

let me = null;
let lobby = null;
const rooms = new Map(); // name -> { name, unread, mentioned, createdBy }
let view = null; // the open room: { name, stream, hasMore, loading, members, typing }
let viewToken = 0;
let list = null;

const scroller = $("scroller");
const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
const toBottom = () => {
  scroller.scrollTop = scroller.scrollHeight;
};
const enc = encodeURIComponent;

// -- session -------------------------------------------------------------------------------------

const joined = signInHint("chat.joined");

async function boot() {
  if (!joined.maybe()) {
    showJoin(""); // never joined from this browser: nothing to ask the server
    return;
  }
  try {
    me = await api("GET", "/chat/session");
    joined.set(true);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) joined.set(false);
    if (err instanceof ApiError && (err.status === 401 || err.status === 409)) {
      showJoin(err.status === 409 ? err.detail : "");
      return;
    }
    showJoin(`${errorText(err)}; try again`); // "cannot reach the server (…)", or what it said
    return;
  }
  start();
}

// The join card is modal: what is behind it is inert (no Tab into a chat you have not joined).
function joinShown(shown) {
  $("join").hidden = !shown;
  document.querySelector("main.chat").inert = shown; // the header (theme, all demos) stays usable
}

function showJoin(error, name = "") {
  joinShown(true);
  if (!me) {
    $("state").dataset.state = "closed";
    $("state").textContent = "not joined";
  }
  $("join-name").value = name;
  say($("join-error"), error);
  $("join-name").focus();
}

$("join-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const renaming = me !== null;
  try {
    me = await api("POST", "/chat/session", { name: $("join-name").value });
    joined.set(true);
  } catch (err) {
    say($("join-error"), errorText(err));
    return;
  }
  if (renaming) {
    location.reload(); // simplest way to show the new name everywhere
    return;
  }
  joinShown(false);
  start();
  $("text").focus();
});

$("join-cancel").addEventListener("click", () => {
  if (me) joinShown(false);
});
$("rename").addEventListener("click", () => showJoin("", me ? me.name : ""));
$("signout").addEventListener("click", async () => {
  await api("DELETE", "/chat/session").catch(() => {});
  joined.set(false);
  location.hash = "";
  location.reload();
});

function start() {
  $("me-name").textContent = me.name;
  $("me").hidden = false;
  $("join-cancel").hidden = false;
  list = new MessageList({
    list: $("messages"),
    outbox: $("outbox"),
    me,
    actions: {
      react,
      edit,
      remove,
      retry: (id) => resend(id),
      mediaLoaded: () => view && view.stick && toBottom(),
      editEnded: () => $("text").focus(),
    },
  });
  loadRooms().then(() => {
    openRoom(currentRoomFromHash());
    lobby = connect("/chat/events", {
      lastEventId: lobbyLastId,
      on: { room: onRoomCreated, activity: onActivity, room_deleted: onRoomDeleted },
      onOpen: () => loadRooms(), // unread counts may have moved while we were away
      onReset: (info) => (info && info.reason === "epoch" ? location.reload() : loadRooms()),
    });
  });
}

// -- rooms ---------------------------------------------------------------------------------------

let lobbyLastId = null;

// A 401/409 means the session is gone or its name was taken meanwhile: start over from boot(),
// which shows the join dialog. Anything else is shown, not thrown.
function fatal(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 409)) location.reload();
  else composerError(errorText(err));
}

async function loadRooms() {
  let data;
  try {
    data = await persist(() => api("GET", "/chat/rooms"));
  } catch (err) {
    fatal(err);
    return;
  }
  lobbyLastId = data.latest_event_id;
  const listed = new Set(data.rooms.map((r) => r.name));
  for (const name of [...rooms.keys()]) if (!listed.has(name)) rooms.delete(name); // deleted meanwhile
  for (const r of data.rooms) {
    const known = rooms.get(r.name);
    rooms.set(r.name, {
      name: r.name,
      unread: r.unread,
      mentioned: known ? known.mentioned : false,
      createdBy: r.created_by_id || "",
    });
  }
  if (view) {
    const open = rooms.get(view.name);
    if (open) open.unread = 0;
  }
  renderRooms();
}

function currentRoomFromHash() {
  const name = decodeURIComponent(location.hash.slice(1));
  if (rooms.has(name)) return name;
  return rooms.has("general") ? "general" : [...rooms.keys()][0];
}

function renderRooms() {
  const ul = $("rooms");
  ul.replaceChildren();
  showDeleteControl();
  for (const r of [...rooms.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const li = el("li", view && view.name === r.name ? "room current" : "room");
    const a = el("a");
    a.href = `#${enc(r.name)}`;
    a.dataset.room = r.name;
    a.append(el("span", "hash", "#"), el("span", "room-name", r.name));
    if (r.mentioned) a.append(el("span", "mention-dot", "@"));
    if (r.unread > 0) a.append(el("span", "unread", r.unread > 99 ? "99+" : String(r.unread)));
    li.append(a);
    ul.append(li);
  }
}

function onRoomCreated(room) {
  if (!rooms.has(room.name)) {
    rooms.set(room.name, { name: room.name, unread: 0, mentioned: false, createdBy: room.created_by_id || "" });
  }
  renderRooms();
}

// A room was deleted (by its creator, or because it stayed empty and unused): off the list, and
// if it is the open one, over to another room.
function onRoomDeleted(gone) {
  if (!rooms.delete(gone.name)) return;
  renderRooms();
  if (view && view.name === gone.name) {
    const next = rooms.has("general") ? "general" : [...rooms.keys()][0];
    if (next === undefined) return;
    composerError(`#${gone.name} was deleted`);
    location.hash = `#${enc(next)}`;
  }
}

function showDeleteControl() {
  const r = view && rooms.get(view.name);
  $("delete-room").hidden = !(r && me && r.createdBy === me.id);
}

$("delete-room").addEventListener("click", async () => {
  if (!view) return;
  const name = view.name;
  try {
    await api("DELETE", `/chat/rooms/${enc(name)}`);
  } catch (err) {
    composerError(errorText(err));
    return;
  }
  onRoomDeleted({ name });
});

function onActivity(a) {
  const r = rooms.get(a.room);
  if (!r || (view && view.name === a.room) || a.author_id === me.id) return;
  r.unread += 1;
  if ((a.mentions || []).some((m) => m.toLowerCase() === me.name.toLowerCase())) r.mentioned = true;
  renderRooms();
}

$("new-room").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("new-room-name");
  const name = input.value.trim().toLowerCase().replace(/\s+/g, "-");
  if (!name) return;
  try {
    const room = await api("POST", "/chat/rooms", { name });
    onRoomCreated(room);
    input.value = "";
    say($("room-error"), "");
    location.hash = `#${enc(room.name)}`;
  } catch (err) {
    say($("room-error"), errorText(err));
  }
});

window.addEventListener("hashchange", () => {
  if (!me) return;
  const name = currentRoomFromHash();
  if (!view || view.name !== name) openRoom(name);
});

// -- the open room -------------------------------------------------------------------------------

async function openRoom(name) {
  // No room to open (the list came back empty): never ask the server for room "undefined".
  if (name === undefined || name === null) return;
  if (view && !view.loading && !document.hidden && atBottom()) sendRead(); // what we saw here counts
  const token = ++viewToken;
  if (view && view.stream) view.stream.close();
  view = { name, stream: null, hasMore: false, loading: true, members: new Map(), typing: new Map(), stick: true };
  list.clear();
  $("room-title").textContent = name;
  $("text").placeholder = `Message #${name}`;
  $("history-state").textContent = "loading…";
  renderPeople();
  renderTyping();
  const r = rooms.get(name);
  if (r) {
    r.unread = 0;
    r.mentioned = false;
  }
  renderRooms();
  let page;
  try {
    page = await persist(() => api("GET", `/chat/rooms/${enc(name)}/messages`));
  } catch (err) {
    fatal(err);
    return;
  }
  if (token !== viewToken) return; // the user moved on meanwhile
  for (const msg of page.messages) list.upsert(msg);
  list.markUnreadAfter(page.last_read);
  view.hasMore = page.has_more;
  view.loading = false;
  showHistoryState();
  if (list.divider) list.divider.scrollIntoView({ block: "center" });
  else toBottom();
  loadMoreIfTopVisible();
  view.stream = connect(`/chat/rooms/${enc(name)}/events`, {
    lastEventId: page.latest_event_id,
    on: {
      message: (m) => onMessage(m),
      edit: (p) => list.patch("edit", p),
      delete: (p) => list.patch("delete", p),
      reaction: (p) => list.patch("reaction", p),
      presence: (p) => {
        view.members = new Map(p.members.map((m) => [m.id, m.name]));
        renderPeople();
      },
      join: (p) => {
        view.members.set(p.id, p.name);
        renderPeople();
      },
      leave: (p) => {
        view.members.delete(p.id);
        renderPeople();
      },
      typing: (p) => onTyping(p),
      deleted: () => onRoomDeleted({ name }),
    },
    onState: (state) => {
      $("state").dataset.state = state;
      $("state").textContent = state;
      if (state === "open") retryNow(); // the server is back: pending sends need not wait
    },
    onReset: (info) => {
      // Redis lost the chat (issue 13.3): rooms, ids and history all began again; start over.
      if (info && info.reason === "epoch") return location.reload();
      // The server cannot resume from our id (another database, or too far behind): reload.
      const pane = $("conversation");
      pane.dataset.resets = String(Number(pane.dataset.resets || 0) + 1);
      openRoom(name);
    },
  });
  reportRead();
}

function showHistoryState() {
  const text = view.hasMore ? "" : list.size ? "This is the start of the room." : "No messages yet. Say hello!";
  $("history-state").textContent = text;
}

function onMessage(msg) {
  const wasAtBottom = atBottom();
  const fresh = list.upsert(msg);
  if (!fresh) return;
  view.typing.delete(msg.author_id);
  renderTyping();
  const mine = msg.author_id === me.id;
  if (!mine && (document.hidden || !wasAtBottom)) list.markBefore(msg.id);
  if (!mine && document.hidden) {
    unseen += 1;
    document.title = `(${unseen}) Chat`;
  }
  showHistoryState();
  if (mine || wasAtBottom) toBottom();
  else $("jump").hidden = false;
  reportRead();
}

// Infinite scroll: scrolling near the top fetches the page before the oldest message.
async function loadOlder() {
  if (!view || view.loading || !view.hasMore) return;
  const token = viewToken;
  view.loading = true;
  $("history-state").textContent = "loading older messages…";
  try {
    const url = `/chat/rooms/${enc(view.name)}/messages?before=${list.oldest}`;
    const page = await persist(() => api("GET", url));
    if (token !== viewToken) return;
    const before = scroller.scrollHeight;
    for (const msg of page.messages.slice().reverse()) list.upsert(msg);
    scroller.scrollTop += scroller.scrollHeight - before; // keep what the reader was looking at
    view.hasMore = page.has_more;
  } catch (err) {
    fatal(err);
  } finally {
    if (token === viewToken) {
      view.loading = false;
      showHistoryState();
      loadMoreIfTopVisible();
    }
  }
}

// Near the top (or a page too short to scroll at all): fetch the next older page.
function loadMoreIfTopVisible() {
  if (scroller.scrollTop < 300) loadOlder();
}

scroller.addEventListener("scroll", () => {
  if (!view) return;
  loadMoreIfTopVisible();
  view.stick = atBottom();
  if (view.stick) {
    $("jump").hidden = true;
    reportRead();
  }
});
$("jump").addEventListener("click", () => {
  toBottom();
  $("jump").hidden = true;
});
let unseen = 0; // messages that came while the tab was hidden, shown in its title
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    unseen = 0;
    document.title = "Chat";
  }
  reportRead();
});

// When the browser knows the network is gone, say so and stop the streams at once instead of
// waiting for TCP to notice; when it is back, resume both from their last ids (nothing lost).
window.addEventListener("offline", () => {
  if (view && view.stream) view.stream.close();
  if (lobby) lobby.close();
  $("state").dataset.state = "retrying";
  $("state").textContent = "offline";
});
window.addEventListener("online", () => {
  if (view && view.stream) view.stream.reconnect();
  if (lobby) lobby.reconnect();
});

// Tell the server how far we have read (debounced), for unread counts on our other devices.
let readTimer = null;
const reported = new Map(); // room -> the newest message id we told the server we have seen

function reportRead() {
  if (readTimer || document.hidden || !view || !atBottom()) return;
  const token = viewToken;
  readTimer = setTimeout(() => {
    readTimer = null;
    if (token === viewToken) sendRead();
  }, 800);
}

function sendRead() {
  if (!view || list.newest === null || list.newest <= (reported.get(view.name) || 0)) return;
  const room = view.name;
  const id = list.newest;
  reported.set(room, id);
  api("POST", `/chat/rooms/${enc(room)}/read`, { id }).catch(() => reported.delete(room)); // best effort
}

// -- presence and typing -------------------------------------------------------------------------

function renderPeople() {
  const ul = $("online");
  ul.replaceChildren();
  const people = view ? [...view.members].sort((a, b) => a[1].localeCompare(b[1])) : [];
  for (const [id, name] of people) {
    const li = el("li", id === me.id ? "person me" : "person");
    li.append(avatar(name, id), el("span", "person-name", name));
    if (id === me.id) li.append(el("span", "muted", "(you)"));
    ul.append(li);
  }
  $("online-count").textContent = String(people.length);
}

function onTyping(p) {
  if (p.id === me.id) return;
  const old = view.typing.get(p.id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => {
    view.typing.delete(p.id);
    renderTyping();
  }, TYPING_SHOW_FOR);
  view.typing.set(p.id, { name: p.name, timer });
  renderTyping();
}

function renderTyping() {
  const names = view ? [...view.typing.values()].map((t) => t.name) : [];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "Several people are typing…";
  $("typing").textContent = text;
}

// -- sending -------------------------------------------------------------------------------------

const outgoing = new Map(); // client_msg_id -> () => Promise (the send, to run again on "Retry")

// Sends go out one at a time, in the order they were written. The server numbers messages in
// the order it stores them, and requests in flight together (several connections, several
// server instances) can be stored in any order; one at a time, yours appear as you wrote them.
let sending = Promise.resolve();
function enqueue(run) {
  sending = sending.then(run, run);
}

function composerError(text) {
  say($("composer-error"), text);
}

function sendText(text) {
  const clientId = newClientId();
  const room = view.name;
  list.addPending(clientId, text);
  list.clearMarker();
  toBottom();
  const run = () => deliver(clientId, room, () => api("POST", `/chat/rooms/${enc(room)}/messages`, { text, client_msg_id: clientId }));
  outgoing.set(clientId, run);
  enqueue(run);
}

function sendFile(file) {
  if (file.size > MAX_FILE) {
    composerError(`"${file.name}" is too large: files can be at most 10 MiB.`);
    return;
  }
  const clientId = newClientId();
  const room = view.name;
  list.addPending(clientId, "", file.name);
  toBottom();
  const url = `/chat/rooms/${enc(room)}/files?name=${enc(file.name)}&client_msg_id=${clientId}`;
  const run = () =>
    deliver(clientId, room, () =>
      api("POST", url, file, { raw: true, headers: { "Content-Type": "application/octet-stream" } }),
    );
  outgoing.set(clientId, run);
  enqueue(run);
}

// Keep trying (same client_msg_id, so never twice) until the server has it or refuses it.
async function deliver(clientId, room, attempt) {
  try {
    const msg = await persist(attempt, {
      onRetry: (err) => {
        const status = err instanceof ApiError ? err.status : 0;
        const why = status === 429 ? "slowing down" : status >= 500 ? "server unavailable" : "offline";
        list.setPendingStatus(clientId, `${why}, retrying…`);
      },
    });
    outgoing.delete(clientId);
    if (view && view.name === room) {
      list.upsert(msg);
      showHistoryState();
      reportRead();
    }
  } catch (err) {
    list.failPending(clientId, errorText(err));
  }
}

function resend(clientId) {
  const run = outgoing.get(clientId);
  if (run) enqueue(run);
}

async function react(msg, emoji) {
  try {
    list.upsert(await api("POST", `/chat/rooms/${enc(msg.room)}/messages/${msg.id}/reactions`, { emoji }));
  } catch (err) {
    composerError(`reaction not saved: ${errorText(err)}`);
  }
}

function edit(msg, text) {
  return api("PATCH", `/chat/rooms/${enc(msg.room)}/messages/${msg.id}`, { text });
}

async function remove(msg) {
  try {
    await api("DELETE", `/chat/rooms/${enc(msg.room)}/messages/${msg.id}`);
    list.drop(msg.id);
  } catch (err) {
    composerError(`not deleted: ${errorText(err)}`);
  }
}

// -- the composer --------------------------------------------------------------------------------

const textarea = $("text");
let lastTypingSent = 0;

function grow() {
  textarea.style.height = "auto";
  textarea.style.height = `${Math.min(textarea.scrollHeight, 200)}px`;
}

function submit() {
  const text = textarea.value.trim();
  if (!text || !view) return;
  if (text.length > MAX_TEXT) {
    composerError(`Messages can be at most ${MAX_TEXT} characters (this one has ${text.length}).`);
    return;
  }
  composerError("");
  textarea.value = "";
  grow();
  sendText(text);
}

textarea.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submit();
  } else if (e.key === "ArrowUp" && !textarea.value && list && list.editLast()) {
    e.preventDefault(); // Up in an empty composer edits my last message
  }
});
textarea.addEventListener("input", () => {
  grow();
  const now = Date.now();
  if (view && textarea.value.trim() && now - lastTypingSent > TYPING_SEND_EVERY) {
    lastTypingSent = now;
    api("POST", `/chat/rooms/${enc(view.name)}/typing`).catch((err) => {
      if (!retryable(err)) console.debug("typing signal refused", err.detail);
    });
  }
});
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  submit();
});
$("attach").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => {
  for (const file of $("file").files) sendFile(file);
  $("file").value = "";
});
const pane = $("conversation");
pane.addEventListener("dragover", (e) => {
  if (!e.dataTransfer.types.includes("Files")) return;
  e.preventDefault();
  pane.classList.add("dropping");
});
pane.addEventListener("dragleave", () => pane.classList.remove("dropping"));
pane.addEventListener("drop", (e) => {
  pane.classList.remove("dropping");
  if (!e.dataTransfer.files.length || !view) return;
  e.preventDefault();
  for (const file of e.dataTransfer.files) sendFile(file);
});
textarea.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (!files.length || !view) return;
  e.preventDefault();
  for (const file of files) sendFile(file);
});

boot();
