// @ts-check
// Live grid: every source and channel as a tile — current label and confidence (from the
// broadcast windows, as they arrive), level meter and health badges (ChannelHealth, polled),
// mixer state (gain, mute, pinned). A tile is a link to its channel view.
import { api, decision, el, hue, onWindows, say } from "/web/app.js";
// Times are the seed's "YYYY-MM-DD-HH-MM-SS.mmm" (UTC): they sort as text.

const LEVEL_FLOOR_DB = -90;

/** @param {HTMLElement} main */
export async function render(main) {
  const grid = el("div", { class: "grid", role: "list", "aria-label": "Channels" });
  const summary = el("p", { class: "summary" }, "loading…");
  main.append(el("h1", {}, "Live"), summary, grid);
  /** @type {Map<string, HTMLElement>} */
  const tiles = new Map();

  /** The tile of a channel, made on first sight (sorted by source, then channel). */
  function tile(source, channel) {
    const key = `${source}/${channel}`;
    let t = tiles.get(key);
    if (t) return t;
    t = el("a", { class: "tile", role: "listitem", href: `#/channel/${encodeURIComponent(source)}/${channel}`,
                  dataset: { source, channel: String(channel) },
                  "aria-label": `${source} channel ${channel}` },
      el("span", { class: "where" }, `${source} · ${channel}`),
      el("span", { class: "label" }, "—"),
      el("span", { class: "confidence" }, ""),
      el("span", { class: "meter", "aria-hidden": "true" }, el("span", { class: "fill" })),
      el("span", { class: "badges" }));
    tiles.set(key, t);
    const keys = [...tiles.keys()].sort((a, b) => {
      const [sa, ca] = a.split("/"); const [sb, cb] = b.split("/");
      return sa === sb ? Number(ca) - Number(cb) : sa.localeCompare(sb);
    });
    const after = keys.indexOf(key) + 1 < keys.length ? tiles.get(keys[keys.indexOf(key) + 1]) : null;
    grid.insertBefore(t, after || null);
    summary.textContent = `${tiles.size} channel(s)`;
    return t;
  }

  function setText(t, cls, text) {
    const node = /** @type {HTMLElement} */ (t.querySelector(`.${cls}`));
    if (node.textContent !== text) node.textContent = text;
  }

  /** Show a window's decision on its tile (a broadcast, or the newest one stored). */
  function show(source, channel, time, label, confidence, model) {
    const t = tile(source, channel);
    if (t.dataset.time && t.dataset.time > time) return; // never go back in time
    setText(t, "label", label);
    setText(t, "confidence", `${Math.round(confidence * 100)} %`);
    t.style.setProperty("--accent", hue(label));
    t.dataset.time = time;
    t.title = `${time} UTC · ${model}`;
    t.dataset.label = label;
  }

  const stop = onWindows((windows) => {
    for (const w of windows) {
      const { label, confidence } = decision(w);
      show(w.source, w.chan, w.analysis.time, label, confidence, w.analysis.model);
    }
  });
  api("/api/windows/latest").then((rows) => {
    for (const r of rows) {
      show(r.source, r.channel, r.time, r.result.join("+") || "unknown", r.confidence ?? 0,
           `${r.model_id}@${r.model_version}`);
    }
  }).catch((error) => say(`live grid: ${error instanceof Error ? error.message : error}`, true));

  async function refresh() {
    try {
      const [sources, mixer, health] = await Promise.all([
        api("/api/sources"), api("/api/mixer"), api("/api/health/latest")]);
      for (const s of sources) {
        if (s.state !== "loaded") continue;
        for (const c of s.channels || []) tile(s.name, c);
      }
      for (const m of mixer) {
        const t = tile(m.source, m.channel);
        const badges = [];
        if (m.muted) badges.push(["muted", "muted"]);
        else if (m.gain_db) badges.push([`${m.gain_db > 0 ? "+" : ""}${m.gain_db.toFixed(1)} dB`, "gain"]);
        if (m.pinned) badges.push(["manual", "pinned"]);
        t.dataset.mixer = badges.map((b) => b[1]).join(" ");
        setBadges(t, "mixer", badges);
      }
      for (const h of health) {
        const t = tile(h.source, h.channel);
        const level = h.rms_dbfs === null ? LEVEL_FLOOR_DB : h.rms_dbfs;
        const fill = /** @type {HTMLElement} */ (t.querySelector(".fill"));
        fill.style.width = `${Math.max(0, Math.min(100, (1 - level / LEVEL_FLOOR_DB) * 100))}%`;
        const badges = [];
        if (h.dead) badges.push(["dead", "dead"]);
        if (h.clip_ratio > 0.001) badges.push(["clipping", "clipping"]);
        if (h.hum_db !== null && h.hum_db > 10) badges.push([`hum ${h.hum_hz} Hz`, "hum"]);
        setBadges(t, "health", badges);
        t.dataset.level = level.toFixed(1);
      }
      if (!tiles.size) summary.textContent = "no channel yet: load a source (Models & sources) or replay a recording";
    } catch (error) {
      say(`live grid: ${error instanceof Error ? error.message : error}`, true);
    }
  }

  /** The badges of one kind on a tile. */
  function setBadges(t, kind, badges) {
    const box = /** @type {HTMLElement} */ (t.querySelector(".badges"));
    for (const old of box.querySelectorAll(`[data-kind="${kind}"]`)) old.remove();
    for (const [text, cls] of badges) box.append(el("span", { class: `badge ${cls}`, dataset: { kind } }, text));
  }

  await refresh();
  const timer = setInterval(refresh, 5000);
  return () => { stop(); clearInterval(timer); };
}
