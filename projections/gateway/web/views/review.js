// @ts-check
// Review: the extracted samples as spectrogram tiles with play buttons, one class at a
// time or every class, newest or most uncertain first. Keys on the focused tile:
// a accept, r relabel, d discard, s skip, u undo, p play, arrows move. Each decision is a
// SampleLabelled event (POST /api/samples/{id}/label).
import { api, blobUrl, el, say } from "/web/app.js";

/** @param {HTMLElement} main
 *  @param {string[]} _args
 *  @param {URLSearchParams} query */
export async function render(main, _args, query) {
  const info = await api("/api/samples/info");
  const classes = [...new Set(info.map((/** @type {any} */ r) => r.label))].sort();
  const reviewedBefore = info.reduce((n, /** @type {any} */ r) => n + r.reviewed, 0);
  const chosen = query.get("label") || "";
  const order = query.get("order") || "newest";
  const select = /** @type {HTMLSelectElement} */ (el("select", { id: "class" },
    el("option", { value: "" }, "every class"),
    ...classes.map((c) => el("option", { value: c, selected: c === chosen }, c))));
  const sort = /** @type {HTMLSelectElement} */ (el("select", { id: "order" },
    el("option", { value: "newest", selected: order === "newest" }, "newest first"),
    el("option", { value: "uncertain", selected: order === "uncertain" }, "least certain first")));
  const go = () => { location.hash = `#/review?label=${encodeURIComponent(select.value)}&order=${sort.value}`; };
  select.addEventListener("change", go);
  sort.addEventListener("change", go);
  const progress = el("p", { class: "progress", "aria-live": "polite" });
  const grid = el("div", { class: "grid review", role: "list", "aria-label": "Samples to review" });
  const labels = el("datalist", { id: "known-labels" }, ...classes.map((c) => el("option", { value: c })));
  main.append(el("h1", {}, "Review"),
    el("p", { class: "filters" }, el("label", { for: "class" }, "Class "), select, " ", el("label", { for: "order" }, "Order "), sort),
    el("p", { class: "keys" }, "Keys: a accept · r relabel · d discard · s skip · u undo · p play · arrows move"),
    progress, grid, labels);

  const params = new URLSearchParams({ unchecked: "true", limit: "48" });
  if (chosen) params.set("label", chosen);
  /** @type {any[]} */
  let samples = await api(`/api/samples?${params}`);
  if (order === "uncertain") samples = samples.sort((a, b) => (a.confidence ?? 0) - (b.confidence ?? 0));
  /** @type {{id: string, tile: HTMLElement}[]} */
  const done = [];
  const urls = [];

  function showProgress() {
    progress.textContent = `${done.length} of ${samples.length} reviewed here · ${reviewedBefore + done.length} reviewed samples would join a retraining (tidzam_ctl dataset from-samples)`;
  }

  /** @param {any} s */
  function tile(s) {
    const image = el("img", { alt: `spectrogram of sample ${s.sample_id}`, width: 300, height: 128 });
    blobUrl(`/api/samples/${encodeURIComponent(s.sample_id)}/spectrogram`).then((u) => { urls.push(u); image.setAttribute("src", u); }).catch(() => { image.setAttribute("alt", "no spectrogram"); });
    const player = /** @type {HTMLAudioElement} */ (el("audio", { preload: "none" }));
    const verdict = el("span", { class: "verdict" });
    const t = el("div", { class: "tile sample", role: "listitem", tabindex: 0, dataset: { id: s.sample_id },
      "aria-label": `sample ${s.label} ${Math.round((s.confidence ?? 0) * 100)} percent, ${s.source} channel ${s.channel}` },
      image,
      el("span", { class: "label" }, s.label || "unknown"),
      el("span", { class: "confidence" }, s.confidence === null ? "" : `${Math.round(s.confidence * 100)} %`),
      el("span", { class: "where" }, `${s.source} · ${s.channel} · ${String(s.time).slice(0, 19).replace("T", " ")}`),
      el("span", { class: "controls" },
        el("button", { type: "button", onclick: () => play(), "aria-label": "play" }, "▶ Play"),
        el("button", { type: "button", onclick: () => decide(t, s, { accept: true }) }, "Accept"),
        el("button", { type: "button", onclick: () => relabel(t, s) }, "Relabel"),
        el("button", { type: "button", onclick: () => decide(t, s, { discard: true }) }, "Discard")),
      verdict, player);
    async function play() {
      try {
        if (!player.src) { const u = await blobUrl(`/api/samples/${encodeURIComponent(s.sample_id)}/audio`); urls.push(u); player.src = u; }
        await player.play();
      } catch (error) { say(`play: ${error instanceof Error ? error.message : error}`, true); }
    }
    t.addEventListener("keydown", (e) => {
      const key = /** @type {KeyboardEvent} */ (e).key;
      if (/** @type {HTMLElement} */ (e.target).tagName === "INPUT") return;
      const actions = { a: () => decide(t, s, { accept: true }), d: () => decide(t, s, { discard: true }),
        r: () => relabel(t, s), s: () => move(t, 1), p: play, u: undo,
        ArrowRight: () => move(t, 1), ArrowDown: () => move(t, 1), ArrowLeft: () => move(t, -1), ArrowUp: () => move(t, -1) };
      const act = actions[/** @type {keyof typeof actions} */ (key)];
      if (act) { e.preventDefault(); act(); }
    });
    return t;
  }

  function move(/** @type {HTMLElement} */ t, /** @type {number} */ step) {
    const tiles = [...grid.querySelectorAll(".tile")];
    const next = /** @type {HTMLElement | undefined} */ (tiles[tiles.indexOf(t) + step]);
    if (next) next.focus();
  }

  async function decide(/** @type {HTMLElement} */ t, /** @type {any} */ s, /** @type {Record<string, unknown>} */ body) {
    try {
      const answer = await api(`/api/samples/${encodeURIComponent(s.sample_id)}/label`, { method: "POST", body });
      t.classList.add("reviewed");
      /** @type {HTMLElement} */ (t.querySelector(".verdict")).textContent = `→ ${answer.label}`;
      t.dataset.verdict = answer.label;
      if (!done.some((d) => d.id === s.sample_id)) done.push({ id: s.sample_id, tile: t });
      showProgress();
      move(t, 1);
    } catch (error) {
      say(`review: ${error instanceof Error ? error.message : error}`, true);
    }
  }

  function relabel(/** @type {HTMLElement} */ t, /** @type {any} */ s) {
    const input = /** @type {HTMLInputElement} */ (el("input", { list: "known-labels", "aria-label": "new label", class: "relabel" }));
    const form = el("form", {}, input, el("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", (e) => { e.preventDefault(); form.remove(); decide(t, s, { label: input.value.trim() }); t.focus(); });
    input.addEventListener("keydown", (e) => { if (/** @type {KeyboardEvent} */ (e).key === "Escape") { form.remove(); t.focus(); } });
    t.append(form);
    input.focus();
  }

  async function undo() {
    const last = done.pop();
    if (!last) { say("nothing to undo"); return; }
    try {
      await api(`/api/samples/${encodeURIComponent(last.id)}/label`, { method: "POST", body: { withdraw: true } });
      last.tile.classList.remove("reviewed");
      /** @type {HTMLElement} */ (last.tile.querySelector(".verdict")).textContent = "";
      delete last.tile.dataset.verdict;
      last.tile.focus();
      showProgress();
    } catch (error) {
      done.push(last);
      say(`undo: ${error instanceof Error ? error.message : error}`, true);
    }
  }

  grid.append(...samples.map(tile));
  if (!samples.length) grid.append(el("p", {}, "Nothing to review: every extracted sample of this class is reviewed."));
  showProgress();
  /** @type {HTMLElement | null} */ (grid.querySelector(".tile"))?.focus();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
