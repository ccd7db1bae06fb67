// /ui/projects/{p}/graphs: the project's graphs.

import { Pager, projectApi } from "../api.js";
import { append, formatTime, h } from "../dom.js";

const PAGE = 100;

export async function mount(root, { project }, app) {
  const pager = new Pager(projectApi(project, "/graphs"), PAGE);
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const base = `/ui/projects/${encodeURIComponent(project)}`;
  const page = async () => {
    more.disabled = true;
    try {
      for (const graph of await pager.more()) {
        const href = `${base}/graphs/${encodeURIComponent(graph.id)}`;
        body.append(
          h(
            "tr",
            { dataset: { graphId: graph.id } },
            h("td", {}, h("a", { href }, graph.name || graph.id)),
            h("td", { class: "mono" }, graph.id),
            h("td", {}, `v${graph.version}`),
            h("td", {}, String(graph.nodes.length)),
            h("td", {}, String(graph.edges.length)),
            h("td", { title: graph.updated_at }, formatTime(graph.updated_at)),
            h("td", {}, h("a", { href: `${base}/runs?graph=${encodeURIComponent(graph.id)}` }, "runs")),
          ),
        );
      }
    } finally {
      more.disabled = false;
      more.hidden = pager.done;
    }
  };
  more.addEventListener("click", () => page().catch((error) => app.fail(error)));
  await page();
  append(root, [
    h("div", { class: "title-row" }, h("h1", {}, "Graphs"), h("span", { class: "muted" }, `project ${project}`)),
    body.children.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "graphs" },
            h("caption", { class: "visually-hidden" }, `Graphs of project ${project}`),
            h(
              "thead",
              {},
              h("tr", {}, ["Name", "Id", "Version", "Nodes", "Edges", "Updated", ""].map((name) => h("th", { scope: "col" }, name))),
            ),
            body,
          ),
        )
      : h("p", {}, "No graphs in this project yet. Create one with ", h("code", {}, "cortexd graph apply FILE"), " or the API."),
    more,
  ]);
  return null;
}
