// Threadline inbox: plain JavaScript against the same /v1 API the CLI uses.
// The API key is entered once and kept in sessionStorage (this tab only). Every piece of
// thread data is inserted with textContent, never as HTML.
"use strict";

const KEY = "threadline.key";
const state = {
  selected: null, stream: null, events: [], refreshing: false, kinds: null,
  // What the selected thread's header says of its live stream (see `follow`).
  live: { text: "", kind: "" },
  // The thread list: its filters, and the cursor of each page seen (index 0: the first).
  filters: { q: "", status: "", agent: "", channel: "" }, cursors: [null], page: 0, next: null,
  agents: null,
  // What is typed into a thread's message box, by thread: a status refresh re-renders the
  // thread (and a paused thread has no box), so the text lives here, not in the element.
  drafts: {},
  // The thread last rendered and how many events it had (see `refreshStatus`).
  shown: { id: null, next_seq: -1 },
};
const PAGE_SIZE = 20;
// Sent with every request: what people do here is recorded with channel `ui`.
const CHANNEL = { "X-Threadline-Channel": "ui" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function notice(text, isError = false) {
  const box = document.getElementById("notice");
  box.hidden = !text;
  box.textContent = text || "";
  box.classList.toggle("error", isError);
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", ...CHANNEL, ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { detail: text }; }
  if (!resp.ok) {
    if (resp.status === 401) {
      if (sessionStorage.getItem(KEY)) showKeyForm("That key was refused: enter a valid API key.");
      else welcome(true);
    }
    throw new ApiError(resp.status, data);
  }
  return data;
}

// -- key --------------------------------------------------------------------------------

function showKeyForm(message) {
  document.getElementById("key-form").hidden = false;
  document.getElementById("key-set").hidden = true;
  if (message) notice(message, true);
}

// First visit (no key yet, and the server wants one): a neutral welcome, not an error.
function welcome(show) {
  document.getElementById("welcome").hidden = !show;
  document.getElementById("main").hidden = show;
  if (show) {
    showKeyForm();
    notice("");
    document.getElementById("key-input").focus();
  }
}

function showKeySet() {
  const has = !!sessionStorage.getItem(KEY);
  document.getElementById("key-form").hidden = has;
  document.getElementById("key-set").hidden = !has;
  document.getElementById("key-label").textContent = "key set for this tab";
  document.getElementById("key-forget").hidden = false;
}

// -- time and formatting ----------------------------------------------------------------

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

const pretty = (value) => JSON.stringify(value, null, 2);
const statusLabel = (status) => status.replace("_", " ");
const badge = (status) => el("span", { class: `badge ${status}` }, statusLabel(status));

// -- inbox ------------------------------------------------------------------------------

const INBOX_FAILED = "Could not load the inbox";

async function refresh() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    const threads = (await api("GET", "/v1/inbox?limit=50")).items;
    // The server is back (after a restart, say): its last failure is no longer news.
    if (document.getElementById("notice").textContent.startsWith(INBOX_FAILED)) notice("");
    welcome(false);
    renderInbox(threads);
    if (!state.selected && threads.length) openThread(threads[0].id);
    await loadThreads();
    loadChoices();
    if (!sessionStorage.getItem(KEY)) {
      // The server answered without a key: it runs with --no-auth on loopback.
      document.getElementById("key-form").hidden = true;
      document.getElementById("key-set").hidden = false;
      document.getElementById("key-label").textContent = "no key needed (local server)";
      document.getElementById("key-forget").hidden = true;
    }
  } catch (err) {
    if (err.status !== 401) notice(`${INBOX_FAILED}: ${err.message}`, true);
  } finally {
    state.refreshing = false;
  }
}

// The choices, from this server's OpenAPI document, so no list is written here again: the
// agents it serves (the launch form and the agent filter) and a thread's statuses (the
// status filter).
async function loadChoices() {
  if (state.agents) return;
  let schemas = {};
  try {
    schemas = (await (await fetch("/openapi.json")).json()).components.schemas;
  } catch { /* only the "any" choices */ }
  state.agents = schemas.LaunchBody?.properties.agent.enum || [];
  const options = (first, values, label = (v) => v) => [el("option", { value: "" }, first),
    ...values.map((v) => el("option", { value: v }, label(v)))];
  document.getElementById("launch-agent").replaceChildren(
    ...options("choose an agent", state.agents));
  const filter = (name, first, values, label) => {
    const select = document.getElementById(`f-${name}`);
    select.replaceChildren(...options(first, values, label));
    select.value = state.filters[name];
  };
  filter("agent", "any agent", state.agents);
  filter("status", "any status", schemas.Status?.enum || [], statusLabel);
}

async function loadThreads() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(state.filters)) if (value) params.set(name, value);
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", `/v1/threads?${params}`);
  state.next = page.cursor;
  renderRecent(page.items);
  document.getElementById("page-newer").disabled = state.page === 0;
  document.getElementById("page-older").disabled = !page.cursor;
  document.getElementById("page-label").textContent = `page ${state.page + 1}`;
}

function turnPage(step) {
  if (step > 0) {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
  }
  state.page = Math.max(0, state.page + step);
  loadThreads().catch((err) => notice(`Could not list threads: ${err.message}`, true));
}

function setFilters() {
  state.filters = {
    q: document.getElementById("f-q").value.trim(),
    status: document.getElementById("f-status").value,
    agent: document.getElementById("f-agent").value,
    channel: document.getElementById("f-channel").value,
  };
  state.cursors = [null];
  state.page = 0;
  loadThreads().catch((err) => notice(`Could not list threads: ${err.message}`, true));
}

function renderInbox(threads) {
  const box = document.getElementById("inbox");
  // A card being read or edited is kept as it is: only new ones are built.
  const existing = new Map([...box.querySelectorAll("article.card")].map((c) => [c.dataset.key, c]));
  const cards = [];
  for (const t of threads) {
    for (const call of t.pending_approvals) {
      const key = `${t.id}/${call.call_id}`;
      cards.push(existing.get(key) || approvalCard(t, call, key));
    }
    if (t.question) {
      const key = `${t.id}?${t.question.request_id}`;
      cards.push(existing.get(key) || questionCard(t, key));
    }
    if (t.escalation) {
      const key = `${t.id}!${t.next_seq}`;
      cards.push(existing.get(key) || escalationCard(t, key));
    }
    if (t.pending_approvals.length > 1) {
      const key = `${t.id}/*${t.pending_approvals.map((c) => c.call_id).join(",")}`;
      cards.push(existing.get(key) || batchCard(t, key));
    }
  }
  document.getElementById("inbox-count").textContent = String(cards.length);
  box.replaceChildren(...(cards.length ? cards
    : [el("p", { class: "empty" }, "Nothing is waiting for a human.")]));
}

function cardMeta(t) {
  const chain = (t.ancestors || []).flatMap((a) => [
    el("a", { href: `#thread=${a.thread}`, "data-open": a.thread }, a.agent), " › "]);
  return el("div", { class: "meta" },
    chain.length ? el("span", { class: "ancestry" }, "sub-agent of ", ...chain) : null,
    `${t.agent} · `,
    el("a", { href: `#thread=${t.id}`, "data-open": t.id }, t.id), ` · ${ago(t.updated_at)}`);
}

// One request for every pending call of a thread: approve some, reject some, edit some.
// An edited call gets its editor when "edit arguments" is chosen (and loses it when not),
// so a card holds only the text boxes in use.
function batchCard(t, key) {
  const editors = new Map();
  const rows = t.pending_approvals.map((call) => {
    const pick = el("select", { "aria-label": `Verdict on ${call.call_id}`, "data-call": call.call_id },
      el("option", { value: "approve" }, "approve"),
      el("option", { value: "reject" }, "reject"),
      el("option", { value: "edit" }, "edit arguments"));
    const row = el("li", {}, pick, " ", el("code", {}, call.tool), ` [${call.call_id}]`);
    pick.addEventListener("change", () => {
      editors.get(call.call_id)?.remove();
      editors.delete(call.call_id);
      if (pick.value !== "edit") return;
      const editor = el("textarea", {
        class: "args-editor", spellcheck: "false", "data-call": call.call_id,
        "aria-label": `Edited arguments of ${call.call_id}`,
      });
      editor.value = pretty(call.arguments);
      row.append(editor);
      editors.set(call.call_id, editor);
      editor.focus();
    });
    return row;
  });
  const comment = el("textarea", {
    placeholder: "Why the rejections? The agent reads this.", "aria-label": "Batch comment",
  });
  const send = el("button", { class: "primary", type: "button" }, "Send all verdicts");
  const card = el("article", { class: "card batch", "data-thread": t.id, "data-key": key },
    el("h3", {}, `Answer all ${rows.length} calls at once`),
    cardMeta(t), el("ul", {}, ...rows), comment, el("div", { class: "actions" }, send));
  send.addEventListener("click", () => {
    const note = comment.value.trim() || null;
    const verdicts = [];
    for (const pick of card.querySelectorAll("select")) {
      const callId = pick.dataset.call;
      if (pick.value === "reject") {
        verdicts.push({ call_id: callId, approved: false, comment: note });
      } else if (pick.value === "edit") {
        const edited = editedArguments(editors.get(callId), callId);
        if (edited === null) return; // nothing is sent until every edit is a JSON object
        verdicts.push({ call_id: callId, approved: true, edited_arguments: edited });
      } else {
        verdicts.push({ call_id: callId, approved: true });
      }
    }
    act(card, `/v1/threads/${t.id}/approvals`, { verdicts }, t.id);
  });
  return card;
}

// The JSON object in an arguments editor, or null (with a notice) when it is not one.
function editedArguments(editor, callId) {
  let edited;
  try { edited = JSON.parse(editor.value); } catch (err) {
    notice(`The edited arguments of ${callId} are not valid JSON: ${err.message}`, true);
    editor.focus();
    return null;
  }
  if (!edited || typeof edited !== "object" || Array.isArray(edited)) {
    notice(`The edited arguments of ${callId} must be a JSON object.`, true);
    editor.focus();
    return null;
  }
  return edited;
}

function approvalCard(t, call, key) {
  const path = `/v1/threads/${t.id}/approvals/${encodeURIComponent(call.call_id)}`;
  const args = el("pre", { class: "args" }, pretty(call.arguments));
  // Made when editing starts, so a card holds one text box at a time.
  const editor = el("textarea", {
    class: "args-editor", spellcheck: "false", "aria-label": "Edited arguments",
  });
  const text = el("textarea", { hidden: true });
  const approve = el("button", { class: "primary", type: "button" }, "Approve");
  const edit = el("button", { type: "button" }, "Edit arguments…");
  const reject = el("button", { class: "danger", type: "button" }, "Reject…");
  const respond = el("button", { type: "button" }, "Respond instead…");
  const cancel = el("button", { type: "button", class: "link dark", hidden: true }, "cancel");
  const card = el("article", {
    class: "card approval", "data-thread": t.id, "data-call": call.call_id, "data-key": key,
  },
  el("h3", {}, "Approve ", el("code", {}, call.tool), "?"),
  cardMeta(t),
  call.request ? el("p", { class: "request" }, el("span", { class: "label" }, "Asked"),
    call.request) : null,
  call.reason ? el("p", { class: "reason" }, el("span", { class: "label" }, "Agent's reason"),
    call.reason) : null,
  call.guard ? el("p", { class: "guard" }, el("span", { class: "label" }, "Sent here by guard"),
    call.guard) : null,
  args,
  call.approvers.length
    ? el("div", { class: "approvers" }, `Only ${call.approvers.join(", ")} may answer.`) : null,
  text,
  el("div", { class: "actions" }, approve, edit, reject, respond, cancel));
  let mode = "approve";
  const setMode = (next) => {
    mode = next;
    if (next === "edit") args.after(editor);
    else editor.remove();
    args.hidden = next === "edit";
    text.hidden = !["reject", "respond"].includes(next);
    text.placeholder = next === "reject" ? "Why not? The agent reads this."
      : "Tell the agent what to do instead of this call.";
    text.setAttribute("aria-label", next === "reject" ? "Rejection comment" : "Your message");
    approve.textContent = next === "edit" ? "Approve with edits" : "Approve";
    reject.textContent = next === "reject" ? "Reject with comment" : "Reject…";
    reject.classList.toggle("confirm", next === "reject");
    respond.textContent = next === "respond" ? "Send to the agent" : "Respond instead…";
    approve.hidden = next === "reject" || next === "respond";
    edit.hidden = next !== "approve";
    reject.hidden = next === "edit" || next === "respond";
    respond.hidden = next === "edit" || next === "reject";
    cancel.hidden = next === "approve";
  };
  approve.addEventListener("click", () => {
    if (mode !== "edit") { act(card, path, { approved: true }, t.id); return; }
    const edited = editedArguments(editor, call.call_id);
    if (edited !== null) act(card, path, { approved: true, edited_arguments: edited }, t.id);
  });
  edit.addEventListener("click", () => {
    editor.value = pretty(call.arguments);
    setMode("edit");
    editor.focus();
  });
  reject.addEventListener("click", () => {
    if (mode !== "reject") { setMode("reject"); text.focus(); return; }
    act(card, path, { approved: false, comment: text.value.trim() || null }, t.id);
  });
  // "Respond instead": no verdict on the call as asked; it is not run, and the agent
  // reads the person's message (a `responded_instead` event) and decides again.
  respond.addEventListener("click", () => {
    if (mode !== "respond") { setMode("respond"); text.focus(); return; }
    const message = text.value.trim();
    if (!message) { text.focus(); return; }
    act(card, `${path}/instead`, { text: message }, t.id);
  });
  cancel.addEventListener("click", () => setMode("approve"));
  return card;
}

// An escalated thread: why, and for an exhausted budget its figures (used + reserved by
// other calls + the next call > limit, per kind).
function escalationCard(t, key) {
  const details = t.escalation.details || {};
  const limited = Object.entries(details.figures || {}).filter(([, f]) => f.limit !== null);
  const rows = limited.map(([kind, f]) =>
    el("tr", { class: (details.exceeded || []).includes(kind) ? "over" : "" },
      el("th", {}, kind), ...[f.used, f.reserved, f.next, f.limit].map((v) => el("td", {}, String(v)))));
  const figures = rows.length ? el("table", { class: "figures" },
    el("tr", {}, ...["", "used", "reserved", "next call", "limit"].map((h) => el("th", {}, h))),
    ...rows) : null;
  const title = details.source === "budget" ? `Budget exhausted (${details.scope || "thread"})`
    : "Escalated";
  const card = el("article", { class: "card escalation", "data-thread": t.id, "data-key": key },
    el("h3", {}, title), cardMeta(t), el("p", { class: "reason" }, t.escalation.reason), figures);
  if (details.source === "budget" && (details.scope || "thread") === "thread" && limited.length) {
    raiseForm(card, t, limited);
  }
  return card;
}

// A thread its own budget stopped: new limits (each `limited` kind, [kind, figures], at its
// current limit to start with), sent as POST /v1/threads/{id}/budget (admin keys); the
// thread runs on.
function raiseForm(card, t, limited) {
  const limits = Object.fromEntries(limited.map(([kind, f]) => [kind, f.limit]));
  const inputs = limited.map(([kind, f]) =>
    el("label", { class: "limit" }, `${kind} limit `, el("input", {
      type: "number", min: String(f.limit), step: kind === "usd" ? "any" : "1",
      value: String(f.limit), "data-kind": kind, "aria-label": `New ${kind} limit`,
    })));
  const raise = el("button", { class: "primary", type: "button" }, "Raise budget");
  card.append(el("div", { class: "raise" }, ...inputs), el("div", { class: "actions" }, raise));
  raise.addEventListener("click", () => {
    const body = {};
    for (const input of card.querySelectorAll("input[data-kind]")) {
      const kind = input.dataset.kind;
      const wanted = Number(input.value);
      if (input.value.trim() !== "" && wanted !== limits[kind]) body[`max_${kind}`] = wanted;
    }
    if (!Object.keys(body).length) {
      notice("Give at least one limit higher than it is.", true);
      return;
    }
    act(card, `/v1/threads/${t.id}/budget`, body, t.id);
  });
}

function questionCard(t, key) {
  const answer = el("textarea", { placeholder: "Your answer", "aria-label": "Answer" });
  const send = el("button", { class: "primary", type: "button" }, "Send answer");
  const card = el("article", { class: "card question", "data-thread": t.id, "data-key": key },
    el("h3", {}, "Question"),
    cardMeta(t),
    el("p", {}, t.question.question),
    answer,
    el("div", { class: "actions" }, send));
  send.addEventListener("click", () => {
    const text = answer.value.trim();
    if (!text) { answer.focus(); return; }
    act(card, `/v1/threads/${t.id}/responses`,
      { request_id: t.question.request_id, text }, t.id);
  });
  return card;
}

async function act(card, path, body, threadId) {
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  try {
    await api("POST", path, body);
    card.remove();
    openThread(threadId);
    await refresh();
  } catch (err) {
    notice(`${err.problem?.title || "Refused"}: ${err.message}`, true);
    for (const b of card.querySelectorAll("button")) b.disabled = false;
    if (err.status === 409) await refresh();
  }
}

function renderRecent(items) {
  const list = document.getElementById("recent");
  if (!items.length) {
    list.replaceChildren(el("li", { class: "empty" }, "No threads match."));
    return;
  }
  list.replaceChildren(...items.map((t) => el("li", {
    class: t.id === state.selected ? "selected" : null, "data-open": t.id,
  }, badge(t.status), el("span", { class: "agent" }, t.agent),
  el("span", { class: "channel" }, t.metadata.channel || ""),
  el("span", { class: "id" }, t.id),
  el("time", { class: "when", datetime: t.updated_at, title: new Date(t.updated_at).toLocaleString() },
    ago(t.updated_at)))));
}

// -- thread timeline --------------------------------------------------------------------

// What each event says comes from the server too: every event arrives with its `summary`
// (a line, and a block shown as is), so no kind of event is named here.
function describe(e) {
  const s = e.summary || { text: "", detail: pretty(e) };
  return [s.text, s.detail != null ? el("pre", {}, s.detail) : null];
}

// Labels, origins, roles and error flags come from the server (each event class declares
// them), fetched once: a new kind of event shows with its own label and style (the CSS
// styles origins and roles, never kinds) without a change here.
async function eventKinds() {
  if (!state.kinds) {
    const { items } = await api("GET", "/v1/event-kinds");
    state.kinds = new Map(items.map((k) => [k.kind, k]));
  }
  return state.kinds;
}

function eventRow(e) {
  const k = state.kinds.get(e.kind) || { label: e.kind, origin: "runtime", role: "step", error: false };
  return el("li", { class: `o-${k.origin} r-${k.role}${k.error ? " error" : ""}`, "data-seq": e.seq },
    el("span", { class: "seq" }, e.seq),
    el("span", { class: "kind" }, k.label, el("span", { class: "at" }, clock(e.at))),
    el("div", { class: "body" }, ...describe(e)));
}

async function openThread(id) {
  if (!id) return;
  if (location.hash !== `#thread=${id}`) history.replaceState(null, "", `#thread=${id}`);
  state.selected = id;
  for (const li of document.querySelectorAll("#recent li")) {
    li.classList.toggle("selected", li.dataset.open === id);
  }
  // The load opened last owns the view and its stream: one that a later load superseded
  // (another thread chosen, or this one reopened after an action) neither renders nor
  // follows when it ends, so an older answer never replaces a newer one, and no stream is
  // left open unwatched.
  if (state.stream) state.stream.abort();
  const load = new AbortController();
  state.stream = load;
  try {
    // Events first, then the thread: its status is then at least as new as the events
    // shown, and anything later arrives on the stream (which refreshes the status). Read
    // the other way round, a thread that stopped in between would show a stale status.
    const [page] = await Promise.all([
      api("GET", `/v1/threads/${id}/events?limit=1000`), eventKinds()]);
    const thread = await api("GET", `/v1/threads/${id}`);
    if (state.stream !== load) return;
    state.events = page.events;
    state.live = { text: "connecting…", kind: "reconnecting" };
    renderThread(thread);
    follow(id, page.next_after, load);
  } catch (err) {
    if (state.stream !== load) return;
    document.getElementById("thread").replaceChildren(
      el("p", { class: "empty" }, `Cannot show ${id}: ${err.message}`));
  }
}

function renderThread(t) {
  state.shown = { id: t.id, next_seq: t.next_seq };
  const u = t.usage;
  const header = el("header", {},
    el("h2", {}, t.agent), el("span", { id: "thread-status" }, badge(t.status)),
    el("code", {}, t.id), liveBadge(),
    el("span", { class: "usage" },
      `${u.model_calls} model calls · ${u.input_tokens} in / ${u.output_tokens} out tokens` +
      (u.cost_usd ? ` · $${u.cost_usd.toFixed(4)}` : "")));
  const list = el("ol", { class: "timeline", id: "timeline" }, ...state.events.map(eventRow));
  document.getElementById("thread").replaceChildren(header, threadActions(t), list);
}

const PAUSABLE = ["running", "waiting", "awaiting_approval", "awaiting_human"];
const RESUMABLE = ["paused", "escalated"];
const MESSAGEABLE = ["done", "escalated", "failed", "waiting", "awaiting_human"];

// Pause / resume, fork and a new message, from the page (recorded as channel `ui`).
function threadActions(t) {
  const bar = el("div", { class: "thread-actions" });
  const run = async (button, method, path, body, then) => {
    button.disabled = true;
    try {
      const out = await api(method, path, body);
      notice("");
      if (then) then(out);
      openThread(out.id);
      refresh();
    } catch (err) {
      notice(`${err.problem?.title || "Refused"}: ${err.message}`, true);
      button.disabled = false;
    }
  };
  if (PAUSABLE.includes(t.status)) {
    const pause = el("button", { type: "button", id: "thread-pause" }, "Pause");
    pause.addEventListener("click", () => run(pause, "POST", `/v1/threads/${t.id}/pause`, {}));
    bar.append(pause);
  }
  if (RESUMABLE.includes(t.status)) {
    const resume = el("button", { type: "button", id: "thread-resume", class: "primary" }, "Resume");
    resume.addEventListener("click", () => run(resume, "POST", `/v1/threads/${t.id}/resume`));
    bar.append(resume);
  }
  const at = el("input", {
    type: "number", min: "0", max: String(t.next_seq - 1), value: String(t.next_seq - 1),
    id: "fork-at", "aria-label": "Fork after event",
  });
  const fork = el("button", { type: "button", id: "thread-fork" }, "Fork");
  fork.addEventListener("click", () =>
    run(fork, "POST", `/v1/threads/${t.id}/fork`, { at: Number(at.value) }));
  bar.append(el("span", { class: "fork" }, fork, " after event ", at));
  if (MESSAGEABLE.includes(t.status)) {
    const text = el("textarea", { id: "thread-message", placeholder: "Message the agent",
      "aria-label": "Message" });
    text.value = state.drafts[t.id] || "";
    text.addEventListener("input", () => { state.drafts[t.id] = text.value; });
    const send = el("button", { type: "button", class: "primary", id: "thread-send" }, "Send");
    send.addEventListener("click", () => {
      if (!text.value.trim()) { text.focus(); return; }
      run(send, "POST", `/v1/threads/${t.id}/messages`, { text: text.value.trim() },
        () => { delete state.drafts[t.id]; });
    });
    bar.append(el("div", { class: "message" }, text, send));
  }
  return bar;
}

// Live updates: the SSE endpoint read with fetch (EventSource cannot send the key),
// until `controller` (the load that opened the thread) is aborted by the next one. A stream
// that ends (the server restarted or shut down, a proxy dropped an idle stream) or cannot
// be opened is opened again after 1, 2, 4 ... 30 s, from the last event shown, so what
// happened meanwhile arrives on the new stream; the header says so while it waits. Only
// a refusal (key, thread gone) or the server's report of a damaged thread stop it.
// The wait starts again from 1 s only after a stream proved healthy: it delivered an event
// or stayed open for HEALTHY_MS. Opening is no proof: a server (or proxy) that accepts
// each stream and closes it at once would otherwise be asked again every second forever.
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const HEALTHY_MS = 10000;

async function follow(id, after, controller) {
  const position = { after };
  let wait = RETRY_FIRST_MS;
  let reconnecting = false;
  while (!controller.signal.aborted) {
    const from = position.after;
    let opened = null; // when the stream opened, if it did
    try {
      const resp = await fetch(`/v1/threads/${id}/events/stream?after=${position.after}`, {
        headers: { Accept: "text/event-stream", ...authHeaders() }, signal: controller.signal,
      });
      if ([401, 403, 404].includes(resp.status)) {
        setLive(id, `not live (HTTP ${resp.status})`, "stopped");
        return;
      }
      if (resp.ok && resp.body) {
        setLive(id, "live", "following");
        if (reconnecting) refreshStatus(id); // the events come on the stream; the rest here
        reconnecting = false;
        opened = Date.now();
        const problem = await readStream(id, resp.body, position);
        if (problem) {
          setLive(id, "not live", "stopped");
          notice(`The thread's events cannot be read: ${problem.detail}`, true);
          return;
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
    }
    if (controller.signal.aborted) return;
    // A stream that ended in a network error counts too: it may have been healthy for hours.
    if (position.after > from || (opened !== null && Date.now() - opened >= HEALTHY_MS)) {
      wait = RETRY_FIRST_MS;
    }
    reconnecting = true;
    setLive(id, `reconnecting in ${wait / 1000} s…`, "reconnecting");
    await sleep(wait, controller.signal);
    setLive(id, "reconnecting…", "reconnecting");
    wait = Math.min(wait * 2, RETRY_MAX_MS);
  }
}

// Reads SSE messages until the stream ends, moving `position.after` past each event shown.
// Returns the server's `error` message (a damaged thread), or undefined at a clean end.
async function readStream(id, body, position) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return undefined;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, cut).split("\n");
      buffer = buffer.slice(cut + 2);
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim())
        .join("\n");
      if (!data) continue;
      if (lines.includes("event: error")) return JSON.parse(data);
      const e = JSON.parse(data);
      position.after = Math.max(position.after, e.seq);
      onEvent(id, e);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// The header's word on the stream (state.live survives the header's re-rendering).
function setLive(id, text, kind) {
  if (state.selected !== id) return;
  state.live = { text, kind };
  const node = document.getElementById("live");
  if (node) node.replaceWith(liveBadge());
}

const liveBadge = () => el("span", { id: "live", class: `live ${state.live.kind}` }, state.live.text);

// Reads of the thread can answer out of order (a loaded server, another connection): one
// older than the thread shown (fewer events) is not rendered, or a late answer read before a
// resume would show the thread paused again, with no event to come that would fix it.
async function refreshStatus(id) {
  try {
    const t = await api("GET", `/v1/threads/${id}`);
    const shown = state.shown.id === id ? state.shown.next_seq : -1;
    if (state.selected === id && t.next_seq >= shown) renderThread(t);
    refresh();
  } catch { /* the next event, or reconnection, retries */ }
}

let statusTimer = null;
function onEvent(id, e) {
  if (state.selected !== id || state.events.some((x) => x.seq === e.seq)) return;
  state.events.push(e);
  document.getElementById("timeline")?.append(eventRow(e));
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => refreshStatus(id), 150);
}

// -- start ------------------------------------------------------------------------------

document.addEventListener("click", (ev) => {
  const target = ev.target.closest("[data-open]");
  if (!target) return;
  ev.preventDefault();
  openThread(target.dataset.open);
});

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("key-input");
  const key = input.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  input.value = "";
  showKeySet();
  notice("");
  refresh();
  if (state.selected) openThread(state.selected);
});

document.getElementById("key-forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showKeySet();
});

window.addEventListener("hashchange", () => {
  const m = location.hash.match(/thread=([\w-]+)/);
  if (m && m[1] !== state.selected) openThread(m[1]);
});

document.getElementById("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setFilters();
});
for (const id of ["f-status", "f-agent", "f-channel"]) {
  document.getElementById(id).addEventListener("change", setFilters);
}
let typing = null;
document.getElementById("f-q").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(setFilters, 300);
});
document.getElementById("page-older").addEventListener("click", () => turnPage(1));
document.getElementById("page-newer").addEventListener("click", () => turnPage(-1));

document.getElementById("launch-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const agent = document.getElementById("launch-agent").value;
  const message = document.getElementById("launch-message");
  const button = ev.target.querySelector("button");
  if (!agent || !message.value.trim()) return;
  button.disabled = true;
  try {
    const t = await api("POST", "/v1/threads", { agent, message: message.value.trim() });
    message.value = "";
    document.getElementById("launch").open = false;
    notice("");
    openThread(t.id);
    refresh();
  } catch (err) {
    notice(`${err.problem?.title || "Refused"}: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
});

showKeySet();
refresh();
setInterval(refresh, 3000);
const initial = location.hash.match(/thread=([\w-]+)/);
if (initial) openThread(initial[1]);
