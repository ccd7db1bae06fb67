// /ui/: the last project opened, or a form asking which one.

import { append, h } from "../dom.js";

export async function mount(root, _params, app) {
  const last = localStorage.getItem("cortexd.project");
  if (last) {
    app.navigate(`/ui/projects/${encodeURIComponent(last)}/runs`, { replace: true });
    return null;
  }
  const field = h("input", { id: "home-project", name: "project", required: true, autocomplete: "off" });
  append(root, [
    h("h1", {}, "cortexd"),
    h("p", {}, "Which project? Graphs and runs live in a project; its id is the ", h("code", {}, "{p}"), " of the API's paths."),
    h(
      "form",
      {
        class: "inline",
        on: {
          submit: (event) => {
            event.preventDefault();
            const value = field.value.trim();
            if (value) app.navigate(`/ui/projects/${encodeURIComponent(value)}/runs`);
          },
        },
      },
      h("label", { for: "home-project" }, "Project"),
      field,
      h("button", { type: "submit" }, "Open"),
    ),
    h("p", {}, h("a", { href: "/ui/node-types" }, "Node types"), " lists what graphs can be built from."),
  ]);
  field.focus();
  return null;
}
