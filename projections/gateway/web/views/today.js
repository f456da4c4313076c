// @ts-check
// Today at a glance: per source, a label × hour heatmap of detections (clickable to them),
// with sunrise and sunset when the site is set; and a channels × hour heatmap of noise
// floor and detections. The day is UTC; it starts on the newest day with detections.
import { api, el, say } from "/web/app.js";

const HOURS = [...Array(24).keys()];

/** Sunrise and sunset in UTC hours (NOAA's approximation), or null at the poles. */
export function sun(day, lat, lon) {
  const rad = Math.PI / 180;
  const n = Math.floor((Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate()) -
    Date.UTC(day.getUTCFullYear(), 0, 0)) / 86400000);
  const g = (2 * Math.PI / 365) * (n - 1);
  const decl = 0.006918 - 0.399912 * Math.cos(g) + 0.070257 * Math.sin(g) - 0.006758 * Math.cos(2 * g)
    + 0.000907 * Math.sin(2 * g) - 0.002697 * Math.cos(3 * g) + 0.00148 * Math.sin(3 * g);
  const eqt = 229.18 * (0.000075 + 0.001868 * Math.cos(g) - 0.032077 * Math.sin(g)
    - 0.014615 * Math.cos(2 * g) - 0.040849 * Math.sin(2 * g));
  const cosH = (Math.cos(90.833 * rad) / (Math.cos(lat * rad) * Math.cos(decl))) - Math.tan(lat * rad) * Math.tan(decl);
  if (cosH < -1 || cosH > 1) return null;
  const h = Math.acos(cosH) / rad;
  return { rise: (720 - 4 * (lon + h) - eqt) / 60, set: (720 - 4 * (lon - h) - eqt) / 60 };
}

/** A cell's colours for a share 0..1 of the largest count (or level): the text turns
 *  white on the darker cells, to stay readable. */
function shade(share) {
  if (share <= 0) return "background:transparent";
  const bg = `rgb(${Math.round(255 - 200 * share)} ${Math.round(255 - 120 * share)} ${Math.round(255 - 40 * share)})`;
  return `background:${bg};color:${share > 0.55 ? "#fff" : "#14201a"}`;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} _args
 * @param {URLSearchParams} query
 */
export async function render(main, _args, query) {
  let dayText = query.get("day");
  if (!dayText) {
    const newest = await api("/api/detections?limit=1&newest=true");
    dayText = (newest[0] ? newest[0].time : new Date().toISOString()).slice(0, 10);
  }
  const day = new Date(`${dayText}T00:00:00Z`);
  const since = day.toISOString(), until = new Date(day.getTime() + 86400000).toISOString();
  const picker = /** @type {HTMLInputElement} */ (el("input", { id: "day", type: "date", value: dayText }));
  picker.addEventListener("change", () => { location.hash = `#/today?day=${picker.value}`; });
  main.append(el("h1", {}, "Today at a glance"),
    el("p", {}, el("label", { for: "day" }, "Day (UTC) "), picker));
  const [hourly, channels, site] = await Promise.all([
    api(`/api/detections/hourly?since=${since}&until=${until}&limit=10000`),
    api(`/api/channels/hourly?since=${since}&until=${until}`), api("/api/site")]);
  const light = site.lat === null || site.lon === null ? null : sun(day, site.lat, site.lon);

  /** @type {Map<string, Map<string, number[]>>} source → label → counts per hour */
  const bySource = new Map();
  for (const r of hourly) {
    const labels = bySource.get(r.source) || new Map();
    bySource.set(r.source, labels);
    const counts = labels.get(r.label) || HOURS.map(() => 0);
    labels.set(r.label, counts);
    counts[new Date(r.bucket).getUTCHours()] += r.count;
  }
  if (!bySource.size) main.append(el("p", {}, "No detection on this day."));
  for (const [source, labels] of [...bySource].sort()) {
    const max = Math.max(1, ...[...labels.values()].flat());
    const head = el("tr", {}, el("th", { scope: "col" }, "label"),
      ...HOURS.map((h) => el("th", { scope: "col", class: light && (h < Math.floor(light.rise) || h > Math.floor(light.set)) ? "night" : "" }, String(h).padStart(2, "0"))));
    const rows = [...labels].sort().map(([label, counts]) => el("tr", {},
      el("th", { scope: "row" }, label),
      ...counts.map((count, h) => el("td", { style: shade(count / max) },
        count ? el("a", { href: `#/history?source=${encodeURIComponent(source)}&label=${encodeURIComponent(label)}&since=${new Date(day.getTime() + h * 3600000).toISOString()}&until=${new Date(day.getTime() + (h + 1) * 3600000).toISOString()}`,
                         title: `${count} ${label} at ${h}h UTC`, "aria-label": `${count} ${label} at ${h} hours` }, String(count)) : ""))));
    main.append(el("section", { class: "heat" }, el("h2", {}, source),
      light ? el("p", { class: "sun" }, `sunrise ${fmtHour(light.rise)}, sunset ${fmtHour(light.set)} UTC (shaded hours are night)`) : null,
      el("div", { class: "scroll" }, el("table", { class: "heatmap", "aria-label": `detections per label and hour, ${source}` }, el("thead", {}, head), el("tbody", {}, ...rows)))));
  }

  // channels × hours: noise floor (colour) and detections (number)
  /** @type {Map<string, {floor: (number|null)[], det: number[]}>} */
  const byChannel = new Map();
  for (const r of channels) {
    const key = `${r.source} · ${r.channel}`;
    const row = byChannel.get(key) || { floor: HOURS.map(() => null), det: HOURS.map(() => 0) };
    byChannel.set(key, row);
    const h = new Date(r.bucket).getUTCHours();
    row.floor[h] = r.noise_floor_dbfs;
    row.det[h] = r.detections;
  }
  if (byChannel.size) {
    const rows = [...byChannel].map(([key, row]) => el("tr", {}, el("th", { scope: "row" }, key),
      ...HOURS.map((h) => {
        const floor = row.floor[h];
        const share = floor === null ? 0 : Math.min(1, Math.max(0, (floor + 90) / 60));
        return el("td", { style: shade(share), title: `${floor === null ? "no level" : `noise floor ${floor.toFixed(1)} dBFS`}, ${row.det[h]} detection(s)` }, row.det[h] ? String(row.det[h]) : "");
      })));
    main.append(el("section", { class: "heat" }, el("h2", {}, "Channels: noise floor and detections"),
      el("p", {}, "Colour: mean noise floor (darker is louder, −90 to −30 dBFS); number: detections in the hour."),
      el("div", { class: "scroll" }, el("table", { class: "heatmap", "aria-label": "noise floor and detections per channel and hour" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "channel"), ...HOURS.map((h) => el("th", { scope: "col" }, String(h).padStart(2, "0"))))),
        el("tbody", {}, ...rows)))));
  }
  say("");
  return () => {};
}

function fmtHour(hours) {
  const h = ((hours % 24) + 24) % 24;
  return `${String(Math.floor(h)).padStart(2, "0")}:${String(Math.floor((h % 1) * 60)).padStart(2, "0")}`;
}
