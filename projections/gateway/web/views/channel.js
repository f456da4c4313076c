// @ts-check
// Channel view: a scrolling spectrogram computed by the gateway with the window decisions
// drawn over it, listening, the last detections, the level history, and the mixer.
import { api, blobUrl, decision, el, hue, onWindows, say, svg } from "/web/app.js";

const SECONDS = 20;

/** Milliseconds of the seed's time "YYYY-MM-DD-HH-MM-SS.mmm" (UTC). */
function seedMs(text) {
  const [y, mo, d, h, mi, s] = text.split("-");
  return Date.UTC(+y, +mo - 1, +d, +h, +mi, 0) + parseFloat(s) * 1000;
}

/**
 * @param {HTMLElement} main
 * @param {string[]} args source, channel
 */
export async function render(main, [source, channelText]) {
  const channel = Number(channelText);
  const base = `${encodeURIComponent(source)}/${channel}`;
  const image = el("img", { class: "spectrogram", alt: `spectrogram of the last ${SECONDS} s` });
  const overlay = el("div", { class: "decisions", "aria-hidden": "true" });
  const axis = el("div", { class: "axis" });
  const player = /** @type {HTMLAudioElement} */ (el("audio", { controls: true }));
  const stream = el("p", {});
  const detections = el("tbody");
  const levels = el("div", { class: "levels" });
  const mixerState = el("p", { class: "mixer-state" }, "—");
  const gain = /** @type {HTMLInputElement} */ (el("input", {
    id: "gain", type: "range", min: "-40", max: "20", step: "1", value: "0" }));
  const gainValue = el("output", { for: "gain" }, "0 dB");
  gain.addEventListener("input", () => { gainValue.textContent = `${gain.value} dB`; });

  /** @param {Record<string, unknown>} body */
  async function mixer(body) {
    try {
      await api(`/api/mixer/${base}`, { method: "POST", body });
      say(`mixer: ${body.action} sent`);
      setTimeout(refreshMixer, 800);
    } catch (error) {
      say(`mixer: ${error instanceof Error ? error.message : error}`, true);
    }
  }

  main.append(
    el("h1", {}, `${source} · channel ${channel}`),
    el("p", {}, el("a", { href: "#/live" }, "← all channels")),
    el("section", { "aria-label": "Spectrogram" },
      el("div", { class: "spectro" }, image, overlay), axis),
    el("section", { class: "cols" },
      el("div", {},
        el("h2", {}, "Mixer"), mixerState,
        el("div", { class: "controls", role: "group", "aria-label": "Mixer controls" },
          el("label", { for: "gain" }, "Gain"), gain, gainValue,
          el("button", { type: "button", onclick: () => mixer({ action: "gain", gain_db: Number(gain.value), reason: "dashboard" }) }, "Set gain"),
          el("button", { type: "button", onclick: () => mixer({ action: "mute", reason: "dashboard" }) }, "Mute"),
          el("button", { type: "button", onclick: () => mixer({ action: "unmute", reason: "dashboard" }) }, "Unmute"),
          el("button", { type: "button", onclick: () => mixer({ action: "auto" }) }, "Automatic")),
        el("h2", {}, "Listen"),
        el("button", { type: "button", onclick: listen }, `Play the last ${SECONDS} s`), player, stream),
      el("div", {},
        el("h2", {}, "Last detections"),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "time (UTC)"), el("th", {}, "label"), el("th", {}, "confidence"))), detections))),
    el("section", { "aria-label": "Level history" }, el("h2", {}, "Level (dBFS)"), levels));

  /** @type {{start: number, label: string}[]} */
  let seen = [];
  let span = { start: 0, end: 0 };

  function draw() {
    overlay.replaceChildren();
    const width = span.end - span.start;
    if (width <= 0) return;
    seen = seen.filter((w) => w.start >= span.start - 5000).slice(-400);
    for (let i = 0; i < seen.length; i++) {
      const w = seen[i];
      const next = i + 1 < seen.length ? seen[i + 1].start : w.start + 1000;
      const left = ((w.start - span.start) / width) * 100;
      const right = ((Math.min(next, span.end) - span.start) / width) * 100;
      if (right <= 0 || left >= 100) continue;
      overlay.append(el("span", { class: "decision", title: w.label,
        style: `left:${Math.max(0, left)}%;width:${Math.max(0.3, right - Math.max(0, left))}%;background:${hue(w.label)}` },
        w.label === "unknown" ? "" : w.label));
    }
  }

  async function refreshSpectrogram() {
    try {
      const response = await api(`/api/spectrogram/${base}?seconds=${SECONDS}&width=800`, { raw: true });
      span = { start: Number(response.headers.get("X-Tidzam-Start-Ns")) / 1e6,
               end: Number(response.headers.get("X-Tidzam-End-Ns")) / 1e6 };
      const old = image.getAttribute("src");
      image.setAttribute("src", URL.createObjectURL(await response.blob()));
      if (old) URL.revokeObjectURL(old);
      axis.textContent = `${new Date(span.start).toISOString().slice(11, 19)} — ${new Date(span.end).toISOString().slice(11, 19)} UTC · 0–24 kHz`;
      draw();
    } catch (error) {
      axis.textContent = `no spectrogram: ${error instanceof Error ? error.message : error}`;
    }
  }

  async function listen() {
    try {
      const old = player.src;
      player.src = await blobUrl(`/api/listen/${base}?seconds=${SECONDS}`);
      if (old) URL.revokeObjectURL(old);
      await player.play();
    } catch (error) {
      say(`listen: ${error instanceof Error ? error.message : error}`, true);
    }
  }

  async function refreshDetections() {
    const rows = await api(`/api/detections?source=${encodeURIComponent(source)}&channel=${channel}&limit=15&newest=true`);
    detections.replaceChildren(...rows.map((/** @type {any} */ r) => el("tr", {},
      el("td", {}, r.time.slice(0, 19).replace("T", " ")),
      el("td", {}, el("span", { class: "chip", style: `background:${hue(r.label)}` }, r.label)),
      el("td", {}, r.confidence === null ? "—" : `${Math.round(r.confidence * 100)} %`))));
  }

  async function refreshMixer() {
    const rows = await api("/api/mixer");
    const m = rows.find((/** @type {any} */ r) => r.source === source && r.channel === channel);
    mixerState.textContent = !m ? "untouched: 0 dB, automatic"
      : `${m.muted ? "muted" : `${m.gain_db.toFixed(1)} dB`}${m.pinned ? ", set by a person" : ", automatic"}${m.last_reason ? ` — ${m.last_reason}` : ""}`;
  }

  async function refreshLevels() {
    if (!span.end) return;
    const since = new Date(span.end - 10 * 60 * 1000).toISOString();
    const rows = await api(`/api/health?source=${encodeURIComponent(source)}&channel=${channel}&since=${since}&limit=600`);
    const points = rows.filter((/** @type {any} */ r) => r.rms_dbfs !== null);
    if (!points.length) { levels.textContent = "no level measured yet"; return; }
    const t0 = Date.parse(points[0].time), t1 = Date.parse(points[points.length - 1].time) || t0 + 1;
    const x = (/** @type {string} */ t) => ((Date.parse(t) - t0) / Math.max(1, t1 - t0)) * 600;
    const y = (/** @type {number} */ db) => (Math.min(0, Math.max(-90, db)) / -90) * 100;
    const line = points.map((/** @type {any} */ p) => `${x(p.time).toFixed(1)},${y(p.rms_dbfs).toFixed(1)}`).join(" ");
    levels.replaceChildren(svg("svg", { viewBox: "0 0 600 100", class: "chart", role: "img",
      "aria-label": `level of the last ${points.length} seconds` },
      svg("polyline", { points: line, fill: "none", stroke: "currentColor", "stroke-width": 1.5 })));
  }

  const stop = onWindows((windows) => {
    let mine = false;
    for (const w of windows) {
      if (w.source !== source || w.chan !== channel) continue;
      seen.push({ start: seedMs(w.analysis.time), label: decision(w).label });
      mine = true;
    }
    if (mine) draw();
  });
  const safely = (/** @type {() => Promise<void>} */ f) => f().catch((e) => say(String(e), true));
  api("/api/site").then((site) => {
    // the live mount of the whole source (every channel), only when the stack runs Icecast
    if (site.icecast) stream.replaceChildren(el("a", { href: `${site.icecast}/${encodeURIComponent(source)}.ogg`, target: "_blank", rel: "noopener" }, "Live stream of the source (Icecast)"));
  }).catch(() => {});
  await Promise.all([refreshSpectrogram(), safely(refreshDetections), safely(refreshMixer)]);
  await safely(refreshLevels);
  const timers = [setInterval(refreshSpectrogram, 2000), setInterval(() => safely(refreshDetections), 5000),
                  setInterval(() => safely(refreshLevels), 10000), setInterval(() => safely(refreshMixer), 5000)];
  return () => { stop(); timers.forEach(clearInterval); };
}
