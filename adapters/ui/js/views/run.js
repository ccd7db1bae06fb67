// /ui/projects/{p}/runs/{id}: one run. Its graph version drawn with each node's live state,
// the node panel, the controls the state allows, the input prompt, and every event of the
// run in a virtualised timeline. All of it follows the WebSocket (replayed from seq 0, then
// live; after a reconnect from the last seq seen).

import { AuthRequired, get, post, projectApi } from "../api.js";
import { append, elapsed, fill, formatDuration, frameScheduler, h, jsonBlock, shortId } from "../dom.js";
import { GraphCanvas, NODE_H } from "../graph-canvas.js";
import { LiveFeed } from "../live.js";
import { badge } from "../status.js";
import { VirtualList } from "../timeline.js";
import { ACTIONS, controlButtons, eventRow, nodePanel, promptBox, runDetails } from "./run-parts.js";

const ROW_HEIGHT = 26;
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const enc = encodeURIComponent;

export async function mount(root, params, app) {
  const view = new RunView(root, params.project, params.runId, app);
  await view.start();
  return () => view.stop();
}

class RunView {
  constructor(root, project, runId, app) {
    this.root = root;
    this.project = project;
    this.runId = runId;
    this.app = app;
    this.base = projectApi(project, `/runs/${enc(runId)}`);
    this.states = new Map();
    this.events = [];
    this.pending = { events: [], states: new Map(), run: null };
    this.selected = null;
    this.picked = null;
    this.filterText = "";
    this.busy = false;
    // Arrival counts: an HTTP answer read before a WebSocket event arrived must not overwrite
    // what that event says (the socket may deliver a transition before its POST returns).
    this.arrived = 0;
    this.runArrived = 0;
    this.nodeArrived = new Map();
    this.draw = frameScheduler(() => this.drawPending());
  }

  async start() {
    this.run = await get(this.base);
    const [status, graph] = await Promise.all([get(`${this.base}/status`), this.loadGraph()]);
    this.graph = this.drawable(graph, status.node_states);
    this.layout(graph);
    this.canvas.setGraph(this.graph);
    for (const state of status.node_states) this.setState(state);
    this.applyRun(this.run, { force: true });
    this.canvas.refreshEdges();
    requestAnimationFrame(() => this.canvas.fit());
    this.feed = new LiveFeed(this.project, {
      runId: this.runId,
      since: 0,
      onEvent: (event) => this.onEvent(event),
      onGap: (gap) => this.onGap(gap),
      onState: (state) => this.app.setLive(state),
      probe: () => get(this.base),
      onError: (error) => this.app.fail(error),
    }).start();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  stop() {
    this.feed?.stop();
    this.timeline?.destroy();
    clearInterval(this.ticker);
    this.app.setLive("off");
  }

  /** The version the run executes; the API may only have the current one (then said so). */
  async loadGraph() {
    try {
      return await get(projectApi(this.project, `/graphs/${enc(this.run.workflow_id)}?version=${this.run.graph_version}`));
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  /** The graph as drawn: the version's nodes, plus any node the run knows that it lacks
   * (laid out in a row below, so every node state has a place). */
  drawable(graph, nodeStates) {
    const nodes = [...(graph?.nodes ?? [])];
    const edges = graph?.edges ?? [];
    const known = new Set(nodes.map((n) => n.id));
    const bottom = nodes.reduce((y, n) => Math.max(y, Number(n.y) || 0), 0) + NODE_H * 3;
    let x = 0;
    for (const state of nodeStates) {
      if (known.has(state.node_id)) continue;
      nodes.push({ id: state.node_id, label: state.node_id, x, y: bottom, type: "?" });
      x += 220;
    }
    return { nodes, edges };
  }

  layout(graph) {
    const run = this.run;
    const mismatch =
      graph === null
        ? `Graph ${run.workflow_id} is no longer served by the API; the nodes are drawn from the run's states.`
        : graph.version !== run.graph_version
          ? `This run executes version ${run.graph_version} of ${graph.name}; the API serves version ${graph.version} only, drawn here.`
          : null;
    this.graphName = graph?.name ?? run.workflow_id;
    this.statusBadge = h("span", { class: "run-status" });
    this.controls = h("div", { class: "controls", role: "group", "aria-label": "Run controls" });
    this.actionError = h("p", { class: "error action-error", role: "alert", hidden: true });
    this.prompt = h("section", { class: "prompt", "aria-label": "Input requested", hidden: true });
    this.panel = h("aside", { class: "node-panel", "aria-label": "Node", "aria-live": "polite" });
    this.details = h("div");
    this.io = h("div", { class: "io" });
    this.canvas = new GraphCanvas({
      label: `Graph ${this.graphName}, version ${run.graph_version}`,
      onSelect: (id) => this.selectNode(id),
    });
    this.timeline = new VirtualList({
      rowHeight: ROW_HEIGHT,
      render: eventRow,
      label: "Events of this run",
      onPick: (event) => this.pickEvent(event),
    });
    this.eventDetail = h("div", { class: "event-detail" });
    this.gapNote = h("p", { class: "warning", hidden: true });
    this.eventCount = h("span", { class: "muted" });
    const filter = h("input", {
      type: "search",
      id: "event-filter",
      placeholder: "node id, status, type…",
      on: { input: (event) => this.setFilter(event.target.value) },
    });
    append(this.root, [
      h(
        "div",
        { class: "title-row" },
        h("h1", {}, "Run ", h("span", { class: "mono", title: run.id }, shortId(run.id))),
        this.statusBadge,
        h("span", { class: "muted" }, `${this.graphName} v${run.graph_version}`),
      ),
      this.controls,
      this.actionError,
      this.prompt,
      mismatch ? h("p", { class: "warning" }, mismatch) : null,
      h("div", { class: "run-grid" }, this.canvas.element, this.panel),
      h(
        "div",
        { class: "run-lower" },
        h("section", { "aria-label": "Run" }, h("h2", {}, "Run"), this.details, this.io),
        h(
          "section",
          { class: "timeline", "aria-label": "Timeline" },
          h("div", { class: "title-row" }, h("h2", {}, "Timeline"), this.eventCount),
          h("label", { for: "event-filter", class: "visually-hidden" }, "Filter events"),
          filter,
          this.gapNote,
          this.timeline.element,
          this.eventDetail,
        ),
      ),
    ]);
    this.drawPanel();
  }

  // -- live --------------------------------------------------------------------------------

  onEvent(event) {
    this.arrived += 1;
    this.pending.events.push(event);
    if (event.nodeState) {
      this.pending.states.set(event.nodeState.node_id, event.nodeState);
      this.nodeArrived.set(event.nodeState.node_id, this.arrived);
    }
    if (event.run) {
      this.pending.run = event.run;
      this.runArrived = this.arrived;
    }
    this.draw();
  }

  drawPending() {
    const { events, states, run } = this.pending;
    this.pending = { events: [], states: new Map(), run: null };
    for (const state of states.values()) this.setState(state);
    if (run) this.applyRun(run);
    this.canvas.refreshEdges();
    if (events.length) {
      for (const event of events) this.events.push(event);
      const shown = this.filterText ? events.filter((e) => this.keep(e)) : events;
      this.timeline.append(shown);
      this.drawCount();
    }
    if (this.selected && (states.has(this.selected) || run)) this.drawPanel();
  }

  onGap(gap) {
    this.gapNote.hidden = false;
    this.gapNote.textContent = `Events before #${gap.min_available_seq} were pruned by the daemon's retention; the timeline starts there.`;
  }

  setState(state) {
    this.states.set(state.node_id, state);
    this.canvas.setNodeState(state);
  }

  /** A new state of the run: header, controls, prompt and details follow it. */
  applyRun(run, { force = false } = {}) {
    const before = this.run;
    this.run = run;
    const same =
      before.status === run.status &&
      before.pause_reason === run.pause_reason &&
      JSON.stringify(before.prompt) === JSON.stringify(run.prompt);
    if (!force && same) {
      this.drawDetails();
      return;
    }
    this.root.dataset.runStatus = run.status;
    this.statusBadge.dataset.status = run.status;
    fill(this.statusBadge, badge(run.status, run.pause_reason === "input_required" ? " · waiting for input" : ""));
    this.canvas.setFinished(FINISHED.has(run.status));
    fill(this.controls, ...controlButtons(run, (name) => this.act(name)));
    const asking = run.status === "paused" && run.pause_reason === "input_required";
    this.prompt.hidden = !asking;
    fill(this.prompt, ...(asking ? promptBox(run, (value) => this.answer(value)) : []));
    this.drawDetails();
    // Re-executed from scratch: node states were dropped without an event each.
    if (FINISHED.has(before.status) && !FINISHED.has(run.status)) this.reloadStates();
  }

  drawDetails() {
    const run = this.run;
    fill(this.details, runDetails(run, { project: this.project, graphName: this.graphName }));
    fill(this.io, 
      h("h3", {}, "Input"),
      jsonBlock(run.input, "{}"),
      h("h3", {}, run.error ? "Error" : "Output"),
      run.error ? jsonBlock(run.error) : jsonBlock(run.output, FINISHED.has(run.status) ? "none" : "not yet"),
    );
  }

  /** The states of nodes no event has spoken of since this request was sent (events carry
   * whole states, and the socket delivers in order: for the others it is the newer word). */
  async reloadStates() {
    const sent = this.arrived;
    try {
      const status = await get(`${this.base}/status`);
      for (const state of status.node_states) {
        if ((this.nodeArrived.get(state.node_id) ?? 0) <= sent) this.setState(state);
      }
      this.canvas.refreshEdges();
      if (this.selected) this.drawPanel();
    } catch (error) {
      this.app.fail(error);
    }
  }

  tick() {
    if (this.run.status !== "running") return;
    const cell = this.details.querySelector(".duration");
    if (cell) cell.textContent = formatDuration(elapsed(this.run.started_at, null));
  }

  // -- controls ----------------------------------------------------------------------------

  async act(name) {
    const [verb, body] = ACTIONS[name];
    await this.call(`${this.base}/${verb}`, body);
  }

  async answer(value) {
    await this.call(`${this.base}/resume`, { value });
  }

  /** One control's request: buttons wait for it; its error is shown as the server said it. */
  async call(url, body) {
    if (this.busy) return;
    this.busy = true;
    const buttons = this.root.querySelectorAll(".controls button, .prompt button");
    for (const button of buttons) button.disabled = true;
    this.actionError.hidden = true;
    const sent = this.arrived;
    try {
      const run = await post(url, body);
      if (this.runArrived <= sent) this.applyRun(run); // else the socket already told more
    } catch (error) {
      if (error instanceof AuthRequired) throw error;
      this.actionError.textContent = error.detail ?? error.message;
      this.actionError.hidden = false;
    } finally {
      this.busy = false;
      for (const button of buttons) button.disabled = false;
    }
  }

  // -- node panel and timeline -------------------------------------------------------------

  selectNode(id) {
    this.selected = id;
    this.canvas.select(id);
    this.drawPanel();
  }

  drawPanel() {
    const node = this.graph.nodes.find((n) => n.id === this.selected);
    const state = this.selected ? this.states.get(this.selected) : null;
    fill(this.panel, ...nodePanel(node, state, this.run).flat());
  }

  keep(event) {
    const text = this.filterText;
    if (!text) return true;
    const state = event.nodeState;
    return (
      event.type.includes(text) ||
      (state && (state.node_id.toLowerCase().includes(text) || state.status.includes(text))) ||
      (event.run && event.run.status.includes(text))
    );
  }

  setFilter(text) {
    this.filterText = text.trim().toLowerCase();
    this.timeline.setItems(this.events.filter((e) => this.keep(e)));
    this.drawCount();
  }

  drawCount() {
    const shown = this.timeline.items.length;
    const all = this.events.length;
    this.eventCount.textContent = shown === all ? `${all} events` : `${shown} of ${all} events`;
  }

  pickEvent(event) {
    this.picked = event;
    fill(this.eventDetail, h("h3", {}, `Event #${event.seq}`), jsonBlock(event));
    if (event.nodeState) this.selectNode(event.nodeState.node_id);
  }
}
