// @ts-check
// The dashboard's shell: the token, the REST helper, the one socket.io connection, and
// the router (#/screen/arguments). Each screen is a module of views/ exporting
// `render(main, args, query)`, which returns a function that stops what it started.
import { io } from "/web/vendor/socket.io.esm.min.js";

/** @typedef {{chan: number, source: string, analysis: {time: string, result: string[],
 *   predictions: Record<string, number>, model: string}}} Window */

const TOKEN_KEY = "tidzam.token";

/** The saved token ("" when none). */
export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

/** A message in the footer (errors stay until the next one). */
export function say(text, isError = false) {
  const el = /** @type {HTMLElement} */ (document.getElementById("message"));
  el.textContent = text;
  el.className = isError ? "error" : "";
}

/**
 * A REST call to the gateway; JSON in and out, the token as a bearer.
 * @param {string} path
 * @param {{method?: string, body?: unknown, raw?: boolean}} [options]
 * @returns {Promise<any>}
 */
export async function api(path, options = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return options.raw ? response : response.json();
}

/** An object URL of an image or sound the gateway serves (with the token). */
export async function blobUrl(path) {
  const response = await api(path, { raw: true });
  return URL.createObjectURL(await response.blob());
}

// ------------------------------------------------------------------ live windows

/** @type {Set<(windows: Window[]) => void>} */
const listeners = new Set();
let socket = connect();

function connect() {
  const s = io({ auth: token() ? { token: token() } : {}, transports: ["websocket"] });
  const link = /** @type {HTMLElement} */ (document.getElementById("link"));
  s.on("connect", () => { link.textContent = "live"; link.className = "ok"; });
  s.on("disconnect", () => { link.textContent = "reconnecting…"; link.className = "error"; });
  s.on("connect_error", () => { link.textContent = "no live link"; link.className = "error"; });
  s.on("sys", (data) => {
    if (Array.isArray(data)) for (const listen of listeners) listen(data);
  });
  return s;
}

/** Call `listen` with every batch of broadcast windows until the returned stop. */
export function onWindows(listen) {
  listeners.add(listen);
  return () => listeners.delete(listen);
}

/** A socket.io request with its acknowledgement. */
export function ask(event, data) {
  return socket.timeout(15000).emitWithAck(event, data);
}

// ---------------------------------------------------------------------- helpers

/**
 * An element: el("div", {class: "x", onclick: f}, child, "text").
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** An SVG element. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

/** The decided label of a window and its confidence (the best score). */
export function decision(w) {
  const label = w.analysis.result.join("+") || "unknown";
  const scores = Object.values(w.analysis.predictions);
  return { label, confidence: scores.length ? Math.max(...scores) : 0 };
}

/** A colour for a label: the same hue everywhere on the page. */
export function hue(label) {
  let h = 0;
  for (const c of label) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 70% 45%)`;
}

/** A CSV/TSV file offered for download. */
export function download(name, text, type = "text/csv") {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

// ----------------------------------------------------------------------- router

const screens = {
  live: () => import("/web/views/live.js"),
  channel: () => import("/web/views/channel.js"),
  today: () => import("/web/views/today.js"),
  history: () => import("/web/views/history.js"),
  archive: () => import("/web/views/archive.js"),
  review: () => import("/web/views/review.js"),
  models: () => import("/web/views/models.js"),
};
/** @type {(() => void) | null} */
let stopScreen = null;
let routes = 0; // a screen still loading when the next is asked is stopped as it ends

async function route() {
  const mine = ++routes;
  const [path, search] = (location.hash.slice(1) || "/live").split("?");
  const [name, ...args] = path.split("/").filter(Boolean).map(decodeURIComponent);
  const load = screens[/** @type {keyof typeof screens} */ (name)] || screens.live;
  if (stopScreen) stopScreen();
  stopScreen = null;
  const main = /** @type {HTMLElement} */ (document.getElementById("view"));
  const box = document.createElement("div"); // a screen still loading writes in its own
  main.replaceChildren(box);
  delete main.dataset.ready;
  main.dataset.screen = name || "live";
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.getAttribute("href") === `#/${name || "live"}`;
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  say("");
  try {
    const screen = await load();
    const stop = await screen.render(box, args, new URLSearchParams(search || ""));
    if (mine !== routes) { stop(); return; }
    stopScreen = stop;
    main.dataset.ready = "true";
  } catch (error) {
    if (mine === routes) say(`this screen failed: ${error instanceof Error ? error.message : error}`, true);
  }
  document.title = `Tidzam — ${name || "live"}`;
}

function showLogin() {
  const signedIn = token() !== "";
  /** @type {HTMLElement} */ (document.getElementById("who")).textContent =
    signedIn ? "signed in" : "";
  /** @type {HTMLElement} */ (document.getElementById("logout")).hidden = !signedIn;
  for (const id of ["token", "token-label", "signin"]) {
    /** @type {HTMLElement} */ (document.getElementById(id)).hidden = signedIn;
  }
}

document.getElementById("login")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ (document.getElementById("token"));
  localStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  socket.disconnect();
  socket = connect();
  showLogin();
  route();
});
document.getElementById("logout")?.addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  socket.disconnect();
  socket = connect();
  showLogin();
  route();
});
window.addEventListener("hashchange", route);
showLogin();
route();
