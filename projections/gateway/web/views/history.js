// @ts-check
// History: detections per label over a chosen range and channel, a stacked chart that
// zooms (drag across it, or the buttons), and exports of what is on screen as CSV,
// a Raven selection table or Audacity labels (times from the range's start).
import { api, download, el, hue, say, svg } from "/web/app.js";

const WIDTH = 800, HEIGHT = 200, BINS = 60;

/**
 * @param {HTMLElement} main
 * @param {string[]} _args
 * @param {URLSearchParams} query
 */
export async function render(main, _args, query) {
  let until = query.get("until") ? Date.parse(/** @type {string} */ (query.get("until"))) : NaN;
  let since = query.get("since") ? Date.parse(/** @type {string} */ (query.get("since"))) : NaN;
  if (Number.isNaN(until)) {
    const newest = await api("/api/detections?limit=1&newest=true");
    until = newest[0] ? Date.parse(newest[0].end) + 1000 : Date.now();
  }
  if (Number.isNaN(since)) since = until - 24 * 3600 * 1000;
  const field = (/** @type {string} */ id, /** @type {string} */ text, value = "") => [
    el("label", { for: id }, text), el("input", { id, name: id, value, size: 10 })];
  const form = el("form", { class: "filters", "aria-label": "What to show" },
    ...field("source", "Source", query.get("source") || ""),
    ...field("channel", "Channel", query.get("channel") || ""),
    ...field("label", "Label", query.get("label") || ""),
    el("button", { type: "submit" }, "Show"));
  const chart = el("div", { class: "chart-box" });
  const range = el("p", { class: "range" });
  const table = el("tbody");
  const exports = el("div", { class: "controls", role: "group", "aria-label": "Export" });
  main.append(el("h1", {}, "History"), form, range,
    el("div", { class: "controls", role: "group", "aria-label": "Zoom" },
      el("button", { type: "button", onclick: () => zoom(0.5) }, "Zoom in"),
      el("button", { type: "button", onclick: () => zoom(2) }, "Zoom out"),
      el("button", { type: "button", onclick: () => shift(-1) }, "← Earlier"),
      el("button", { type: "button", onclick: () => shift(1) }, "Later →")),
    chart, exports,
    el("table", {}, el("thead", {}, el("tr", {}, ...["time (UTC)", "source", "channel", "label", "confidence"].map((h) => el("th", { scope: "col" }, h)))), table));

  /** @type {any[]} */
  let rows = [];
  function value(/** @type {string} */ id) {
    return /** @type {HTMLInputElement} */ (form.querySelector(`#${id}`)).value.trim();
  }
  function zoom(/** @type {number} */ factor) {
    const mid = (since + until) / 2, half = ((until - since) * factor) / 2;
    since = mid - half; until = mid + half; load();
  }
  function shift(/** @type {number} */ sign) {
    const width = until - since; since += sign * width / 2; until += sign * width / 2; load();
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

  async function load() {
    const params = new URLSearchParams({ since: new Date(since).toISOString(), until: new Date(until).toISOString(), limit: "10000" });
    for (const id of ["source", "channel", "label"]) if (value(id)) params.set(id, value(id));
    try {
      rows = await api(`/api/detections?${params}`);
    } catch (error) {
      say(`history: ${error instanceof Error ? error.message : error}`, true);
      return;
    }
    range.textContent = `${rows.length}${rows.length === 10000 ? "+" : ""} detection(s) from ${new Date(since).toISOString().slice(0, 19)} to ${new Date(until).toISOString().slice(0, 19)} UTC`;
    drawChart();
    table.replaceChildren(...rows.slice(0, 200).map((r) => el("tr", {},
      el("td", {}, r.time.slice(0, 19).replace("T", " ")), el("td", {}, r.source), el("td", {}, String(r.channel)),
      el("td", {}, r.label), el("td", {}, r.confidence === null ? "—" : r.confidence.toFixed(2)))));
    exports.replaceChildren(
      el("button", { type: "button", onclick: toCsv }, "Export CSV"),
      el("button", { type: "button", onclick: toRaven }, "Export Raven table"),
      el("button", { type: "button", onclick: toAudacity }, "Export Audacity labels"));
  }

  function drawChart() {
    const bin = (until - since) / BINS;
    /** @type {Map<string, number[]>} */
    const counts = new Map();
    for (const r of rows) {
      const i = Math.min(BINS - 1, Math.floor((Date.parse(r.time) - since) / bin));
      if (i < 0) continue;
      const c = counts.get(r.label) || Array(BINS).fill(0);
      counts.set(r.label, c);
      c[i] += 1;
    }
    const totals = Array(BINS).fill(0);
    for (const c of counts.values()) c.forEach((n, i) => { totals[i] += n; });
    const max = Math.max(1, ...totals);
    const bars = [];
    const stacked = Array(BINS).fill(0);
    for (const [label, c] of [...counts].sort()) {
      c.forEach((n, i) => {
        if (!n) return;
        const h = (n / max) * (HEIGHT - 20);
        stacked[i] += h;
        bars.push(svg("rect", { x: (i * WIDTH) / BINS, y: HEIGHT - 20 - stacked[i], width: WIDTH / BINS - 1, height: h, fill: hue(label) },
          svg("title", {}, `${n} ${label}`)));
      });
    }
    const picture = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
      "aria-label": `detections per ${Math.round(bin / 60000)} min, stacked by label; drag across to zoom` },
      ...bars, svg("text", { x: 0, y: HEIGHT - 4, class: "tick" }, new Date(since).toISOString().slice(5, 16).replace("T", " ")),
      svg("text", { x: WIDTH, y: HEIGHT - 4, class: "tick", "text-anchor": "end" }, new Date(until).toISOString().slice(5, 16).replace("T", " ")));
    let from = -1;
    const at = (/** @type {PointerEvent} */ e) => since + ((e.offsetX / picture.getBoundingClientRect().width) * (until - since));
    picture.addEventListener("pointerdown", (e) => { from = at(/** @type {PointerEvent} */ (e)); });
    picture.addEventListener("pointerup", (e) => {
      const to = at(/** @type {PointerEvent} */ (e));
      if (from >= 0 && Math.abs(to - from) > (until - since) / 100) {
        since = Math.min(from, to); until = Math.max(from, to); load();
      }
      from = -1;
    });
    const legend = el("ul", { class: "legend" }, ...[...counts.keys()].sort().map((label) =>
      el("li", {}, el("span", { class: "chip", style: `background:${hue(label)}` }, label))));
    chart.replaceChildren(picture, legend);
  }

  const seconds = (/** @type {string} */ t) => ((Date.parse(t) - since) / 1000).toFixed(3);
  function toCsv() {
    download("detections.csv", ["time,end,source,channel,label,confidence,model_id,model_version",
      ...rows.map((r) => [r.time, r.end, r.source, r.channel, r.label, r.confidence ?? "", r.model_id, r.model_version].join(","))].join("\n") + "\n");
  }
  function toRaven() {
    download("detections.selections.txt", ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\tConfidence",
      ...rows.map((r, i) => [i + 1, "Spectrogram 1", r.channel + 1, seconds(r.time), seconds(r.end), 0, 24000, r.label, r.confidence ?? ""].join("\t"))].join("\n") + "\n", "text/tab-separated-values");
  }
  function toAudacity() {
    download("detections.labels.txt", rows.map((r) => `${seconds(r.time)}\t${seconds(r.end)}\t${r.label}`).join("\n") + "\n", "text/plain");
  }
  await load();
  return () => {};
}
