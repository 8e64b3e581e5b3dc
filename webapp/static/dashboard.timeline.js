// One run's event timeline: events are shown exactly once and in `seq` order, whichever way
// they arrive (HTTP replay from the log, live socket frames, a resume after a reconnect).
// Everything an agent or user wrote is put in the page with textContent, never as markup.

export const TERMINAL = {
  agent_completed: "completed",
  agent_failed: "failed",
  agent_cancelled: "cancelled",
  agent_timed_out: "timed_out",
};
export const ACTIVE = new Set(["queued", "running", "cancelling", "retrying"]);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(value) {
  return JSON.stringify(value, null, 2) ?? "null";
}

function block(label, value, className = "") {
  const wrap = el("div", `field ${className}`.trim());
  wrap.append(el("span", "field-label", label));
  wrap.append(el("pre", "", typeof value === "string" ? value : json(value)));
  return wrap;
}

function timeText(ts) {
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleTimeString();
}

/** The <li> for one event; its data-seq/data-type let people and tests find it. */
export function renderEvent(event) {
  const data = event.data && typeof event.data === "object" ? event.data : {};
  const item = el("li", `event ev-${String(event.type).replace(/[^a-z_]/g, "")}`);
  item.dataset.seq = String(event.seq);
  item.dataset.type = String(event.type);
  const head = el("div", "ev-head");
  const title = el("span", "ev-title");
  const body = el("div", "ev-body");
  switch (event.type) {
    case "agent_started":
      title.textContent = `Started ${data.agent ?? ""}`.trim();
      if (data.input !== undefined) body.append(block("Input", data.input));
      break;
    case "agent_thinking":
      title.textContent = "Thinking";
      body.append(el("p", "thought", String(data.text ?? "")));
      break;
    case "tool_executing":
      title.textContent = `Tool call: ${data.tool ?? "?"} (call ${data.call_id ?? "?"})`;
      body.append(block("Arguments", data.arguments ?? {}));
      break;
    case "tool_completed":
      title.textContent = `Tool result: ${data.tool ?? "?"} (call ${data.call_id ?? "?"})`;
      if (data.error !== undefined && data.error !== null) body.append(block("Error", data.error, "bad"));
      else body.append(block("Result", data.result ?? null));
      break;
    case "agent_completed":
      title.textContent = "Completed";
      body.append(block("Output", data.output ?? null));
      break;
    case "agent_failed":
      title.textContent = "Failed";
      body.append(block("Error", data.error ?? event.data, "bad"));
      break;
    case "agent_cancelled":
      title.textContent = "Cancelled";
      if (data.reason) body.append(el("p", "", String(data.reason)));
      break;
    case "agent_timed_out":
      title.textContent = "Timed out";
      body.append(block("Details", event.data ?? null, "bad"));
      break;
    default:
      title.textContent = String(event.type);
      body.append(block("Data", event.data ?? null));
  }
  const seq = el("span", "ev-seq", `#${event.seq}`);
  const time = el("time", "ev-time", timeText(event.ts));
  time.dateTime = String(event.ts);
  head.append(seq, title, time);
  item.append(head);
  if (body.childNodes.length) item.append(body);
  return item;
}

/** Orders one run's events: duplicates dropped, gaps filled from the log over HTTP. */
export class RunTimeline {
  constructor(runId, list, fetchAfter, onEvent) {
    this.runId = runId;
    this.list = list;
    this.fetchAfter = fetchAfter; // async (after) => EventPage
    this.onEvent = onEvent;
    this.last = 0;
    this.pending = new Map();
    this.filling = null;
    this.awaiting = false;
    this.again = false;
    this.closed = false;
  }

  accept(event) {
    if (this.closed || event.run_id !== this.runId || event.seq <= this.last) return;
    this.pending.set(event.seq, event);
    while (this.pending.has(this.last + 1)) {
      const next = this.pending.get(this.last + 1);
      this.pending.delete(this.last + 1);
      this.last += 1;
      this.list.append(renderEvent(next));
      this.onEvent(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.last) this.pending.delete(seq);
    if (this.pending.size) this.catchUp();
  }

  /** Read what the log holds after the last shown event (a gap, a reload, a reconnect). */
  catchUp() {
    if (this.filling) {
      if (this.awaiting) this.again = true; // the answer in flight may predate this request
      return this.filling;
    }
    this.filling = (async () => {
      try {
        for (;;) {
          this.again = false;
          const before = this.last;
          this.awaiting = true;
          let page;
          try {
            page = await this.fetchAfter(this.last);
          } finally {
            this.awaiting = false;
          }
          if (this.closed) return;
          for (const event of page.items) this.accept(event);
          const full = page.items.length >= 1000 && this.last > before;
          if (!full && !this.again) return;
        }
      } finally {
        this.filling = null;
      }
    })();
    return this.filling;
  }

  close() {
    this.closed = true;
  }
}
