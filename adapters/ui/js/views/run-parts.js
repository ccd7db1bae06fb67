// The pieces of the run view that only draw: controls, the input prompt, the node panel, the
// run's details and an event's line in the timeline.

import { elapsed, fill, formatClock, formatDuration, formatTime, h, jsonBlock } from "../dom.js";
import { badge, percent } from "../status.js";

/** Each control: the API verb it calls and the body it sends. */
export const ACTIONS = {
  Pause: ["pause", undefined],
  Resume: ["resume", {}],
  Cancel: ["cancel", undefined],
  Retry: ["execute", {}],
  "Start over": ["execute", { from_start: true }],
};

/** The controls the run's state allows (DESIGN §3's transitions). */
export function actionsFor(run) {
  switch (run.status) {
    case "pending":
    case "running":
      return ["Pause", "Cancel"];
    case "paused":
      // A run waiting for input resumes with an answer: the prompt's buttons.
      return run.pause_reason === "input_required" ? ["Cancel"] : ["Resume", "Cancel"];
    case "failed":
      return ["Retry", "Start over"];
    case "cancelled":
      return ["Start over"];
    default:
      return [];
  }
}

const ACTION_HINTS = {
  Pause: "Let the node in flight finish, then stop before the next step",
  Resume: "Continue from where the run paused",
  Cancel: "Stop the run now",
  Retry: "Run again from the node that failed",
  "Start over": "Run again from the beginning, with the same input",
};

export function controlButtons(run, onAction) {
  return actionsFor(run).map((name) =>
    h("button", { type: "button", title: ACTION_HINTS[name], on: { click: () => onAction(name) } }, name),
  );
}

/** The prompt's text, its choices and a note if the last answer was refused. */
export function readPrompt(prompt) {
  if (typeof prompt === "string") return { text: prompt, choices: [], error: null };
  const text =
    prompt && typeof prompt.prompt === "string"
      ? prompt.prompt
      : prompt !== null && prompt !== undefined
        ? JSON.stringify(prompt)
        : "This run waits for input.";
  const choices = Array.isArray(prompt?.choices) ? prompt.choices.map(String) : [];
  return { text, choices, error: typeof prompt?.error === "string" ? prompt.error : null };
}

export function promptBox(run, onAnswer) {
  const { text, choices, error } = readPrompt(run.prompt);
  let answer;
  if (choices.length) {
    answer = h(
      "div",
      { class: "choices", role: "group", "aria-label": "Answers" },
      choices.map((choice) => h("button", { type: "button", on: { click: () => onAnswer(choice) } }, choice)),
    );
  } else {
    const field = h("input", { id: "prompt-answer", name: "value", required: true, autocomplete: "off" });
    answer = h(
      "form",
      {
        class: "inline",
        on: {
          submit: (event) => {
            event.preventDefault();
            onAnswer(field.value);
          },
        },
      },
      h("label", { for: "prompt-answer" }, "Answer"),
      field,
      h("button", { type: "submit" }, "Send"),
    );
  }
  return [
    h("h2", {}, "Input requested"),
    h("p", { class: "prompt-text" }, text),
    error ? h("p", { class: "warning" }, error) : null,
    answer,
  ];
}

function row(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

function time(iso) {
  return h("time", { datetime: iso ?? "", title: iso ?? "" }, formatTime(iso));
}

export function triggerText(run) {
  const t = run.trigger;
  if (!t) return "—";
  return [t.type, t.id, t.scheduled_for ? `for ${formatTime(t.scheduled_for)}` : null].filter(Boolean).join(" ");
}

export function runDetails(run, { project, graphName }) {
  const base = `/ui/projects/${encodeURIComponent(project)}`;
  const parent = run.parent_run_id
    ? h("a", { href: `${base}/runs/${encodeURIComponent(run.parent_run_id)}` }, run.parent_run_id)
    : null;
  return h(
    "dl",
    { class: "facts" },
    row("Status", badge(run.status, run.pause_reason ? ` (${run.pause_reason})` : "")),
    row("Graph", h("a", { href: `${base}/graphs/${encodeURIComponent(run.workflow_id)}` }, graphName ?? run.workflow_id), ` version ${run.graph_version}`),
    row("Trigger", triggerText(run)),
    row("Created", time(run.created_at)),
    row("Started", time(run.started_at)),
    row("Finished", time(run.finished_at)),
    row("Duration", h("span", { class: "duration" }, formatDuration(elapsed(run.started_at, run.finished_at)))),
    run.paused_at ? row("Paused", time(run.paused_at)) : null,
    row("Last message", run.last_message ?? "—"),
    run.owner ? row("Executed by", run.owner) : null,
    run.recoveries ? row("Taken back", `${run.recoveries}× from a daemon that stopped`) : null,
    parent ? row("Parent run", parent, run.parent_node_id ? ` (node ${run.parent_node_id})` : "") : null,
  );
}

export function nodePanel(node, state, run) {
  if (!node && !state) return [h("p", { class: "muted" }, "Select a node to see its state, messages and output.")];
  const id = node?.id ?? state.node_id;
  const status = state?.status ?? "idle";
  const messages = state?.messages ?? [];
  const shownMessages = messages.slice(-50);
  const outputs = run?.output?.outputs;
  const output = outputs && Object.hasOwn(outputs, id) ? outputs[id] : undefined;
  const progress = state?.progress ?? 0;
  return [
    h("h2", {}, node?.label || id),
    h(
      "dl",
      { class: "facts" },
      row("Node", h("code", {}, id)),
      row("Type", node?.type ?? "passthrough"),
      row("Status", badge(status)),
      row(
        "Progress",
        h("progress", { max: "1", value: String(progress), "aria-label": `progress of ${id}` }),
        ` ${percent(progress)}`,
      ),
      row("Attempts", String(state?.attempts ?? 0)),
      row("Started", time(state?.started_at)),
      row("Completed", time(state?.completed_at)),
      row("Took", formatDuration(elapsed(state?.started_at, state?.completed_at))),
      row("Message", state?.message ?? "—"),
    ),
    h("h3", {}, `Messages (${messages.length})`),
    shownMessages.length
      ? h(
          "ol",
          { class: "messages", start: String(messages.length - shownMessages.length + 1) },
          shownMessages.map((m) => h("li", {}, m)),
        )
      : h("p", { class: "muted" }, "none"),
    state?.error ? [h("h3", {}, "Error"), jsonBlock(state.error)] : null,
    h("h3", {}, "Output"),
    output !== undefined
      ? jsonBlock(output)
      : h("p", { class: "muted" }, run?.status === "completed" ? "none" : "shown when the run completes"),
    node?.config && Object.keys(node.config).length ? [h("h3", {}, "Config"), jsonBlock(node.config)] : null,
  ];
}

export function eventSummary(event) {
  const state = event.nodeState;
  if (state) {
    const pct = state.status === "running" && state.progress ? ` ${percent(state.progress)}` : "";
    const said = state.message && state.status === "running" ? ` · ${state.message}` : "";
    const error = state.error?.message ? ` · ${state.error.message}` : "";
    return `${state.node_id} → ${state.status}${pct}${said}${error}`;
  }
  if (event.run) {
    const said = event.run.last_message ? ` · ${event.run.last_message}` : "";
    return `run → ${event.run.status}${said}`;
  }
  return event.type;
}

export function eventRow(event, element) {
  element.dataset.type = event.type;
  fill(element, 
    h("span", { class: "seq" }, `#${event.seq}`),
    h("span", { class: "clock" }, formatClock(event.timestamp)),
    h("span", { class: "kind" }, event.type.replace(/^workflow\./, "")),
    h("span", { class: "what" }, eventSummary(event)),
  );
}
