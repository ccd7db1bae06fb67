// /ui/projects/{p}/runs: the project's runs, newest first, filtered by graph and status,
// kept current by the WebSocket, a page at a time.

import { Pager, get, projectApi } from "../api.js";
import { LiveFeed } from "../live.js";
import { append, clear, elapsed, fill, formatDuration, formatTime, frameScheduler, h, shortId } from "../dom.js";
import { RUN_STATUSES, badge } from "../status.js";

const PAGE = 50;
const TICK_MS = 1000;

export async function mount(root, { project }, app) {
  const view = new RunsView(root, project, app);
  await view.start();
  return () => view.stop();
}

function trigger(run) {
  const t = run.trigger;
  if (!t) return "—";
  return t.id ? `${t.type} ${t.id}` : t.type;
}

class RunsView {
  constructor(root, project, app) {
    this.root = root;
    this.project = project;
    this.app = app;
    this.rows = new Map(); // run id -> {run, row, basis}
    this.changed = new Map(); // run id -> {run, at}, drawn on the next frame
    this.arrived = 0; // run events received so far
    this.loading = null; // the pager whose page is being read
    this.listedAt = 0; // `arrived` when the list was last asked for
    this.graphs = new Map();
    this.redraw = frameScheduler(() => this.drawChanges());
    const query = new URLSearchParams(location.search);
    this.filter = { graph: query.get("graph") ?? "", status: query.get("status") ?? "" };
  }

  async start() {
    const graphs = await get(projectApi(this.project, "/graphs"));
    for (const graph of graphs) this.graphs.set(graph.id, graph);
    this.drawFrame();
    this.feed = new LiveFeed(this.project, {
      since: null,
      onEvent: (event) => this.onEvent(event),
      onState: (state) => this.onLive(state),
      onGap: () => this.load(), // events were pruned while away: read the list again
      probe: () => get(projectApi(this.project, "/graphs?limit=1")),
      onError: (error) => this.app.fail(error),
    }).start();
    await this.load();
    this.ticker = setInterval(() => this.tick(), TICK_MS);
  }

  stop() {
    this.feed?.stop();
    clearInterval(this.ticker);
    this.app.setLive("off");
  }

  onLive(state) {
    this.app.setLive(state);
    // Events missed while away are replayed from the last seq seen; with none seen, the list
    // itself is read again.
    if (state === "live" && this.wasAway && this.feed.lastSeq === null) this.load();
    if (state === "reconnecting") this.wasAway = true;
  }

  drawFrame() {
    const select = (name, label, options, value) =>
      h(
        "label",
        {},
        `${label} `,
        h(
          "select",
          { name, on: { change: (event) => this.setFilter(name, event.target.value) } },
          options.map(([optionValue, text]) =>
            h("option", { value: optionValue, selected: optionValue === value }, text),
          ),
        ),
      );
    const graphOptions = [["", "all graphs"], ...[...this.graphs.values()].map((g) => [g.id, `${g.name} (${g.id})`])];
    if (this.filter.graph && !this.graphs.has(this.filter.graph)) graphOptions.push([this.filter.graph, this.filter.graph]);
    const statusOptions = [["", "any status"], ...RUN_STATUSES.map((status) => [status, status])];
    this.body = h("tbody");
    this.more = h("button", { type: "button", hidden: true, on: { click: () => this.page() } }, "Load more");
    this.count = h("p", { class: "muted", "aria-live": "polite" });
    append(this.root, [
      h("div", { class: "title-row" }, h("h1", {}, "Runs"), h("span", { class: "muted" }, `project ${this.project}`)),
      h(
        "form",
        { class: "filters", role: "search", "aria-label": "Filter runs", on: { submit: (e) => e.preventDefault() } },
        select("graph", "Graph", graphOptions, this.filter.graph),
        select("status", "Status", statusOptions, this.filter.status),
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "runs" },
          h("caption", { class: "visually-hidden" }, `Runs of project ${this.project}, newest first`),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Status", "Run", "Graph", "Trigger", "Created", "Started", "Finished", "Duration", "Last message"].map(
                (name) => h("th", { scope: "col" }, name),
              ),
            ),
          ),
          this.body,
        ),
      ),
      this.count,
      this.more,
    ]);
  }

  setFilter(name, value) {
    this.filter[name] = value;
    const query = new URLSearchParams();
    if (this.filter.graph) query.set("graph", this.filter.graph);
    if (this.filter.status) query.set("status", this.filter.status);
    const search = query.toString();
    history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
    this.load();
  }

  async load() {
    const query = new URLSearchParams();
    if (this.filter.graph) query.set("workflow_id", this.filter.graph);
    if (this.filter.status) query.set("status", this.filter.status);
    const search = query.toString();
    this.pager = new Pager(projectApi(this.project, `/runs${search ? `?${search}` : ""}`), PAGE);
    this.rows.clear();
    clear(this.body);
    // A run this answer does not hold, whose last event came before it was asked for, did not
    // match then: that event is not drawn.
    this.listedAt = this.arrived;
    this.root.dataset.loaded = "false";
    await this.page();
    this.root.dataset.loaded = "true";
  }

  /**
   * The next page. Events keep arriving meanwhile; each row remembers what it was drawn from
   * (`basis`: the arrival count when its answer was asked for, or its event's), and an event
   * is drawn only over a row drawn from something older: the socket may deliver a change
   * before or after a list answer that already holds it.
   */
  async page() {
    const pager = this.pager;
    const sent = this.arrived;
    this.loading = pager;
    this.more.disabled = true;
    try {
      const runs = await pager.more();
      if (pager !== this.pager) return; // the filter changed meanwhile
      for (const run of runs) {
        if (this.rows.has(run.id)) continue;
        const row = h("tr", { dataset: { runId: run.id } });
        this.rows.set(run.id, { run, row, basis: sent });
        this.drawRow(row, run);
        this.body.append(row);
      }
    } finally {
      if (this.loading === pager) this.loading = null;
      this.more.disabled = false;
      this.more.hidden = pager.done;
      this.drawChanges();
    }
  }

  drawCount() {
    const shown = this.rows.size;
    this.count.textContent =
      shown === 0 ? "No runs match." : `${shown} run${shown === 1 ? "" : "s"} shown${this.pager.done ? "" : "; more below"}.`;
  }

  matches(run) {
    return (!this.filter.graph || run.workflow_id === this.filter.graph) && (!this.filter.status || run.status === this.filter.status);
  }

  onEvent(event) {
    if (event.graph && event.type !== "workflow.graph.deleted") this.graphs.set(event.graph.id, event.graph);
    if (!event.run) return;
    this.arrived += 1;
    this.changed.set(event.run.id, { run: event.run, at: this.arrived });
    this.redraw();
  }

  drawChanges() {
    if (this.loading) return; // drawn once the page is in
    const changed = [...this.changed.values()];
    this.changed.clear();
    for (const { run, at } of changed) {
      const known = this.rows.get(run.id);
      if (known && at <= known.basis) continue; // the row's answer was asked for later
      if (known && !this.matches(run)) {
        known.row.remove();
        this.rows.delete(run.id);
      } else if (known) {
        known.run = run;
        known.basis = at;
        this.drawRow(known.row, run);
      } else if (this.matches(run) && at > this.listedAt) {
        this.insert(run, at);
      }
    }
    this.drawCount();
  }

  /** A run new to this list goes where its creation time puts it, if that is on a loaded page. */
  insert(run, at) {
    const row = h("tr", { dataset: { runId: run.id } });
    this.drawRow(row, run);
    const older = [...this.body.children].find((tr) => {
      const shown = this.rows.get(tr.dataset.runId);
      return shown && shown.run.created_at < run.created_at;
    });
    if (older) this.body.insertBefore(row, older);
    else if (this.pager.done) this.body.append(row);
    else return; // older than every row shown: it comes with a later page
    this.rows.set(run.id, { run, row, basis: at });
  }

  drawRow(row, run) {
    row.dataset.status = run.status;
    const graph = this.graphs.get(run.workflow_id);
    const runHref = `/ui/projects/${encodeURIComponent(this.project)}/runs/${encodeURIComponent(run.id)}`;
    const graphHref = `/ui/projects/${encodeURIComponent(this.project)}/graphs/${encodeURIComponent(run.workflow_id)}`;
    const cell = (...content) => h("td", {}, content);
    fill(row, 
      cell(badge(run.status, run.pause_reason === "input_required" ? " · input" : "")),
      cell(h("a", { href: runHref, title: run.id, class: "mono" }, shortId(run.id))),
      cell(h("a", { href: graphHref }, graph?.name ?? run.workflow_id), h("span", { class: "muted" }, ` v${run.graph_version}`)),
      h("td", { class: "trigger" }, trigger(run)),
      h("td", { title: run.created_at ?? "" }, formatTime(run.created_at)),
      h("td", { title: run.started_at ?? "" }, formatTime(run.started_at)),
      h("td", { title: run.finished_at ?? "" }, formatTime(run.finished_at)),
      h("td", { class: "duration" }, formatDuration(elapsed(run.started_at, run.finished_at))),
      h("td", { class: "message" }, run.last_message ?? ""),
    );
  }

  tick() {
    for (const { run, row } of this.rows.values()) {
      if (run.status === "running" && run.started_at && !run.finished_at) {
        const cell = row.querySelector(".duration");
        if (cell) cell.textContent = formatDuration(elapsed(run.started_at, null));
      }
    }
  }
}
