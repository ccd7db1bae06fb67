// /ui/projects/{p}/graphs/{id}: a graph drawn as the run view draws it, its version and the
// runs of each version, `validate` results on the drawing, and a form that starts a run.

import { ApiError, AuthRequired, Pager, get, post, projectApi } from "../api.js";
import { append, fill, formatTime, h, jsonBlock, shortId } from "../dom.js";
import { GraphCanvas } from "../graph-canvas.js";
import { badge } from "../status.js";

const STORED_ONLY = ["project_id", "version", "created_at", "updated_at"];
const RECENT_RUNS = 20;

export async function mount(root, { project, graphId }, app) {
  const view = new GraphView(root, project, graphId, app);
  await view.start();
  return null;
}

/** JSON text as a value, or the reason it is not JSON (checked before anything is sent). */
function parseJson(text) {
  try {
    return { value: JSON.parse(text) };
  } catch (error) {
    return { error: `not valid JSON: ${error.message}` };
  }
}

class GraphView {
  constructor(root, project, graphId, app) {
    this.root = root;
    this.project = project;
    this.graphId = graphId;
    this.app = app;
    this.selected = null;
  }

  async start() {
    this.graph = await get(projectApi(this.project, `/graphs/${encodeURIComponent(this.graphId)}`));
    const runs = await new Pager(projectApi(this.project, `/runs?workflow_id=${encodeURIComponent(this.graphId)}`), RECENT_RUNS).more();
    this.drawn = this.graph;
    this.canvas = new GraphCanvas({ label: `Graph ${this.graph.name}`, onSelect: (id) => this.selectNode(id) });
    this.panel = h("aside", { class: "node-panel", "aria-label": "Node", "aria-live": "polite" });
    this.problems = h("div", { class: "problems", "aria-live": "polite" });
    this.layout(runs);
    this.canvas.setGraph(this.graph);
    this.drawPanel();
    requestAnimationFrame(() => this.canvas.fit());
  }

  layout(runs) {
    const g = this.graph;
    append(this.root, [
      h(
        "div",
        { class: "title-row" },
        h("h1", {}, g.name || g.id),
        h("span", { class: "muted mono" }, g.id),
        h("span", { class: "version", dataset: { version: g.version } }, `version ${g.version}`),
      ),
      g.description ? h("p", {}, g.description) : null,
      h(
        "p",
        { class: "muted" },
        `${g.nodes.length} nodes, ${g.edges.length} edges · created ${formatTime(g.created_at)} · version ${g.version} saved ${formatTime(g.updated_at)}`,
      ),
      h("div", { class: "run-grid" }, this.canvas.element, this.panel),
      h(
        "div",
        { class: "run-lower" },
        h("section", { "aria-label": "Start a run" }, this.startForm()),
        h("section", { "aria-label": "Versions" }, this.versions(runs)),
      ),
      h("section", { "aria-label": "Validate" }, this.checkForm(), this.problems),
    ]);
  }

  versions(runs) {
    const base = `/ui/projects/${encodeURIComponent(this.project)}`;
    const byVersion = new Map();
    for (const run of runs) byVersion.set(run.graph_version, [...(byVersion.get(run.graph_version) ?? []), run]);
    const current = this.graph.version;
    const lines = [...new Set([current, ...byVersion.keys()])].sort((a, b) => b - a);
    return [
      h("h2", {}, "Versions"),
      h(
        "p",
        { class: "muted" },
        "Each save makes a new version; a run executes the version it was started with. The API serves the current version's drawing.",
      ),
      h(
        "ul",
        { class: "versions" },
        lines.map((version) =>
          h(
            "li",
            {},
            h("strong", {}, `v${version}`),
            version === current ? " (current)" : "",
            " — ",
            (byVersion.get(version) ?? []).length
              ? (byVersion.get(version) ?? []).map((run) => [
                  h("a", { href: `${base}/runs/${encodeURIComponent(run.id)}`, class: "mono", title: run.id }, shortId(run.id)),
                  " ",
                  badge(run.status),
                  " ",
                ])
              : h("span", { class: "muted" }, "no recent runs"),
          ),
        ),
      ),
      h("p", {}, h("a", { href: `${base}/runs?graph=${encodeURIComponent(this.graph.id)}` }, "All runs of this graph")),
    ];
  }

  startForm() {
    const field = h("textarea", { id: "run-input", name: "input", rows: 5, spellcheck: "false", class: "mono" }, "{}");
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const submit = async (event) => {
      event.preventDefault();
      error.hidden = true;
      const parsed = parseJson(field.value.trim() || "{}");
      const problem =
        parsed.error ??
        (parsed.value === null || typeof parsed.value !== "object" || Array.isArray(parsed.value)
          ? "the input must be a JSON object, such as {} or {\"amount\": 250}"
          : null);
      if (problem) {
        error.textContent = `Input is ${problem.startsWith("not") ? "" : "wrong: "}${problem}`;
        error.hidden = false;
        field.setAttribute("aria-invalid", "true");
        return;
      }
      field.removeAttribute("aria-invalid");
      try {
        const run = await post(projectApi(this.project, "/runs"), { workflow_id: this.graph.id, input: parsed.value });
        this.app.navigate(`/ui/projects/${encodeURIComponent(this.project)}/runs/${encodeURIComponent(run.id)}`);
      } catch (failure) {
        if (failure instanceof AuthRequired) throw failure;
        error.textContent = failure.detail ?? failure.message;
        error.hidden = false;
      }
    };
    return [
      h("h2", {}, "Start a run"),
      h(
        "form",
        { on: { submit } },
        h("label", { for: "run-input" }, "Input (a JSON object)"),
        field,
        error,
        h("button", { type: "submit" }, "Start run"),
      ),
    ];
  }

  spec() {
    const spec = { ...this.graph };
    for (const key of STORED_ONLY) delete spec[key];
    return spec;
  }

  checkForm() {
    const field = h(
      "textarea",
      { id: "graph-json", name: "graph", rows: 14, spellcheck: "false", class: "mono" },
      JSON.stringify(this.spec(), null, 2),
    );
    const submit = async (event) => {
      event.preventDefault();
      const parsed = parseJson(field.value);
      if (parsed.error) {
        this.showProblems(null, [{ path: "", message: `The graph is ${parsed.error}` }]);
        return;
      }
      try {
        await post(projectApi(this.project, "/graphs/validate"), parsed.value);
        this.showProblems(parsed.value, []);
      } catch (failure) {
        if (!(failure instanceof ApiError) || failure instanceof AuthRequired || failure.status !== 422) throw failure;
        this.showProblems(parsed.value, failure.body?.problems ?? [{ path: "", message: failure.detail }], failure.detail);
      }
    };
    return [
      h("h2", {}, "Validate"),
      h("p", { class: "muted" }, "Edit the graph's JSON and validate it: each problem is marked on the drawing above. Nothing is saved."),
      h(
        "form",
        { on: { submit } },
        h("label", { for: "graph-json" }, "Graph JSON"),
        field,
        h("button", { type: "submit" }, "Validate"),
      ),
    ];
  }

  /** Draws what was validated, marks what each problem points at, and lists them. */
  showProblems(graph, problems, detail = null) {
    if (graph && typeof graph === "object" && Array.isArray(graph.nodes)) {
      this.drawn = graph;
      this.canvas.setGraph({ nodes: graph.nodes, edges: Array.isArray(graph.edges) ? graph.edges : [] });
    }
    const located = this.canvas.setProblems(problems);
    this.root.dataset.validation = problems.length ? "invalid" : "valid";
    if (!problems.length) {
      fill(this.problems, h("p", { class: "ok", role: "status" }, "✓ The graph is valid."));
      return;
    }
    fill(this.problems, 
      h("p", { class: "error", role: "alert" }, `✕ ${detail ?? "The graph is not valid"}: ${problems.length} problem${problems.length === 1 ? "" : "s"}.`),
      h(
        "ul",
        { class: "problem-list" },
        located.map(({ problem, target }) =>
          h(
            "li",
            {},
            h("code", {}, problem.path || "(the graph)"),
            " ",
            problem.message,
            target
              ? [" ", h("button", { type: "button", class: "quiet", on: { click: () => this.canvas.reveal(target.kind, target.id) } }, `Show ${target.kind} ${target.id}`)]
              : null,
          ),
        ),
      ),
    );
  }

  selectNode(id) {
    this.selected = id;
    this.drawPanel();
  }

  drawPanel() {
    const node = (this.drawn.nodes ?? []).find((n) => n.id === this.selected);
    if (!node) {
      fill(this.panel, h("p", { class: "muted" }, "Select a node to see its type and config."));
      return;
    }
    const edges = this.drawn.edges ?? [];
    const into = edges.filter((e) => e.target === node.id);
    const out = edges.filter((e) => e.source === node.id);
    const edgeList = (list, end) =>
      list.length
        ? h("ul", {}, list.map((e) => h("li", {}, h("code", {}, e[end]), e.condition ? [" when ", h("code", {}, e.condition)] : "")))
        : h("p", { class: "muted" }, "none");
    fill(this.panel, 
      h("h2", {}, node.label || node.id),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Node"),
        h("dd", {}, h("code", {}, node.id)),
        h("dt", {}, "Type"),
        h("dd", {}, h("a", { href: "/ui/node-types" }, node.type ?? "passthrough")),
        h("dt", {}, "Position"),
        h("dd", {}, `x ${node.x ?? 0}, y ${node.y ?? 0}`),
        node.timeout_s ? [h("dt", {}, "Timeout"), h("dd", {}, `${node.timeout_s} s`)] : null,
      ),
      h("h3", {}, "From"),
      edgeList(into, "source"),
      h("h3", {}, "To"),
      edgeList(out, "target"),
      h("h3", {}, "Config"),
      jsonBlock(node.config ?? {}),
      node.retry ? [h("h3", {}, "Retry"), jsonBlock(node.retry)] : null,
    );
  }
}
