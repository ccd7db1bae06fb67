// /ui/node-types: what graphs can be built from, each type with its config schema.

import { get } from "../api.js";
import { append, h, jsonBlock } from "../dom.js";

function typeOf(schema) {
  if (!schema || typeof schema !== "object") return "any";
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  if (schema.type === "array" && schema.items?.type) return `array of ${schema.items.type}`;
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  return schema.type ?? (schema.$ref ? schema.$ref : "any");
}

function limits(schema) {
  const words = [];
  const keys = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "maxItems", "pattern", "format"];
  for (const key of keys) if (schema?.[key] !== undefined) words.push(`${key} ${schema[key]}`);
  if (schema?.default !== undefined) words.push(`default ${JSON.stringify(schema.default)}`);
  return words.join(", ");
}

/** The schema's top-level properties as a table; the whole schema follows it as JSON. */
function properties(schema) {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const names = Object.keys(props);
  if (!names.length) return h("p", { class: "muted" }, "No config fields.");
  return h(
    "table",
    { class: "schema" },
    h("thead", {}, h("tr", {}, ["Field", "Type", "Required", "Limits", "Description"].map((n) => h("th", { scope: "col" }, n)))),
    h(
      "tbody",
      {},
      names.map((name) =>
        h(
          "tr",
          {},
          h("td", {}, h("code", {}, name)),
          h("td", {}, typeOf(props[name])),
          h("td", {}, required.has(name) ? "yes" : "no"),
          h("td", {}, limits(props[name])),
          h("td", {}, props[name]?.description ?? ""),
        ),
      ),
    ),
  );
}

export async function mount(root) {
  const types = await get("/api/node-types");
  append(root, [
    h("h1", {}, "Node types"),
    h("p", { class: "muted" }, `${types.length} types from the plugins loaded. A node's "config" must match its type's schema.`),
    h(
      "nav",
      { class: "toc", "aria-label": "Node types" },
      h("ul", {}, types.map((t) => h("li", {}, h("a", { href: `#type-${t.name}` }, t.name)))),
    ),
    types.map((t) =>
      h(
        "article",
        { class: "node-type", id: `type-${t.name}`, dataset: { nodeType: t.name } },
        h("h2", {}, h("code", {}, t.name), " ", h("span", { class: "muted" }, t.title)),
        h("p", {}, t.description),
        properties(t.config_schema),
        h("details", {}, h("summary", {}, "Config schema (JSON Schema)"), jsonBlock(t.config_schema)),
      ),
    ),
  ]);
  return null;
}
