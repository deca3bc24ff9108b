// Threadline inbox: plain JavaScript against the same /v1 API the CLI uses.
// The API key is entered once and kept in sessionStorage (this tab only). Every piece of
// thread data is inserted with textContent, never as HTML.
"use strict";

const KEY = "threadline.key";
const state = { selected: null, stream: null, events: [], refreshing: false, kinds: null };

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
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { detail: text }; }
  if (!resp.ok) {
    if (resp.status === 401) showKeyForm("That key was refused: enter a valid API key.");
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
const badge = (status) => el("span", { class: `badge ${status}` }, status.replace("_", " "));

// -- inbox ------------------------------------------------------------------------------

async function refresh() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    const threads = (await api("GET", "/v1/inbox?limit=50")).items;
    renderInbox(threads);
    if (!state.selected && threads.length) openThread(threads[0].id);
    const recent = await api("GET", "/v1/threads?limit=25");
    renderRecent(recent.items);
    notice("");
    if (!sessionStorage.getItem(KEY)) {
      // The server answered without a key: it runs with --no-auth on loopback.
      document.getElementById("key-form").hidden = true;
      document.getElementById("key-set").hidden = false;
      document.getElementById("key-label").textContent = "no key needed (local server)";
      document.getElementById("key-forget").hidden = true;
    }
  } catch (err) {
    if (err.status !== 401) notice(`Could not load the inbox: ${err.message}`, true);
  } finally {
    state.refreshing = false;
  }
}

function renderInbox(threads) {
  const box = document.getElementById("inbox");
  const cards = [];
  for (const t of threads) {
    for (const call of t.pending_approvals) cards.push(approvalCard(t, call));
    if (t.pending_approvals.length > 1) cards.push(batchCard(t));
    if (t.question) cards.push(questionCard(t));
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

// One request for every pending call of a thread: approve some, reject some.
function batchCard(t) {
  const rows = t.pending_approvals.map((call) => {
    const pick = el("select", { "aria-label": `Verdict on ${call.call_id}`, "data-call": call.call_id },
      el("option", { value: "approve" }, "approve"),
      el("option", { value: "reject" }, "reject"));
    return el("li", {}, pick, " ", el("code", {}, call.tool), ` [${call.call_id}]`);
  });
  const comment = el("textarea", {
    placeholder: "Why the rejections? The agent reads this.", "aria-label": "Batch comment",
  });
  const send = el("button", { class: "primary", type: "button" }, "Send all verdicts");
  const card = el("article", { class: "card batch", "data-thread": t.id },
    el("h3", {}, `Answer all ${rows.length} calls at once`),
    cardMeta(t), el("ul", {}, ...rows), comment, el("div", { class: "actions" }, send));
  send.addEventListener("click", () => {
    const note = comment.value.trim() || null;
    const verdicts = [...card.querySelectorAll("select")].map((pick) => (
      pick.value === "approve" ? { call_id: pick.dataset.call, approved: true }
        : { call_id: pick.dataset.call, approved: false, comment: note }));
    act(card, `/v1/threads/${t.id}/approvals`, { verdicts }, t.id);
  });
  return card;
}

function approvalCard(t, call) {
  const comment = el("textarea", {
    placeholder: "Why not? The agent reads this.", hidden: true, "aria-label": "Rejection comment",
  });
  const approve = el("button", { class: "primary", type: "button" }, "Approve");
  const reject = el("button", { class: "danger", type: "button" }, "Reject…");
  const card = el("article", { class: "card approval", "data-thread": t.id, "data-call": call.call_id },
    el("h3", {}, "Approve ", el("code", {}, call.tool), "?"),
    cardMeta(t),
    el("pre", { class: "args" }, pretty(call.arguments)),
    call.approvers.length
      ? el("div", { class: "approvers" }, `Only ${call.approvers.join(", ")} may answer.`) : null,
    comment,
    el("div", { class: "actions" }, approve, reject));
  approve.addEventListener("click", () =>
    act(card, `/v1/threads/${t.id}/approvals/${encodeURIComponent(call.call_id)}`,
      { approved: true }, t.id));
  reject.addEventListener("click", () => {
    if (comment.hidden) {
      comment.hidden = false;
      reject.textContent = "Reject with comment";
      reject.classList.add("confirm");
      comment.focus();
      return;
    }
    act(card, `/v1/threads/${t.id}/approvals/${encodeURIComponent(call.call_id)}`,
      { approved: false, comment: comment.value.trim() || null }, t.id);
  });
  return card;
}

function questionCard(t) {
  const answer = el("textarea", { placeholder: "Your answer", "aria-label": "Answer" });
  const send = el("button", { class: "primary", type: "button" }, "Send answer");
  const card = el("article", { class: "card question", "data-thread": t.id },
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
  list.replaceChildren(...items.map((t) => el("li", {
    class: t.id === state.selected ? "selected" : null, "data-open": t.id,
  }, badge(t.status), el("span", {}, t.agent), el("span", { class: "id" }, t.id))));
}

// -- thread timeline --------------------------------------------------------------------

// What each event says comes from the server too: every event arrives with its `summary`
// (a line, and a block shown as is), so no kind of event is named here.
function describe(e) {
  const s = e.summary || { text: "", detail: pretty(e) };
  return [s.text, s.detail != null ? el("pre", {}, s.detail) : null];
}

// Labels, origins and error flags come from the server (each event class declares them),
// fetched once: a new kind of event shows with its own label without a change here.
async function eventKinds() {
  if (!state.kinds) {
    const { items } = await api("GET", "/v1/event-kinds");
    state.kinds = new Map(items.map((k) => [k.kind, k]));
  }
  return state.kinds;
}

function eventRow(e) {
  const k = state.kinds.get(e.kind) || { label: e.kind, origin: "runtime", error: false };
  return el("li", { class: `k-${e.kind} o-${k.origin}${k.error ? " error" : ""}`, "data-seq": e.seq },
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
  if (state.stream) state.stream.abort();
  try {
    const [thread, page] = await Promise.all([
      api("GET", `/v1/threads/${id}`), api("GET", `/v1/threads/${id}/events?limit=1000`),
      eventKinds()]);
    state.events = page.events;
    renderThread(thread);
    follow(id, page.next_after);
  } catch (err) {
    document.getElementById("thread").replaceChildren(
      el("p", { class: "empty" }, `Cannot show ${id}: ${err.message}`));
  }
}

function renderThread(t) {
  const u = t.usage;
  const header = el("header", {},
    el("h2", {}, t.agent), el("span", { id: "thread-status" }, badge(t.status)),
    el("code", {}, t.id),
    el("span", { class: "usage" },
      `${u.model_calls} model calls · ${u.input_tokens} in / ${u.output_tokens} out tokens` +
      (u.cost_usd ? ` · $${u.cost_usd.toFixed(4)}` : "")));
  const list = el("ol", { class: "timeline", id: "timeline" }, ...state.events.map(eventRow));
  document.getElementById("thread").replaceChildren(header, list);
}

// Live updates: the SSE endpoint read with fetch (EventSource cannot send the key).
async function follow(id, after) {
  const controller = new AbortController();
  state.stream = controller;
  try {
    const resp = await fetch(`/v1/threads/${id}/events/stream?after=${after}`, {
      headers: { Accept: "text/event-stream", ...authHeaders() }, signal: controller.signal,
    });
    if (!resp.ok || !resp.body) return;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(id, JSON.parse(data));
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") setTimeout(() => state.selected === id && openThread(id), 2000);
  }
}

let statusTimer = null;
function onEvent(id, e) {
  if (state.selected !== id || state.events.some((x) => x.seq === e.seq)) return;
  state.events.push(e);
  document.getElementById("timeline")?.append(eventRow(e));
  clearTimeout(statusTimer);
  statusTimer = setTimeout(async () => {
    try {
      const t = await api("GET", `/v1/threads/${id}`);
      if (state.selected === id) renderThread(t);
      refresh();
    } catch { /* the next event retries */ }
  }, 150);
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

showKeySet();
refresh();
setInterval(refresh, 3000);
const initial = location.hash.match(/thread=([\w-]+)/);
if (initial) openThread(initial[1]);
