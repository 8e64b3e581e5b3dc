// The v2 event socket for a browser: authenticate with the first frame (browsers cannot set
// headers on websockets), reconnect with capped, jittered backoff, and `resume` after the last
// per-user cursor on every reconnect so no event published meanwhile is lost.

const PATH = "/api/agents/v2/ws";
const UNAUTHENTICATED = 4401;
const TOO_MANY_CONNECTIONS = 4429;

export class EventSocket {
  /**
   * handlers: onEvent(event), onReady(readyFrame, {reconnected}), onState(state, detail),
   * onUnauthorized().
   */
  constructor(token, handlers) {
    this.token = token;
    this.handlers = handlers;
    this.cursor = null; // newest per-user cursor seen; null until the first `ready`
    this.attempts = 0;
    this.stopped = false;
    this.ws = null;
    this.timer = null;
    this.connections = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${PATH}`);
    this.ws = ws;
    this.handlers.onState(this.connections ? "reconnecting" : "connecting");
    ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "auth", token: this.token })));
    ws.addEventListener("message", (message) => this.receive(message.data));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (typeof frame.seq === "number" && typeof frame.run_id === "string") {
      if (typeof frame.cursor === "number") this.cursor = Math.max(this.cursor ?? 0, frame.cursor);
      this.handlers.onEvent(frame);
      return;
    }
    if (frame.type === "ready") {
      const reconnected = this.connections > 0;
      this.connections += 1;
      this.attempts = 0;
      if (reconnected && this.cursor !== null) {
        this.ws.send(JSON.stringify({ type: "resume", cursor: this.cursor }));
      } else if (typeof frame.cursor === "number") {
        this.cursor = Math.max(this.cursor ?? 0, frame.cursor);
      }
      this.handlers.onState("live");
      this.handlers.onReady(frame, { reconnected });
    } else if (frame.type === "resumed" && typeof frame.cursor === "number") {
      this.cursor = Math.max(this.cursor ?? 0, frame.cursor);
    }
  }

  closed(ws, event) {
    if (ws !== this.ws || this.stopped) return;
    if (event.code === UNAUTHENTICATED) {
      this.stopped = true;
      this.handlers.onUnauthorized();
      return;
    }
    const base = event.code === TOO_MANY_CONNECTIONS ? 60000 : Math.min(30000, 500 * 2 ** this.attempts);
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.attempts += 1;
    this.handlers.onState("waiting", delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
