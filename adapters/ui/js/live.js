// A project's events over the WebSocket, kept alive: after any close (a daemon restart, a
// client too slow for its queue) it reconnects with `since` = the last seq it handed on, so
// nothing is missed and nothing is handed on twice.

import { socketUrl } from "./api.js";

const FIRST_RETRY_MS = 200;
const MAX_RETRY_MS = 3000;
const POLICY_VIOLATION = 1008; // the token was revoked

/** The connection states, also shown in the page header. */
export const LIVE = { connecting: "connecting", live: "live", retrying: "reconnecting", off: "off" };

export class LiveFeed {
  /**
   * @param project the project id
   * @param options.runId only this run's events
   * @param options.since replay stored events after this seq first (null: live ones only)
   * @param options.onEvent called with each event, in seq order
   * @param options.onGap called when events after `since` were pruned (the view reloads)
   * @param options.onState called with a LIVE state
   * @param options.probe an API call made when a socket would not open, to learn why (a 401
   *   it raises ends the feed and is given to onError)
   * @param options.onError called with an error that ends the feed
   */
  constructor(project, options) {
    this.project = project;
    this.options = options;
    this.lastSeq = options.since ?? null;
    this.socket = null;
    this.retries = 0;
    this.timer = null;
    this.stopped = false;
  }

  start() {
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "page left");
    this.socket = null;
    this.setState(LIVE.off);
  }

  setState(state) {
    this.state = state;
    this.options.onState?.(state);
  }

  connect() {
    if (this.stopped) return;
    this.setState(this.retries === 0 ? LIVE.connecting : LIVE.retrying);
    const params = { run_id: this.options.runId, since: this.lastSeq };
    const socket = new WebSocket(socketUrl(this.project, params));
    let opened = false;
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.retries = 0;
      this.setState(LIVE.live);
    });
    socket.addEventListener("message", (message) => this.receive(message.data));
    socket.addEventListener("close", (close) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      this.closed(close, opened);
    });
  }

  receive(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return; // not an event; the server sends only JSON
    }
    if (event.type === "resume_gap") {
      this.options.onGap?.(event);
      return;
    }
    if (typeof event.seq !== "number") return; // subscribe acknowledgements, errors
    if (this.lastSeq !== null && event.seq <= this.lastSeq) return;
    this.lastSeq = event.seq;
    // Views only record the event here; they draw once per frame, however many arrive.
    this.options.onEvent(event);
  }

  async closed(close, opened) {
    if (close.code === POLICY_VIOLATION) {
      this.fail(new Error(`the live feed was closed: ${close.reason || "token revoked"}`));
      return;
    }
    if (!opened && this.options.probe) {
      try {
        await this.options.probe();
      } catch (error) {
        if (error.status === 401 || error.status === 403 || error.status === 404) {
          this.fail(error);
          return;
        }
      }
    }
    if (this.stopped) return;
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(this.retries, 5));
    this.retries += 1;
    this.setState(LIVE.retrying);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  fail(error) {
    this.stop();
    this.options.onError?.(error);
  }
}
