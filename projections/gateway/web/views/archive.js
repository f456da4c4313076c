// @ts-check
// Archive player: pick a database (an archive folder) and a time; the archive plays through
// the pipeline as a source (the seed's `loadsource` with a date), and its channels open in
// the channel view, spectrogram and decisions following.
import { api, el, say } from "/web/app.js";

/** "YYYY-MM-DD-HH-MM-SS" (the seed's date) of a datetime-local value taken as UTC. */
function seedDate(value) {
  return value.replace("T", "-").replaceAll(":", "-").slice(0, 19).padEnd(19, "-00").slice(0, 19);
}

/** @param {HTMLElement} main */
export async function render(main) {
  const databases = await api("/api/databases");
  const names = Object.keys(databases).sort();
  main.append(el("h1", {}, "Archive player"));
  if (!names.length) {
    main.append(el("p", {}, "No archive yet: the archiver writes one folder per source under TIDZAM_ARCHIVE_DIR."));
    return () => {};
  }
  const select = /** @type {HTMLSelectElement} */ (el("select", { id: "database" },
    ...names.map((n) => el("option", { value: n }, n))));
  const when = /** @type {HTMLInputElement} */ (el("input", { id: "when", type: "datetime-local", step: "1" }));
  const ranges = el("ul", { class: "ranges" });
  const result = el("div", { "aria-live": "polite" });

  function showRanges() {
    const db = databases[select.value];
    ranges.replaceChildren(...db.database.map((/** @type {string[]} */ [a, b]) => el("li", {},
      el("button", { type: "button", onclick: () => { when.value = a.slice(0, 19); } }, a.slice(0, 19).replace("T", " ")),
      ` → ${b.slice(0, 19).replace("T", " ")} UTC`)));
    if (db.database.length) when.value = db.database[0][0].slice(0, 19);
  }
  select.addEventListener("change", showRanges);

  const form = el("form", { class: "filters", "aria-label": "Play an archive" },
    el("label", { for: "database" }, "Database"), select,
    el("label", { for: "when" }, "From (UTC)"), when,
    el("button", { type: "submit" }, "Play through the pipeline"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = `${select.value}-replay`;
    try {
      await api("/api/sources", { method: "POST", body: { name, database: select.value, date: seedDate(when.value) } });
      const channels = databases[select.value].nb_channels || 1;
      result.replaceChildren(el("p", {}, `${name} is loading; its channels:`),
        el("ul", {}, ...[...Array(channels).keys()].map((c) => el("li", {}, el("a", { href: `#/channel/${encodeURIComponent(name)}/${c}` }, `${name} · ${c}`)))),
        el("button", { type: "button", onclick: async () => {
          try { await api(`/api/sources/${encodeURIComponent(name)}`, { method: "DELETE" }); say(`${name} unloaded`); } catch (error) { say(String(error), true); }
        } }, `Stop ${name}`));
    } catch (error) {
      say(`archive: ${error instanceof Error ? error.message : error}`, true);
    }
  });
  main.append(form, el("h2", {}, "Recorded ranges"), ranges, result);
  showRanges();
  return () => {};
}
