// The Runlane dashboard: sign in with a pasted token, submit runs, watch their events live.
// It uses only the public v2 routes and the v2 socket, like any other client would.
import { Api, ApiError } from "./dashboard.api.js";
import { RunForm } from "./dashboard.form.js";
import { EventSocket } from "./dashboard.socket.js";
import { ACTIVE, RunTimeline, TERMINAL } from "./dashboard.timeline.js";

const TOKEN_KEY = "runlane.token";
const THREAD_KEY = "runlane.thread";
const SCOPE_KEY = "runlane.all-threads";
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const FINISHED = new Set(Object.values(TERMINAL));
const $ = (id) => document.getElementById(id);
const form = new RunForm();

const state = {
  api: null,
  socket: null,
  thread: sessionStorage.getItem(THREAD_KEY) || "dashboard",
  // Every thread's runs unless the user picked one: runs made with curl or the CLI show too.
  allThreads: sessionStorage.getItem(SCOPE_KEY) !== "0",
  runs: new Map(), // run id -> {resource, item} for the runs list of the current thread
  runsCursor: null,
  open: null, // {id, resource, timeline, events} of the run shown, if any
  refreshTimer: null,
};

// -- small helpers ------------------------------------------------------------------------

function show(node, visible) {
  node.hidden = !visible;
}

function setText(node, text) {
  node.textContent = text;
}

function when(ts) {
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

/** How long a run took (from its start, or its creation while it never started). */
function duration(run) {
  if (!run.finished_at) return ACTIVE.has(run.status) ? "still running" : "";
  const ms = new Date(run.finished_at) - new Date(run.started_at || run.created_at);
  if (Number.isNaN(ms) || ms < 0) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** A run's output or error as text: strings as they are, anything else as indented JSON. */
function resultText(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function badge(node, status) {
  node.textContent = status;
  node.className = `badge badge-${String(status).replace(/[^a-z_]/g, "")}`;
}

/** True when the error ended the session (401), so callers stop what they were doing. */
function expired(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("Your token was rejected or has expired. Sign in again.");
    return true;
  }
  return false;
}

// -- signing in and out ---------------------------------------------------------------------

function showSignIn(message) {
  show($("app"), false);
  show($("session"), false);
  show($("signin"), true);
  const error = $("token-error");
  setText(error, message || "");
  show(error, Boolean(message));
  $("token").setAttribute("aria-invalid", message ? "true" : "false");
  if (message) $("signin-title").focus();
}

/** `typed`: the user just signed in with the form, so focus moves to what they now see. */
async function signIn(token, typed = false) {
  const api = new Api(token);
  let agents;
  try {
    agents = (await api.agents()).items;
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    const status = error instanceof ApiError ? error.status : 0;
    showSignIn(status === 401 ? "That token was not accepted (expired, or signed with another key)."
      : `Could not reach Runlane: ${error.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.api = api;
  $("token").value = "";
  show($("signin"), false);
  show($("session"), true);
  show($("app"), true);
  setText($("who"), "…");
  $("thread").value = state.thread;
  $("all-threads").checked = state.allThreads;
  form.setAgents(agents);
  state.socket = new EventSocket(token, {
    onEvent, onReady, onState: connection,
    onUnauthorized: () => signOut("Your token was rejected or has expired. Sign in again."),
  });
  state.socket.start();
  await loadRuns();
  await route(!typed);
}

function signOut(message) {
  if (state.socket) state.socket.stop();
  sessionStorage.removeItem(TOKEN_KEY);
  closeRun();
  Object.assign(state, { api: null, socket: null, runsCursor: null });
  state.runs.clear();
  $("runs").replaceChildren();
  $("timeline").replaceChildren();
  form.setAgents([]);
  showSignIn(message);
}

function connection(kind, delay) {
  const node = $("connection");
  node.dataset.state = kind;
  const texts = {
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    live: "Live",
    waiting: `Disconnected; retrying in ${Math.ceil((delay || 0) / 1000)} s`,
  };
  setText(node, texts[kind] || kind);
}

// -- the socket -----------------------------------------------------------------------------

function onReady(frame) {
  setText($("who"), frame.user_id);
  // Anything published before `ready` is in the log: read it so nothing falls in between.
  scheduleRunsRefresh(0);
  if (state.open && state.open.timeline) state.open.timeline.catchUp().catch(expired);
}

function statusAfter(status, event) {
  if (TERMINAL[event.type]) return TERMINAL[event.type];
  if (status === "cancelling") return status;
  return "running";
}

function onEvent(event) {
  const entry = state.runs.get(event.run_id);
  if (entry) {
    entry.resource.status = statusAfter(entry.resource.status, event);
    badge(entry.item.querySelector(".badge"), entry.resource.status);
  } else if (state.allThreads || event.thread_id === state.thread) {
    scheduleRunsRefresh(200); // a run submitted elsewhere (another tab, the API)
  }
  if (state.open && state.open.id === event.run_id && state.open.timeline) {
    state.open.timeline.accept(event);
  }
}

// -- the runs of a thread ---------------------------------------------------------------------

function scheduleRunsRefresh(delay) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => loadRuns().catch(() => {}), delay);
}

function runItem(resource) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = `#/runs/${resource.run_id}`;
  link.className = "run-link";
  link.dataset.runId = resource.run_id;
  const agent = document.createElement("span");
  agent.className = "run-agent";
  agent.textContent = resource.agent;
  const status = document.createElement("span");
  badge(status, resource.status);
  const created = document.createElement("time");
  created.className = "run-time";
  created.dateTime = resource.created_at;
  created.textContent = when(resource.created_at);
  const id = document.createElement("code");
  id.className = "run-id";
  id.textContent = resource.run_id.slice(0, 8);
  link.append(agent, status, created, id);
  if (state.allThreads) {
    const thread = document.createElement("span");
    thread.className = "run-thread";
    thread.textContent = `thread ${resource.thread_id}`;
    link.append(thread);
  }
  if (state.open && state.open.id === resource.run_id) link.setAttribute("aria-current", "page");
  item.append(link);
  return item;
}

function upsertRun(resource, { first = false } = {}) {
  const entry = state.runs.get(resource.run_id);
  const item = runItem(resource);
  if (entry) {
    entry.item.replaceWith(item);
  } else if (first) {
    $("runs").prepend(item);
  } else {
    $("runs").append(item);
  }
  state.runs.set(resource.run_id, { resource, item });
  setText($("runs-status"), "");
}

async function loadRuns(more = false) {
  if (!state.api) return;
  const thread = state.thread;
  const all = state.allThreads;
  let page;
  try {
    const cursor = more ? state.runsCursor : null;
    page = await (all ? state.api.allRuns(cursor) : state.api.runs(thread, cursor));
  } catch (error) {
    if (expired(error)) return;
    if (error instanceof ApiError && error.status === 404) {
      page = { items: [], next_cursor: null }; // the thread is created by its first run
    } else {
      setText($("runs-status"), `Could not load runs: ${error.message}`);
      return;
    }
  }
  if (thread !== state.thread || all !== state.allThreads || !state.api) return; // changed meanwhile
  if (!more) {
    state.runs.clear();
    $("runs").replaceChildren();
  }
  for (const resource of page.items) upsertRun(resource);
  state.runsCursor = page.next_cursor;
  show($("runs-more"), Boolean(page.next_cursor));
  setText($("runs-status"), state.runs.size ? ""
    : (all ? "No runs yet." : "No runs in this thread yet."));
}

function setAllThreads(all) {
  state.allThreads = all;
  $("all-threads").checked = all;
  sessionStorage.setItem(SCOPE_KEY, all ? "1" : "0");
}

function setThread(thread) {
  if (thread === state.thread) return;
  state.thread = thread;
  sessionStorage.setItem(THREAD_KEY, thread);
  $("thread").value = thread;
  loadRuns();
}

// -- the new-run form -------------------------------------------------------------------------

async function submitRun(event) {
  event.preventDefault();
  form.hideRefusal();
  const { ok, value } = form.check();
  const agent = form.agent();
  if (!ok || !agent) {
    $("input").focus();
    return;
  }
  const button = $("submit");
  button.disabled = true;
  try {
    const run = await state.api.submit(state.thread, agent.name, value);
    upsertRun(run, { first: true });
    location.hash = `#/runs/${run.run_id}`;
  } catch (exc) {
    if (!expired(exc)) form.showRefusal(exc);
  } finally {
    button.disabled = false;
  }
}

function submitThread(event) {
  event.preventDefault();
  const value = $("thread").value.trim();
  const error = $("thread-error");
  const valid = ID.test(value);
  $("thread").setAttribute("aria-invalid", valid ? "false" : "true");
  setText(error, valid ? "" : "Use 1 to 64 letters, digits, _ or -.");
  show(error, !valid);
  if (valid) {
    setAllThreads(false); // showing one thread is what the user asked for
    state.thread = null; // force a reload even for the same name
    setThread(value);
  }
}

// -- one run ------------------------------------------------------------------------------------

function closeRun() {
  if (state.open && state.open.timeline) state.open.timeline.close();
  state.open = null;
}

function renderRun() {
  const open = state.open;
  if (!open || !open.resource) return;
  const run = open.resource;
  badge($("run-status"), run.status);
  setText($("run-agent"), run.agent);
  setText($("run-thread"), run.thread_id);
  setText($("run-created"), when(run.created_at));
  setText($("run-duration"), duration(run));
  // The outcome first, above the timeline: a long run's output is not at the bottom of it.
  const failed = FINISHED.has(run.status) && run.status !== "completed" && run.error != null;
  const hasOutput = run.status === "completed" && run.output !== undefined;
  show($("run-result"), failed || hasOutput);
  $("run-result").classList.toggle("bad", failed);
  setText($("result-title"), failed ? "Error" : "Output");
  setText($("run-output"), failed ? String(run.error) : (hasOutput ? resultText(run.output) : ""));
  const active = ACTIVE.has(run.status);
  show($("run-progress"), active);
  const progress = $("run-progress-bar");
  if (active) progress.removeAttribute("value");
  const count = open.events;
  const texts = {
    queued: "Waiting for a worker…",
    retrying: "Waiting to retry…",
    cancelling: "Cancelling…",
  };
  setText($("run-progress-text"), texts[run.status] ||
    `Running: ${count} event${count === 1 ? "" : "s"} so far`);
  show($("cancel"), active && run.status !== "cancelling");
  for (const link of document.querySelectorAll(".run-link")) {
    if (link.dataset.runId === run.run_id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function onTimelineEvent(event) {
  const open = state.open;
  open.events += 1;
  const before = open.resource.status;
  open.resource.status = statusAfter(before, event);
  if (TERMINAL[event.type]) {
    const words = { completed: "Run completed.", failed: "Run failed.", cancelled: "Run cancelled.", timed_out: "Run timed out." };
    setText($("run-message"), words[open.resource.status] || "");
    refreshOpenRun(open);
  }
  renderRun();
}

/** Read the run again once it ended: its output, error and end time come with its state. */
async function refreshOpenRun(open) {
  try {
    const resource = await state.api.run(open.id);
    if (state.open !== open) return;
    open.resource = resource;
    renderRun();
  } catch (error) {
    expired(error);
  }
}

async function openRun(runId, focus) {
  closeRun();
  const open = { id: runId, resource: null, timeline: null, events: 0 };
  state.open = open;
  show($("new-panel"), false);
  show($("run-panel"), true);
  setText($("run-id"), runId);
  setText($("run-message"), "");
  $("timeline").replaceChildren();
  show($("run-missing"), false);
  show($("run-body"), false);
  if (focus) $("run-title").focus();
  let resource;
  try {
    resource = await state.api.run(runId);
  } catch (error) {
    if (expired(error) || state.open !== open) return;
    show($("run-missing"), true);
    if (!(error instanceof ApiError && error.status === 404)) setText($("run-missing"), error.message);
    return;
  }
  if (state.open !== open) return;
  open.resource = resource;
  setThread(resource.thread_id);
  show($("run-body"), true);
  open.timeline = new RunTimeline(runId, $("timeline"), (after) => state.api.events(runId, after),
    onTimelineEvent);
  renderRun();
  $("timeline").setAttribute("aria-busy", "true");
  try {
    await open.timeline.catchUp(); // the whole stored timeline first (complete after a reload)
  } catch (error) {
    if (!expired(error)) setText($("run-message"), `Could not load events: ${error.message}`);
  } finally {
    $("timeline").setAttribute("aria-busy", "false");
  }
}

async function cancelRun() {
  const open = state.open;
  if (!open || !open.resource) return;
  const button = $("cancel");
  button.disabled = true;
  try {
    const resource = await state.api.cancel(open.id);
    if (state.open !== open) return;
    // Events may already have moved the run on; never go back from a terminal status.
    if (!FINISHED.has(open.resource.status)) {
      open.resource.status = resource.status;
    }
    setText($("run-message"), resource.status === "cancelled" ? "Run cancelled." : "Cancellation requested…");
    renderRun();
  } catch (error) {
    if (expired(error)) return;
    setText($("run-message"), error instanceof ApiError && error.status === 409
      ? "The run had already finished." : `Could not cancel: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function showNew(focus) {
  closeRun();
  show($("run-panel"), false);
  show($("new-panel"), true);
  for (const link of document.querySelectorAll(".run-link")) link.removeAttribute("aria-current");
  if (focus) $("new-title").focus();
}

async function route(initial = false) {
  if (!state.api) return;
  const match = /^#\/runs\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (match) await openRun(match[1], !initial);
  else showNew(!initial);
}

// -- wiring -----------------------------------------------------------------------------------

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      showSignIn("Paste a token first.");
      $("token").focus();
      return;
    }
    signIn(token, true);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("thread-form").addEventListener("submit", submitThread);
  form.listen();
  $("submit-form").addEventListener("submit", submitRun);
  $("runs-more").addEventListener("click", () => loadRuns(true));
  $("all-threads").addEventListener("change", (event) => {
    setAllThreads(event.target.checked);
    loadRuns();
  });
  $("cancel").addEventListener("click", cancelRun);
  window.addEventListener("hashchange", () => route());
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showSignIn("");
}

start();
