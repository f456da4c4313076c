// @ts-check
// Models and sources: the deployed model and version per classifier, every registry
// version with its held-out metrics per class, deploy and roll back (control token); the
// sources with their state, attempts and errors, loaded and unloaded (control token).
import { api, el, say } from "/web/app.js";

const pct = (/** @type {number | null} */ v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)} %`);

/** @param {HTMLElement} main */
export async function render(main) {
  const [classifiers, sources] = await Promise.all([api("/api/classifiers"), api("/api/sources")]);
  /** @type {any[]} */
  let models = [];
  let registryNote = "";
  try {
    models = await api("/api/models");
  } catch (error) {
    registryNote = `The registry could not be read: ${error instanceof Error ? error.message : error}`;
  }
  const act = async (/** @type {string} */ path, /** @type {unknown} */ body, /** @type {string} */ done) => {
    try {
      const answer = await api(path, { method: "POST", body });
      say(answer.message || done);
      setTimeout(() => window.dispatchEvent(new HashChangeEvent("hashchange")), 500);
    } catch (error) {
      say(`${error instanceof Error ? error.message : error}`, true);
    }
  };

  main.append(el("h1", {}, "Models & sources"), el("h2", {}, "Deployed"),
    el("table", { "aria-label": "deployed models" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "model"), el("th", { scope: "col" }, "version"), el("th", { scope: "col" }, "classes"), el("th", { scope: "col" }, ""))),
      el("tbody", {}, ...classifiers.map((/** @type {any} */ c) => el("tr", {}, el("td", {}, c.name), el("td", {}, c.version),
        el("td", {}, String(c.labels.length)),
        el("td", {}, el("button", { type: "button", onclick: () => act(`/api/models/${encodeURIComponent(c.name)}/rollback`, {}, "rolled back") }, "Roll back")))))));

  main.append(el("h2", {}, "Registry"));
  if (registryNote) main.append(el("p", { class: "error" }, registryNote));
  for (const m of models) {
    const metrics = Object.entries(m.per_class || {}).sort();
    main.append(el("details", { class: "model" },
      el("summary", {}, `${m.model_id}@${m.version}`, m.deployed ? el("strong", { class: "badge ok" }, "deployed") : "",
        ` · accuracy ${pct(m.accuracy)} · balanced ${pct(m.balanced_accuracy)}`, m.problem ? el("span", { class: "error" }, ` — ${m.problem}`) : ""),
      el("p", {}, `${m.builtin ? "built in" : "added"}${m.created ? `, created ${m.created.slice(0, 10)}` : ""}; ${m.labels ?? "?"} classes`,
        " ", m.deployed || m.problem ? "" : el("button", { type: "button", onclick: () => act("/api/models/deploy", { model: `${m.model_id}@${m.version}` }, "deployed") }, `Deploy ${m.version}`)),
      metrics.length ? el("table", { "aria-label": `held-out metrics of ${m.model_id}@${m.version}` },
        el("thead", {}, el("tr", {}, ...["class", "precision", "recall", "F1", "support"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...metrics.map(([label, c]) => el("tr", {}, el("td", {}, label),
          el("td", {}, c.precision.toFixed(3)), el("td", {}, c.recall.toFixed(3)), el("td", {}, c.f1.toFixed(3)), el("td", {}, String(c.support))))))
        : el("p", {}, "no held-out metrics recorded")));
  }

  const name = /** @type {HTMLInputElement} */ (el("input", { id: "src-name", required: true, size: 12 }));
  const url = /** @type {HTMLInputElement} */ (el("input", { id: "src-url", required: true, size: 30, placeholder: "http://host:8000/stream.ogg" }));
  const channels = /** @type {HTMLInputElement} */ (el("input", { id: "src-channels", size: 6, placeholder: "0,1" }));
  const load = el("form", { class: "filters", "aria-label": "Load a source" },
    el("label", { for: "src-name" }, "Name"), name, el("label", { for: "src-url" }, "URL"), url,
    el("label", { for: "src-channels" }, "Channels"), channels, el("button", { type: "submit" }, "Load"));
  load.addEventListener("submit", async (e) => {
    e.preventDefault();
    /** @type {Record<string, unknown>} */
    const body = { name: name.value.trim(), url: url.value.trim(), is_permanent: true };
    if (channels.value.trim()) body.channels = channels.value.trim();
    try { await api("/api/sources", { method: "POST", body }); say(`${body.name} asked to load`); } catch (error) { say(String(error), true); }
  });
  main.append(el("h2", {}, "Sources"), el("table", { "aria-label": "sources" },
    el("thead", {}, el("tr", {}, ...["name", "kind", "channels", "state", "since", "attempts", "last error", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...sources.map((/** @type {any} */ s) => el("tr", { dataset: { source: s.name } },
      el("td", {}, s.name), el("td", {}, s.kind || ""), el("td", {}, (s.channels || []).join(",")),
      el("td", { class: `state ${s.state}` }, s.state), el("td", {}, String(s.since).slice(0, 19).replace("T", " ")),
      el("td", {}, String(s.attempts ?? "")), el("td", { class: "error" }, s.last_error || ""),
      el("td", {}, s.state === "unloaded" ? "" : el("button", { type: "button", onclick: async () => {
        try { await api(`/api/sources/${encodeURIComponent(s.name)}`, { method: "DELETE" }); say(`${s.name} asked to unload`); } catch (error) { say(String(error), true); }
      } }, "Unload")))))), load);
  return () => {};
}
