// The v2 HTTP API as the dashboard uses it: bearer token in a header, problem+json errors.
export const BASE = "/api/agents/v2";

/** An HTTP error with the server's problem document (RFC 9457), when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(BASE + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }

  agents() {
    return this.get("/agents");
  }

  runs(threadId, cursor) {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    return this.get(`/thread/${encodeURIComponent(threadId)}/runs?${query}`);
  }

  allRuns(cursor) {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    return this.get(`/runs?${query}`);
  }

  run(runId) {
    return this.get(`/${encodeURIComponent(runId)}/state`);
  }

  events(runId, after) {
    return this.get(`/${encodeURIComponent(runId)}/events?after=${after}&limit=1000`);
  }

  submit(threadId, agent, input) {
    return this.post(`/thread/${encodeURIComponent(threadId)}/runs`, { agent, input });
  }

  cancel(runId) {
    return this.post(`/${encodeURIComponent(runId)}/cancel`, {});
  }
}
