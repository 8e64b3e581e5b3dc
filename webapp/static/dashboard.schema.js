// A small JSON Schema checker for the input editor: the keywords agents' input schemas use
// (type, enum, const, properties, required, additionalProperties, items, bounds, lengths,
// pattern, anyOf/oneOf). The server validates again; this only makes mistakes visible early.

const pointer = (path, key) => `${path}/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`;

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function typeMatches(expected, value) {
  const actual = typeOf(value);
  return expected === actual || (expected === "number" && actual === "integer");
}

/** Every problem of `value` against `schema` as {path, message}; [] when it is valid. */
export function validate(schema, value, path = "") {
  if (schema === true || schema === undefined || schema === null) return [];
  if (schema === false) return [{ path: path || "/", message: "no value is allowed here" }];
  const errors = [];
  const at = path || "/";
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => typeMatches(t, value))) {
      return [{ path: at, message: `must be ${types.join(" or ")}, not ${typeOf(value)}` }];
    }
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    errors.push({ path: at, message: `must be ${JSON.stringify(schema.const)}` });
  }
  if (Array.isArray(schema.enum) &&
      !schema.enum.some((option) => JSON.stringify(option) === JSON.stringify(value))) {
    errors.push({ path: at, message: `must be one of ${schema.enum.map((o) => JSON.stringify(o)).join(", ")}` });
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push({ path: at, message: `must be at least ${schema.minimum}` });
    if (schema.maximum !== undefined && value > schema.maximum) errors.push({ path: at, message: `must be at most ${schema.maximum}` });
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) errors.push({ path: at, message: `must be more than ${schema.exclusiveMinimum}` });
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) errors.push({ path: at, message: `must be less than ${schema.exclusiveMaximum}` });
  }
  if (typeof value === "string") {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) errors.push({ path: at, message: `must have at least ${schema.minLength} characters` });
    if (schema.maxLength !== undefined && length > schema.maxLength) errors.push({ path: at, message: `must have at most ${schema.maxLength} characters` });
    if (schema.pattern !== undefined) {
      try {
        if (!new RegExp(schema.pattern, "u").test(value)) errors.push({ path: at, message: `must match ${schema.pattern}` });
      } catch {
        // a pattern this browser cannot compile is left to the server
      }
    }
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) errors.push({ path: at, message: `must have at least ${schema.minItems} items` });
    if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push({ path: at, message: `must have at most ${schema.maxItems} items` });
    if (schema.items !== undefined) value.forEach((item, i) => errors.push(...validate(schema.items, item, pointer(path, i))));
  }
  if (typeOf(value) === "object") {
    const properties = schema.properties || {};
    for (const name of schema.required || []) {
      if (!(name in value)) errors.push({ path: pointer(path, name), message: "is required" });
    }
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) {
        errors.push(...validate(properties[name], item, pointer(path, name)));
      } else if (schema.additionalProperties === false) {
        errors.push({ path: pointer(path, name), message: "is not an allowed property" });
      } else if (typeof schema.additionalProperties === "object") {
        errors.push(...validate(schema.additionalProperties, item, pointer(path, name)));
      }
    }
  }
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(schema[key])) {
      const passing = schema[key].filter((option) => validate(option, value, path).length === 0).length;
      if (passing === 0 || (key === "oneOf" && passing > 1)) {
        errors.push({ path: at, message: key === "oneOf" && passing > 1 ? "matches more than one allowed shape" : "matches none of the allowed shapes" });
      }
    }
  }
  return errors;
}

/** Whether a property is an off switch: absent means the same, so a form leaves it out. */
const offSwitch = (property) => property && property.type === "boolean" && property.default === false;

/** A valid starting value: the schema's defaults, or the simplest value of its type. Optional
 * switches that are off by default are left out: a starting input shows what matters. */
export function example(schema) {
  if (!schema || typeof schema !== "object") return null;
  if (schema.default !== undefined) return schema.default;
  if (schema.const !== undefined) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case "object": {
      const value = {};
      const required = new Set(schema.required || []);
      for (const [name, property] of Object.entries(schema.properties || {})) {
        const wanted = required.has(name) || (property && property.default !== undefined && !offSwitch(property));
        if (wanted) value[name] = example(property);
      }
      return value;
    }
    case "array": return [];
    case "string": return "";
    case "integer":
    case "number": return schema.minimum ?? 0;
    case "boolean": return false;
    default: return null;
  }
}

/** One line per property for the field help: "steps: integer, 1 to 20, default 3". */
export function describe(schema) {
  if (!schema || typeOf(schema.properties) !== "object") {
    return schema && schema.description ? [schema.description] : [];
  }
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties).map(([name, p]) => {
    const parts = [p.type ? [].concat(p.type).join(" or ") : "any"];
    if (p.minimum !== undefined && p.maximum !== undefined) parts.push(`${p.minimum} to ${p.maximum}`);
    else if (p.minimum !== undefined) parts.push(`at least ${p.minimum}`);
    else if (p.maximum !== undefined) parts.push(`at most ${p.maximum}`);
    if (p.maxLength !== undefined) parts.push(`up to ${p.maxLength} characters`);
    if (p.default !== undefined) parts.push(`default ${JSON.stringify(p.default)}`);
    if (required.has(name)) parts.push("required");
    const text = `${name}: ${parts.join(", ")}`;
    return p.description ? `${text} (${p.description})` : text;
  });
}

/** JSON.parse with a readable message that names the line and column of the mistake. */
export function parseJson(text) {
  try {
    return { value: JSON.parse(text), error: null };
  } catch (exc) {
    const match = /position (\d+)/.exec(exc.message);
    let where = "";
    if (match && !/line \d+/.test(exc.message)) {
      const before = text.slice(0, Number(match[1]));
      const line = before.split("\n").length;
      const column = before.length - before.lastIndexOf("\n");
      where = ` (line ${line}, column ${column})`;
    }
    return { value: undefined, error: `not valid JSON${where}: ${exc.message}` };
  }
}
