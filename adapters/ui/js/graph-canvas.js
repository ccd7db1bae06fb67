// A graph drawn as one <svg> from its stored x/y, with pan and zoom. Used by the run view
// (node states), the graph view (validation problems) and, later, the editor: it knows
// nothing of the API, only of a graph's JSON and of node states given to it.
//
// The contract the tests rely on (DESIGN §9): each node is a <g data-node-id data-status>
// translated to its stored x/y; each edge a <g data-edge-id data-state> whose state is
// "taken", "skipped" (not taken), "pending" or "unknown".

import { h, s } from "./dom.js";
import { PanZoom } from "./pan-zoom.js";
import { glyph, percent } from "./status.js";

export const NODE_W = 180;
export const NODE_H = 56;
export const START = "__start__";
export const END = "__end__";
const TERMINAL_GAP = 56;
const LABEL_CHARS = 20;
const META_CHARS = 26;
let canvases = 0;

const clip = (text, chars) => (text.length > chars ? `${text.slice(0, chars - 1)}…` : text);

export class GraphCanvas {
  /**
   * @param options.label what the drawing shows, for assistive technology
   * @param options.onSelect called with a node id when a node is clicked or activated
   */
  constructor({ label, onSelect }) {
    this.id = ++canvases;
    this.onSelect = onSelect ?? (() => {});
    this.nodes = new Map(); // id -> {node, element, parts}
    this.edges = []; // {edge, element, path, index}
    this.states = new Map(); // node id -> node state
    this.finished = false;
    this.selected = null;

    this.viewport = s("g", { class: "viewport" });
    this.svg = s(
      "svg",
      {
        class: "graph",
        role: "group",
        tabindex: "0",
        "aria-label": `${label}. Drag to pan, the wheel or + and - to zoom, 0 to fit.`,
      },
      s("defs", {}, ["pending", "taken", "skipped", "problem"].map((state) => this.marker(state))),
      this.viewport,
    );
    this.edgeLayer = s("g", { class: "edges" });
    this.nodeLayer = s("g", { class: "nodes" });
    this.viewport.append(this.edgeLayer, this.nodeLayer);
    const tool = (text, title, action) =>
      h("button", { type: "button", title, on: { click: action } }, text);
    this.element = h(
      "div",
      { class: "canvas" },
      h(
        "div",
        { class: "canvas-tools", role: "toolbar", "aria-label": "Drawing" },
        tool("Zoom in", "Zoom in (+)", () => this.view.zoomBy(1.25)),
        tool("Zoom out", "Zoom out (-)", () => this.view.zoomBy(0.8)),
        tool("Fit", "Show the whole graph (0)", () => this.fit()),
      ),
      this.svg,
    );
    this.view = new PanZoom(this.svg, this.viewport, {
      bounds: () => this.bounds(),
      grabs: (target) => !target.closest?.(".node"),
    });
    this.svg.addEventListener("click", (event) => {
      const node = event.target.closest?.(".node");
      if (node) this.activate(node.dataset.nodeId);
    });
    this.svg.addEventListener("keydown", (event) => this.key(event));
  }

  marker(state) {
    return s(
      "marker",
      {
        id: this.markerId(state),
        class: `arrow ${state}`,
        viewBox: "0 0 10 10",
        refX: "9",
        refY: "5",
        markerWidth: "10",
        markerHeight: "10",
        markerUnits: "userSpaceOnUse",
        orient: "auto-start-reverse",
      },
      s("path", { d: "M0,0 L10,5 L0,10 z" }),
    );
  }

  markerId(state) {
    return `arrow-${this.id}-${state}`;
  }

  // -- drawing ---------------------------------------------------------------------------

  /** Draws `graph` ({nodes, edges}); node states given before are kept for nodes still there. */
  setGraph(graph) {
    this.graph = graph;
    this.nodes.clear();
    this.edges = [];
    this.incoming = new Map();
    for (const edge of graph.edges ?? []) {
      if (!this.incoming.has(edge.target)) this.incoming.set(edge.target, []);
      this.incoming.get(edge.target).push(edge);
    }
    const nodeElements = (graph.nodes ?? []).map((node, index) => this.drawNode(node, index));
    const edgeElements = (graph.edges ?? []).map((edge, index) => this.drawEdge(edge, index));
    this.nodeLayer.replaceChildren(...nodeElements);
    this.edgeLayer.replaceChildren(...edgeElements.flat());
    for (const state of this.states.values()) this.paintNode(state);
    this.refreshEdges();
  }

  drawNode(node, index) {
    const x = Number(node.x) || 0;
    const y = Number(node.y) || 0;
    const type = node.type ?? "passthrough";
    const label = node.label || node.id;
    const parts = {
      title: s("title", {}),
      glyph: s("text", { class: "glyph", x: 12, y: 23, "aria-hidden": "true" }),
      label: s("text", { class: "label", x: 30, y: 23 }, clip(label, LABEL_CHARS)),
      meta: s("text", { class: "meta", x: 12, y: 43 }),
      bar: s("rect", { class: "bar", x: 0, y: NODE_H - 5, width: 0, height: 5, rx: 2 }),
    };
    const element = s(
      "g",
      {
        class: "node",
        tabindex: "0",
        role: "button",
        transform: `translate(${x} ${y})`,
        dataset: { nodeId: node.id, status: "idle", index },
      },
      parts.title,
      s("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 8 }),
      parts.bar,
      parts.glyph,
      parts.label,
      parts.meta,
    );
    const entry = { node, element, parts, x, y, type, label, problems: [] };
    this.nodes.set(node.id, entry);
    this.paintNode({ node_id: node.id, status: this.states.get(node.id)?.status ?? "idle" });
    return element;
  }

  drawEdge(edge, index) {
    const source = this.anchor(edge.source, edge.target, "out");
    const target = this.anchor(edge.target, edge.source, "in");
    if (!source || !target) return []; // an edge to a node that is not there: validation says so
    const dx = Math.max(40, Math.abs(target.x - source.x) / 2);
    const d = `M${source.x},${source.y} C${source.x + dx},${source.y} ${target.x - dx},${target.y} ${target.x},${target.y}`;
    const title = s("title", {});
    const path = s("path", { class: "line", d });
    const children = [title, path];
    if (source.terminal) children.push(terminal(source, "start"));
    if (target.terminal) children.push(terminal(target, "end"));
    if (edge.condition) {
      const mx = (source.x + target.x) / 2;
      const my = (source.y + target.y) / 2 - 6;
      children.push(s("text", { class: "condition", x: mx, y: my }, clip(edge.condition, 32)));
    }
    const element = s(
      "g",
      {
        class: "edge",
        dataset: { edgeId: edge.id ?? `${edge.source}->${edge.target}`, state: "pending", index },
      },
      children,
    );
    const entry = { edge, element, path, title, index, problems: [] };
    this.edges.push(entry);
    this.titleEdge(entry);
    return element;
  }

  /** Where an edge leaves (`out`, the right side) or enters (`in`, the left side) a node. */
  anchor(id, otherId, side) {
    if (id === START || id === END) {
      const other = this.nodes.get(otherId);
      if (!other) return null;
      const cy = other.y + NODE_H / 2;
      return id === START
        ? { x: other.x - TERMINAL_GAP, y: cy, terminal: true }
        : { x: other.x + NODE_W + TERMINAL_GAP, y: cy, terminal: true };
    }
    const entry = this.nodes.get(id);
    if (!entry) return null;
    return { x: side === "out" ? entry.x + NODE_W : entry.x, y: entry.y + NODE_H / 2 };
  }

  // -- state -------------------------------------------------------------------------------

  /** A node state from the API ({node_id, status, progress, message, ...}). */
  setNodeState(state) {
    this.states.set(state.node_id, state);
    this.paintNode(state);
  }

  paintNode(state) {
    const entry = this.nodes.get(state.node_id);
    if (!entry) return;
    const status = state.status ?? "idle";
    const { element, parts } = entry;
    if (element.dataset.status !== status) element.dataset.status = status;
    const progress = status === "running" ? ` ${percent(state.progress)}` : "";
    parts.glyph.textContent = glyph(status);
    parts.meta.textContent = clip(`${entry.type} · ${status}${progress}`, META_CHARS);
    const width = status === "running" ? Math.round((state.progress ?? 0) * NODE_W) : 0;
    parts.bar.setAttribute("width", String(width));
    const said = state.message ? ` · ${state.message}` : "";
    const problems = entry.problems.length ? ` · problem: ${entry.problems.join("; ")}` : "";
    const text = `${entry.label} (${entry.node.id}) · ${entry.type} · ${status}${progress}${said}${problems}`;
    parts.title.textContent = text;
    element.setAttribute("aria-label", text);
  }

  /** Whether the run is over: an edge whose target never ran is then "skipped". */
  setFinished(finished) {
    this.finished = finished;
  }

  /** Recomputes each edge's taken/skipped/pending state from the node states. */
  refreshEdges() {
    for (const entry of this.edges) {
      const state = this.edgeState(entry.edge);
      if (entry.element.dataset.state !== state) {
        entry.element.dataset.state = state;
        this.titleEdge(entry);
      }
    }
  }

  statusOf(id) {
    return this.states.get(id)?.status ?? "idle";
  }

  /**
   * "taken", "skipped" (not taken), "pending" (not decided yet) or "unknown": a conditional
   * edge into a node that ran, where another completed predecessor could have been what
   * started it (the API records which nodes ran, not which conditions held).
   */
  edgeState(edge) {
    const target = edge.target === END ? null : this.statusOf(edge.target);
    const ran = target !== null && target !== "idle" && target !== "skipped";
    if (target === "skipped") return "skipped";
    if (edge.source === START) return ran ? "taken" : this.finished ? "skipped" : "pending";
    const source = this.statusOf(edge.source);
    if (source === "skipped") return "skipped";
    if (source !== "completed") return this.finished ? "skipped" : "pending";
    if (edge.target === END) return "taken";
    if (!ran) return this.finished ? "skipped" : "pending";
    if (!edge.condition) return "taken";
    const others = this.incoming.get(edge.target).filter((e) => e !== edge);
    const couldHave = others.some((e) => e.source === START || this.statusOf(e.source) === "completed");
    return couldHave ? "unknown" : "taken";
  }

  titleEdge(entry) {
    const { edge, element } = entry;
    const state = element.dataset.state;
    const shown = {
      taken: "taken",
      skipped: "not taken",
      pending: "not yet taken",
      unknown: "its condition is not known to have held",
    }[state];
    const condition = edge.condition ? ` when ${edge.condition}` : "";
    const problems = entry.problems.length ? ` · problem: ${entry.problems.join("; ")}` : "";
    entry.title.textContent = `${edge.source} → ${edge.target}${condition} (${shown})${problems}`;
    const marker = entry.problems.length ? "problem" : state;
    entry.path.setAttribute("marker-end", `url(#${this.markerId(marker)})`);
  }

  // -- validation problems -------------------------------------------------------------------

  /**
   * Marks the nodes and edges that problems point at ({path, message}, `path` a JSON pointer
   * into the graph: /nodes/3/config/seconds is node 3). Returns each problem with what it
   * points at ({kind: "node"|"edge", id} or null for the graph as a whole).
   */
  setProblems(problems) {
    for (const entry of [...this.nodes.values(), ...this.edges]) {
      entry.problems = [];
      delete entry.element.dataset.problem;
    }
    const nodesByIndex = [...this.nodes.values()];
    const located = problems.map((problem) => {
      const match = /^\/(nodes|edges)\/(\d+)(?:\/|$)/.exec(problem.path ?? "");
      if (!match) return { problem, target: null };
      const index = Number(match[2]);
      const entry =
        match[1] === "nodes"
          ? nodesByIndex.find((n) => Number(n.element.dataset.index) === index)
          : this.edges.find((e) => e.index === index);
      if (!entry) return { problem, target: null };
      entry.problems.push(problem.message);
      entry.element.dataset.problem = "true";
      const kind = match[1] === "nodes" ? "node" : "edge";
      const id = kind === "node" ? entry.node.id : entry.element.dataset.edgeId;
      return { problem, target: { kind, id } };
    });
    for (const entry of this.nodes.values()) this.paintNode(this.states.get(entry.node.id) ?? { node_id: entry.node.id });
    for (const entry of this.edges) this.titleEdge(entry);
    return located;
  }

  // -- selection and view ------------------------------------------------------------------

  select(id) {
    if (this.selected) this.nodes.get(this.selected)?.element.classList.remove("selected");
    this.selected = id;
    this.nodes.get(id)?.element.classList.add("selected");
  }

  /** Brings a node (or an edge's source) into the middle of the view and focuses it. */
  reveal(kind, id) {
    let entry = this.nodes.get(id);
    if (kind === "edge") {
      const edge = this.edges.find((e) => e.element.dataset.edgeId === id);
      entry = edge && (this.nodes.get(edge.edge.source) ?? this.nodes.get(edge.edge.target));
    }
    if (!entry) return;
    this.view.centre(entry.x + NODE_W / 2, entry.y + NODE_H / 2);
    if (kind === "node") entry.element.focus({ preventScroll: true });
  }

  bounds() {
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (const { x, y } of this.nodes.values()) {
      minX = Math.min(minX, x - TERMINAL_GAP);
      minY = Math.min(minY, y);
      maxX = Math.max(maxX, x + NODE_W + TERMINAL_GAP);
      maxY = Math.max(maxY, y + NODE_H);
    }
    if (minX === Infinity) return { minX: 0, minY: 0, maxX: NODE_W, maxY: NODE_H };
    return { minX, minY, maxX, maxY };
  }

  /** Scales and centres the view so that the whole graph shows. */
  fit() {
    this.view.fit();
  }

  key(event) {
    const node = event.target.closest?.(".node");
    if (node && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      this.activate(node.dataset.nodeId);
    }
  }

  activate(id) {
    this.select(id);
    this.onSelect(id);
  }
}

function terminal(point, kind) {
  return s(
    "g",
    { class: `terminal ${kind}` },
    s("circle", { cx: point.x, cy: point.y, r: 7 }),
    s("text", { x: point.x, y: point.y + 22 }, kind),
  );
}
