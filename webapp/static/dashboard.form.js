// The new-run form: the agent picker and a JSON input editor checked, as you type, against
// the agent's input schema; problems (ours or the server's 422) are listed under the editor.
import { ApiError } from "./dashboard.api.js";
import { describe, example, parseJson, validate } from "./dashboard.schema.js";

const $ = (id) => document.getElementById(id);

function listItem(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

export class RunForm {
  constructor() {
    this.agents = [];
    this.timer = null;
  }

  listen() {
    $("agent").addEventListener("change", () => this.showAgent());
    $("input-reset").addEventListener("click", () => this.showAgent());
    $("input").addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.check(), 150);
    });
  }

  /** The agents of `GET /v2/agents`; `demo` is chosen first when there is one. */
  setAgents(agents) {
    this.agents = agents;
    const select = $("agent");
    const chosen = select.value;
    select.replaceChildren(...agents.map((agent) => {
      const option = document.createElement("option");
      option.value = agent.name;
      option.textContent = agent.name;
      return option;
    }));
    if (!agents.length) return;
    const names = agents.map((a) => a.name);
    select.value = names.includes(chosen) ? chosen : (names.includes("demo") ? "demo" : names[0]);
    this.showAgent();
  }

  agent() {
    return this.agents.find((a) => a.name === $("agent").value);
  }

  /** Describe the chosen agent and start its input from the schema's defaults. */
  showAgent() {
    const agent = this.agent();
    const schema = agent ? agent.input_schema : {};
    $("agent-description").textContent = agent ? agent.description : "No agents are available.";
    const lines = describe(schema);
    const help = $("input-help");
    help.replaceChildren();
    if (lines.length) {
      const list = document.createElement("ul");
      list.append(...lines.map(listItem));
      help.append(list);
    }
    $("schema").textContent = JSON.stringify(schema, null, 2);
    $("input").value = JSON.stringify(example(schema), null, 2);
    this.check();
  }

  showErrors(errors) {
    $("input-errors").replaceChildren(
      ...errors.map(({ path, message }) => listItem(path ? `${path}: ${message}` : message)));
    $("input").setAttribute("aria-invalid", errors.length ? "true" : "false");
  }

  /** Parse and check the editor's JSON; {ok, value}, with any problems shown inline. */
  check() {
    const parsed = parseJson($("input").value);
    if (parsed.error) {
      this.showErrors([{ path: "", message: parsed.error }]);
      return { ok: false };
    }
    const agent = this.agent();
    const errors = agent ? validate(agent.input_schema, parsed.value) : [];
    this.showErrors(errors.map((e) => ({
      path: `input${e.path === "/" ? "" : e.path}`, message: e.message,
    })));
    return { ok: errors.length === 0, value: parsed.value };
  }

  hideRefusal() {
    $("submit-error").hidden = true;
  }

  /** A refused submission: input problems under the editor (focused), the rest below. */
  showRefusal(exc) {
    const problems = exc instanceof ApiError && Array.isArray(exc.problem.errors)
      ? exc.problem.errors : [];
    const onInput = problems.filter((p) => String(p.path).startsWith("/input"));
    const other = problems.filter((p) => !String(p.path).startsWith("/input"));
    if (onInput.length) {
      this.showErrors(onInput.map((p) => ({ path: String(p.path).slice(1), message: p.message })));
      $("input").focus();
    }
    if (!onInput.length || other.length) {
      const error = $("submit-error");
      error.textContent = [exc.message, ...other.map((p) => `${p.path}: ${p.message}`)].join(" — ");
      error.hidden = false;
    }
  }
}
