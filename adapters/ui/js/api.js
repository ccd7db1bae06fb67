// The HTTP API as the dashboard calls it: the bearer token from sessionStorage, errors as the
// `detail` the server sent, and list pages followed through `Link: <...>; rel="next"`.

const TOKEN_KEY = "cortexd.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An answer that was not 2xx: `detail` is the problem document's, word for word. */
export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

/** 401: no token, or one the daemon does not know. The page asks for one. */
export class AuthRequired extends ApiError {
  constructor(detail, body) {
    super(401, detail, body);
    this.name = "AuthRequired";
  }
}

const enc = encodeURIComponent;

export function projectApi(project, rest = "") {
  return `/api/projects/${enc(project)}/workflows${rest}`;
}

/** One request. Resolves to {data, response}; rejects with ApiError (never silently). */
export async function request(method, url, body = undefined, { signal } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `cortexd did not answer ${method} ${url}: ${error.message}`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const detail =
      data && typeof data === "object" && typeof data.detail === "string"
        ? data.detail
        : `${response.status} ${response.statusText || "error"} from ${method} ${url}`;
    if (response.status === 401) throw new AuthRequired(detail, data);
    throw new ApiError(response.status, detail, data);
  }
  return { data, response };
}

export async function get(url, options) {
  return (await request("GET", url, undefined, options)).data;
}

export async function post(url, body, options) {
  return (await request("POST", url, body, options)).data;
}

/** The `rel="next"` URL of a Link header (RFC 8288), if it points at this daemon. */
export function nextLink(header) {
  if (!header) return null;
  for (const match of header.matchAll(/<([^>]*)>([^,]*)/g)) {
    const rels = match[2]
      .split(";")
      .map((param) => param.split("="))
      .filter(([name]) => name.trim().toLowerCase() === "rel")
      .flatMap(([, value = ""]) => value.trim().replace(/^"|"$/g, "").toLowerCase().split(/\s+/));
    if (!rels.includes("next")) continue;
    const url = new URL(match[1], location.href);
    if (url.origin === location.origin) return url.pathname + url.search;
  }
  return null;
}

/**
 * A list endpoint read a page at a time (DESIGN §12): each answer holds at most `limit` items,
 * and its `Link: rel="next"` names the next page (keyset: runs created or changed meanwhile
 * never shift it). `more()` gives the next page and `done` says when there is none.
 */
export class Pager {
  constructor(url, limit) {
    const sep = url.includes("?") ? "&" : "?";
    this.next = `${url}${sep}limit=${limit}`;
  }

  get done() {
    return this.next === null;
  }

  async more(options) {
    if (this.next === null) return [];
    const { data, response } = await request("GET", this.next, undefined, options);
    this.next = nextLink(response.headers.get("Link"));
    return Array.isArray(data) ? data : [];
  }
}

/** The WebSocket URL of a project's events; the token rides as `token` (browsers cannot set
 * headers on a WebSocket). */
export function socketUrl(project, params) {
  const url = new URL(`/api/projects/${enc(project)}/ws`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  const bearer = token.get();
  if (bearer) url.searchParams.set("token", bearer);
  return url.toString();
}
