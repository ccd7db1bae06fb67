// Statuses as shape and word, not colour alone: each has a glyph, and the word is always shown.

import { h } from "./dom.js";

const GLYPHS = {
  // runs
  pending: "◷",
  running: "▶",
  paused: "‖",
  completed: "✓",
  failed: "✕",
  cancelled: "⊘",
  // nodes add these
  idle: "○",
  skipped: "↷",
};

export const RUN_STATUSES = ["pending", "running", "paused", "completed", "failed", "cancelled"];

export function glyph(status) {
  return GLYPHS[status] ?? "?";
}

/** A status badge: glyph and word, coloured by `data-status` in the stylesheet. */
export function badge(status, extra = "") {
  return h(
    "span",
    { class: "badge", dataset: { status } },
    h("span", { class: "glyph", "aria-hidden": "true" }, glyph(status)),
    ` ${status}${extra}`,
  );
}

export function percent(fraction) {
  return `${Math.round((fraction ?? 0) * 100)} %`;
}
