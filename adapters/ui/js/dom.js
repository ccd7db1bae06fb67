// Building DOM without parsing HTML: every string from the API lands in a text node or an
// attribute, never in markup, so nothing a graph or a run carries can inject script.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "style") throw new Error("inline style is refused by the CSP: use a class");
    if (key === "on") {
      for (const [type, handler] of Object.entries(value)) element.addEventListener(type, handler);
    } else if (key === "text") {
      element.textContent = String(value);
    } else if (key === "class") {
      element.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      for (const [name, data] of Object.entries(value)) element.dataset[name] = String(data);
    } else if (value === true) {
      element.setAttribute(key, "");
    } else {
      element.setAttribute(key, String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h("a", {href, class}, "text", child, [more]). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

/** Replaces an element's children; like h(), skips null and flattens arrays. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** A timestamp in the reader's local time, to the second ("2025-05-01 14:03:09"). */
export function formatTime(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  const date = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
  return `${date} ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

/** The time of day to the millisecond, for the event timeline. */
export function formatClock(iso) {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso ?? "");
  return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
}

/** "850 ms", "12.4 s", "3 m 05 s", "2 h 01 m". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} m ${pad(Math.floor(seconds % 60))} s`;
  return `${Math.floor(minutes / 60)} h ${pad(minutes % 60)} m`;
}

/** How long something took, or has taken so far when it has not finished. */
export function elapsed(startIso, endIso, now = Date.now()) {
  if (!startIso) return null;
  const start = Date.parse(startIso);
  const end = endIso ? Date.parse(endIso) : now;
  return end - start;
}

export function shortId(id) {
  return id && id.length > 12 ? id.slice(0, 8) : id;
}

/** Pretty JSON in a <pre>; `empty` when there is nothing. */
export function jsonBlock(value, empty = "—") {
  if (value === undefined || value === null) return h("p", { class: "muted" }, empty);
  return h("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2));
}

/** Runs `work` once per animation frame at most, however often it is asked for. */
export function frameScheduler(work) {
  let asked = false;
  const run = () => {
    if (!asked) return;
    asked = false;
    work();
  };
  return () => {
    if (asked) return;
    asked = true;
    requestAnimationFrame(run);
    // A hidden tab gets no frames: the work still happens, only later.
    setTimeout(run, 250);
  };
}
