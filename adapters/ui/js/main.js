// The dashboard's shell: routes each /ui/... path to its view, keeps the header (project,
// navigation, live state, sign-in) and shows every error the API sends.

import { AuthRequired, token } from "./api.js";
import { append, clear, fill, h } from "./dom.js";
import * as graph from "./views/graph.js";
import * as graphs from "./views/graphs.js";
import * as home from "./views/home.js";
import * as nodeTypes from "./views/node-types.js";
import * as run from "./views/run.js";
import * as runs from "./views/runs.js";
import { signInForm } from "./views/sign-in.js";

const PROJECT_KEY = "cortexd.project";
const segment = "([^/]+)";
const ROUTES = [
  [/^\/ui\/?$/, home, []],
  [new RegExp(`^/ui/projects/${segment}/?$`), runs, ["project"]],
  [new RegExp(`^/ui/projects/${segment}/runs/?$`), runs, ["project"]],
  [new RegExp(`^/ui/projects/${segment}/runs/${segment}/?$`), run, ["project", "runId"]],
  [new RegExp(`^/ui/projects/${segment}/graphs/?$`), graphs, ["project"]],
  [new RegExp(`^/ui/projects/${segment}/graphs/${segment}/?$`), graph, ["project", "graphId"]],
  [/^\/ui\/node-types\/?$/, nodeTypes, []],
];

class App {
  constructor() {
    this.main = document.getElementById("main");
    this.top = document.getElementById("top");
    this.notice = document.getElementById("notice");
    this.unmount = null;
    this.generation = 0;
    this.liveState = "off";
    document.addEventListener("click", (event) => this.follow(event));
    window.addEventListener("popstate", () => this.render());
    window.addEventListener("unhandledrejection", (event) => {
      event.preventDefault();
      this.fail(event.reason);
    });
  }

  get project() {
    return this.params?.project ?? localStorage.getItem(PROJECT_KEY);
  }

  /** Same-origin links to /ui/ change the view without a page load. */
  follow(event) {
    const link = event.target.closest?.("a[href]");
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(link.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith("/ui/")) return;
    if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
    event.preventDefault();
    this.navigate(url.pathname + url.search + url.hash);
  }

  navigate(path, { replace = false } = {}) {
    if (replace) history.replaceState(null, "", path);
    else history.pushState(null, "", path);
    this.render();
  }

  async render() {
    const generation = ++this.generation;
    this.unmount?.();
    this.unmount = null;
    this.hideNotice();
    const [view, params] = this.route(location.pathname);
    this.params = params;
    if (params.project) localStorage.setItem(PROJECT_KEY, params.project);
    this.drawHeader(view);
    clear(this.main);
    if (!view) {
      append(this.main, [
        h("h1", {}, "Not found"),
        h("p", {}, `Nothing of the dashboard is at ${location.pathname}. `, h("a", { href: "/ui/" }, "Start here"), "."),
      ]);
      return;
    }
    try {
      const unmount = await view.mount(this.main, params, this);
      if (generation !== this.generation) unmount?.();
      else this.unmount = unmount ?? null;
    } catch (error) {
      if (generation === this.generation) this.fail(error);
    }
  }

  route(path) {
    for (const [pattern, view, names] of ROUTES) {
      const match = pattern.exec(path);
      if (match) {
        const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(match[i + 1])]));
        return [view, params];
      }
    }
    return [null, {}];
  }

  drawHeader(view) {
    const project = this.project;
    const link = (href, text, active) =>
      h("a", { href, "aria-current": active ? "page" : null }, text);
    const nav = project
      ? [
          link(`/ui/projects/${encodeURIComponent(project)}/runs`, "Runs", view === runs || view === run),
          link(`/ui/projects/${encodeURIComponent(project)}/graphs`, "Graphs", view === graphs || view === graph),
        ]
      : [];
    nav.push(link("/ui/node-types", "Node types", view === nodeTypes));
    const projectForm = h(
      "form",
      {
        class: "project",
        on: {
          submit: (event) => {
            event.preventDefault();
            const value = new FormData(event.target).get("project").trim();
            if (value) this.navigate(`/ui/projects/${encodeURIComponent(value)}/runs`);
          },
        },
      },
      h("label", { for: "project-field" }, "Project"),
      h("input", { id: "project-field", name: "project", value: project ?? "", size: 12, autocomplete: "off" }),
    );
    const signOut = token.get()
      ? h("button", { type: "button", class: "quiet", on: { click: () => this.signOut() } }, "Sign out")
      : null;
    this.liveBadge = h("span", { class: "live", dataset: { live: this.liveState }, "aria-live": "polite" });
    this.paintLive();
    fill(this.top, 
      h("a", { class: "brand", href: "/ui/" }, "cortexd"),
      h("nav", { "aria-label": "Sections" }, nav),
      projectForm,
      this.liveBadge,
      signOut,
    );
  }

  /** The header's word for the live feed: live, connecting, reconnecting, off. */
  setLive(state) {
    this.liveState = state;
    this.paintLive();
  }

  paintLive() {
    if (!this.liveBadge) return;
    this.liveBadge.dataset.live = this.liveState;
    const words = { live: "● live", connecting: "○ connecting", reconnecting: "◌ reconnecting…", off: "" };
    this.liveBadge.textContent = words[this.liveState] ?? "";
  }

  /** Any error reaches the reader: a 401 asks for a token, anything else says the detail. */
  fail(error) {
    if (error instanceof AuthRequired) {
      this.askToken(error.detail);
      return;
    }
    if (error?.name === "AbortError") return;
    const detail = error?.detail ?? error?.message ?? String(error);
    this.showNotice(detail);
  }

  showNotice(detail) {
    fill(this.notice, 
      h("span", { class: "notice-text" }, detail),
      h("button", { type: "button", class: "quiet", on: { click: () => this.hideNotice() } }, "Dismiss"),
    );
    this.notice.hidden = false;
  }

  hideNotice() {
    this.notice.hidden = true;
    clear(this.notice);
  }

  askToken(detail) {
    this.generation += 1; // a view still loading must not draw over the form
    this.unmount?.();
    this.unmount = null;
    this.setLive("off");
    fill(this.main, 
      signInForm(detail, (value) => {
        token.set(value);
        this.render();
      }),
    );
    this.main.querySelector("input")?.focus();
  }

  signOut() {
    token.clear();
    this.render();
  }
}

const app = new App();
app.render();
