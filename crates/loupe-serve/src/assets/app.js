// loupe serve's page: plain JavaScript, no build step. Every view is a function of the URL's hash
// (#/sae/RUN/latent/3), drawn from the JSON API. Text from runs (generations, contexts) is always
// inserted as text, never as HTML.
"use strict";

const main = document.getElementById("main");

// ---- helpers --------------------------------------------------------------------------------

/** GET or POST the API; resolves to the JSON body, or throws an Error with the server's message. */
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch("/api" + path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children.flat()) el.append(child instanceof Node ? child : String(child));
  return el;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  return Number.isInteger(x) ? x.toLocaleString("en") : x.toFixed(digits);
}

function runLink(kind, id) {
  return h("a", { href: `#/${kind}/${encodeURIComponent(id)}` }, id);
}

function fileUrl(run, path) {
  return `/api/file?run=${encodeURIComponent(run)}&path=${encodeURIComponent(path)}`;
}

/** Whitespace made visible in a token: newlines and tabs as symbols. */
function visible(text) {
  return text.replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

/** Text pieces shaded by activation (0..max), one piece outlined when `highlight` is its index. */
function tokenLine(pieces, activations, max, highlight, inRange) {
  return h("div", { class: "tokens" }, pieces.map((text, i) => {
    const a = max > 0 ? Math.max(0, activations[i] || 0) / max : 0;
    const classes = [i === highlight ? "hit" : "", inRange && !inRange[i] ? "out" : ""].join(" ").trim();
    return h("span", {
      class: classes || null,
      style: a > 0 ? `background: rgba(214, 120, 30, ${(0.12 + 0.78 * a).toFixed(3)})` : null,
      title: `activation ${fmt(activations[i] || 0)}`,
    }, visible(text));
  }));
}

const tooltip = document.getElementById("tooltip");
function hoverText(el, text) {
  el.addEventListener("mousemove", (e) => {
    tooltip.textContent = text;
    tooltip.hidden = false;
    tooltip.style.left = Math.min(e.clientX + 14, window.innerWidth - 360) + "px";
    tooltip.style.top = (e.clientY + 14) + "px";
  });
  el.addEventListener("mouseleave", () => { tooltip.hidden = true; });
}

// ---- routing --------------------------------------------------------------------------------

function route() {
  showError("");
  tooltip.hidden = true;
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const view =
    parts.length === 0 ? home() :
    parts[0] === "sae" && parts[2] === "latent" ? latentPage(parts[1], Number(parts[3])) :
    parts[0] === "sae" ? saePage(parts[1], params) :
    parts[0] === "probe" ? probePage(parts[1]) :
    parts[0] === "scope" ? scopePage(parts[1]) :
    parts[0] === "playground" ? playground(params) :
    Promise.reject(new Error(`no page at #/${path}`));
  view.catch((e) => showError(e.message));
}
window.addEventListener("hashchange", route);
route();

function page(...children) {
  main.replaceChildren(...children.flat());
}

// ---- home: every run ------------------------------------------------------------------------

async function home() {
  page(h("p", { class: "muted" }, "Reading runs…"));
  const data = await api("/runs");
  const of = (kind) => data.runs.filter((r) => r.kind === kind);
  const problem = (r) => r.problem ? h("div", { class: "note" }, r.problem) : null;
  const tb = (r) => r.tensorboard ? h("code", {}, r.tensorboard) : "";
  const table = (id, heads, rows) => rows.length === 0
    ? h("p", { class: "muted", id }, "none")
    : h("table", { id }, h("tr", {}, heads.map((x) => h("th", {}, x))), rows);
  page(
    h("h1", {}, "Runs"),
    h("p", { class: "muted" }, `Under ${data.roots.join(", ")}.`),
    h("h2", {}, "Activation stores"),
    table("runs-store", ["store", "model", "hooks", "tokens", "labels"], of("store").map((r) => h("tr", {},
      h("td", {}, r.id, problem(r)), h("td", {}, r.model),
      h("td", { class: "mono" }, (r.hooks || []).map((x) => h("div", {}, `${x.hook} (${x.width})`))),
      h("td", { class: "num" }, fmt(r.tokens)),
      h("td", {}, r.labels ? r.labels.fields.map((f, i) => h("div", {}, `${f}: ${r.labels.values[i].join(", ")}`)) : "")))),
    h("h2", {}, "Sparse autoencoders"),
    table("runs-sae", ["SAE", "architecture", "latents", "hook", "model", "L0", "FVU", "CE recovered", "top contexts", "TensorBoard"],
      of("sae").map((r) => h("tr", {},
        h("td", {}, runLink("sae", r.id), problem(r)), h("td", {}, r.architecture), h("td", { class: "num" }, fmt(r.d_sae)),
        h("td", { class: "mono" }, r.hook), h("td", {}, r.model), h("td", { class: "num" }, fmt(r.l0, 1)),
        h("td", { class: "num" }, fmt(r.fvu)), h("td", { class: "num" }, fmt(r.ce_recovered)),
        h("td", {}, r.has_top ? "yes" : "no"), h("td", {}, tb(r))))),
    h("h2", {}, "Probe runs"),
    table("runs-probe", ["run", "probes", "features", "best F1", "TensorBoard"], of("probe").map((r) => h("tr", {},
      h("td", {}, runLink("probe", r.id)), h("td", { class: "num" }, fmt(r.probes)),
      h("td", {}, (r.features || []).join(", ")), h("td", { class: "num" }, fmt(r.best_f1)), h("td", {}, tb(r))))),
    h("h2", {}, "Scope runs"),
    table("runs-scope", ["run", "model", "target", "generations", "report", "TensorBoard"], of("scope").map((r) => h("tr", {},
      h("td", {}, runLink("scope", r.id)), h("td", {}, r.model),
      h("td", { class: "mono" }, String(r.target || "").slice(0, 60)), h("td", { class: "num" }, fmt(r.records)),
      h("td", {}, r.has_report ? h("a", { href: fileUrl(r.id, "report.html") }, "report.html") : "–"),
      h("td", {}, tb(r))))),
    h("h2", {}, "Steering runs"),
    table("runs-steer", ["run", "model", "hook", "concepts", "answers", "report"], of("steer").map((r) => h("tr", {},
      h("td", { class: "mono" }, r.id), h("td", {}, r.model), h("td", { class: "mono" }, r.hook),
      h("td", {}, (r.concepts || []).join(", ")), h("td", { class: "num" }, fmt(r.records)),
      h("td", {}, r.has_report ? h("a", { href: fileUrl(r.id, "steer.html") }, "steer.html") : "–")))),
  );
}

// ---- the feature browser --------------------------------------------------------------------

async function saePage(run, params) {
  const info = await api(`/sae?run=${encodeURIComponent(run)}`);
  const query = params.get("q") || "";
  const sort = params.get("sort") || "index";
  const offset = Number(params.get("offset") || 0);
  const limit = 50;
  const go = (q, so, off) => { location.hash = `#/sae/${encodeURIComponent(run)}?q=${encodeURIComponent(q)}&sort=${so}&offset=${off}`; };

  const sentence = h("textarea", { id: "sentence", rows: 2, placeholder: "A sentence to run through the model and the SAE" });
  const sentenceOut = h("div", { id: "sentence-result" });
  const search = h("input", { type: "text", id: "latent-search", value: query, placeholder: "top token contains…" });
  const sortSelect = h("select", { id: "latent-sort" }, ["index", "density", "max"].map((o) =>
    h("option", { value: o, selected: o === sort }, { index: "by index", density: "by density", max: "by max activation" }[o])));
  const list = h("div", { id: "latent-list" });

  page(
    h("h1", {}, "SAE ", h("span", { class: "mono" }, run)),
    h("p", {}, `${fmt(info.d_sae)} latents on `, h("code", {}, info.hook), ` of ${info.model}`,
      info.architecture ? ` (${info.architecture})` : "", info.top_tokens ? `; top contexts over ${fmt(info.top_tokens)} tokens` : ""),
    info.note ? h("p", { class: "note" }, info.note) : null,
    h("div", { class: "panel" },
      h("h2", {}, "Which latents fire on this sentence?"),
      sentence,
      h("div", { class: "row" }, h("button", { id: "sentence-run", onclick: () => runSentence(run, sentence.value, sentenceOut) }, "Run"),
        h("span", { class: "muted" }, "runs the model up to the SAE's hook and encodes every token")),
      sentenceOut),
    h("h2", {}, "Latents"),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); go(search.value, sortSelect.value, 0); } },
      search, sortSelect, h("button", { type: "submit" }, "Search")),
    list,
  );
  sortSelect.addEventListener("change", () => go(search.value, sortSelect.value, 0));
  if (!info.top_tokens) return;
  const data = await api(`/sae/latents?run=${encodeURIComponent(run)}&q=${encodeURIComponent(query)}&sort=${sort}&offset=${offset}&limit=${limit}`);
  list.replaceChildren(
    h("div", { class: "pager" },
      h("button", { class: "secondary", disabled: offset === 0, onclick: () => go(query, sort, Math.max(0, offset - limit)) }, "‹ previous"),
      h("span", { class: "muted" }, `${data.total === 0 ? 0 : offset + 1}–${Math.min(offset + limit, data.total)} of ${fmt(data.total)}`),
      h("button", { class: "secondary", disabled: offset + limit >= data.total, onclick: () => go(query, sort, offset + limit) }, "next ›")),
    h("table", { id: "latents" },
      h("tr", {}, ["latent", "density", "max activation", "mean", "top tokens"].map((x) => h("th", {}, x))),
      data.latents.map((l) => h("tr", {},
        h("td", {}, h("a", { href: `#/sae/${encodeURIComponent(run)}/latent/${l.latent}` }, `#${l.latent}`)),
        h("td", { class: "num" }, (100 * l.frequency).toFixed(3) + "%"),
        h("td", { class: "num" }, fmt(l.max_activation)), h("td", { class: "num" }, fmt(l.mean_activation)),
        h("td", { class: "chips" }, l.top_tokens.slice(0, 6).map((t) => h("span", {}, visible(t))))))),
  );
}

async function runSentence(run, text, out) {
  out.replaceChildren(h("p", { class: "muted" }, "Running…"));
  try {
    const data = await api("/sae/sentence", { run, text });
    const pieces = data.pieces.map((p) => p.text);
    const inRange = data.pieces.map((p) => p.in_range);
    out.replaceChildren(
      h("p", { class: "muted" }, `${data.active} latents active; the strongest ${data.latents.length}:`),
      data.pieces.some((p) => !p.in_range) ? h("p", { class: "note" }, "Struck-through tokens are beyond the SAE's norm cutoff and are not encoded.") : null,
      h("table", { id: "sentence-latents" },
        h("tr", {}, ["latent", "max here", "its max", "top tokens", "on the sentence"].map((x) => h("th", {}, x))),
        data.latents.map((l) => h("tr", {},
          h("td", {}, h("a", { href: `#/sae/${encodeURIComponent(run)}/latent/${l.latent}` }, `#${l.latent}`)),
          h("td", { class: "num" }, fmt(l.max)), h("td", { class: "num" }, fmt(l.recorded_max)),
          h("td", { class: "chips" }, (l.top_tokens || []).slice(0, 4).map((t) => h("span", {}, visible(t)))),
          h("td", {}, tokenLine(pieces, l.activations, l.recorded_max || l.max, -1, inRange))))),
    );
  } catch (e) {
    out.replaceChildren(h("p", { class: "note" }, e.message));
  }
}

async function latentPage(run, latent) {
  page(h("p", { class: "muted" }, `Reading latent ${latent}…`));
  const data = await api(`/sae/latent?run=${encodeURIComponent(run)}&latent=${latent}`);
  const lens = data.logit_lens;
  page(
    h("p", {}, h("a", { href: `#/sae/${encodeURIComponent(run)}` }, `‹ ${run}`)),
    h("h1", { id: "latent-title" }, `Latent #${latent}`),
    h("div", { class: "row" },
      h("span", {}, `density ${data.frequency === null ? "–" : (100 * data.frequency).toFixed(3) + "%"}`),
      h("span", {}, `max ${fmt(data.max_activation)}`), h("span", {}, `mean ${fmt(data.mean_activation)}`),
      h("button", { id: "steer", onclick: () => { location.hash = `#/playground?sae=${encodeURIComponent(run)}&latent=${latent}`; } },
        "Steer with this latent")),
    data.notes.map((n) => h("p", { class: "note" }, n)),
    h("div", { class: "columns" },
      h("div", {}, h("h2", {}, "Activations"), data.histogram ? histogram(data.histogram) : h("p", { class: "muted" }, "–")),
      h("div", {}, h("h2", {}, "Logit lens of its decoder row"), lens ? h("div", { class: "columns" },
        h("div", {}, h("div", { class: "muted" }, "raises"), h("div", { class: "chips", id: "lens-top" }, lens.top.map((t) => h("div", {}, h("span", {}, visible(t.token)), " ", fmt(t.logit, 2))))),
        h("div", {}, h("div", { class: "muted" }, "lowers"), h("div", { class: "chips" }, lens.bottom.map((t) => h("div", {}, h("span", {}, visible(t.token)), " ", fmt(t.logit, 2)))))) : h("p", { class: "muted" }, "–"))),
    h("h2", {}, "Top contexts"),
    h("div", { id: "examples" }, (data.examples || []).map((ex) => h("div", { class: "panel" },
      h("div", { class: "muted" }, `${fmt(ex.activation)} · context ${ex.context}, position ${ex.position}`),
      tokenLine(ex.tokens, ex.activations, data.max_activation || ex.activation, ex.highlight)))),
  );
}

function histogram(hist) {
  const w = 380, hgt = 150, pad = 28;
  const max = Math.max(1, ...hist.counts);
  const bw = (w - pad - 8) / hist.counts.length;
  return h("div", {},
    s("svg", { width: w, height: hgt + 30, id: "histogram" },
      hist.counts.map((c, i) => {
        const bh = (c / max) * hgt;
        return s("rect", { x: pad + i * bw, y: hgt - bh + 4, width: Math.max(1, bw - 1), height: bh, fill: "#d6781e" },
          s("title", {}, `${fmt((i / hist.counts.length) * hist.max, 2)}–${fmt(((i + 1) / hist.counts.length) * hist.max, 2)}: ${c} tokens`));
      }),
      s("line", { x1: pad, y1: hgt + 4, x2: w - 8, y2: hgt + 4, stroke: "#999" }),
      s("text", { x: pad, y: hgt + 20 }, "0"),
      s("text", { x: w - 8, y: hgt + 20, "text-anchor": "end" }, fmt(hist.max, 2)),
      s("text", { x: 2, y: 12 }, String(max))),
    h("div", { class: "muted" }, `fired on ${fmt(hist.fired)} of the first ${fmt(hist.tokens)} tokens of its store`));
}

// ---- probes ---------------------------------------------------------------------------------

const COLORS = ["#2f6fb0", "#d6781e", "#2e8b57", "#8e44ad", "#b8483a", "#16a085"];

async function probePage(run) {
  const data = await api(`/probe?run=${encodeURIComponent(run)}`);
  const detail = h("div", { id: "probe-detail" });
  page(
    h("h1", {}, "Probes ", h("span", { class: "mono" }, run)),
    data.groups.map((g) => h("div", { class: "panel" },
      h("h2", {}, `${g.feature} at `, h("code", {}, g.hook)),
      h("div", { class: "columns" }, f1Chart(g.methods), h("table", {},
        h("tr", {}, h("th", {}, "method"), h("th", {}, "k → F1 (click for its neurons)")),
        Object.entries(g.methods).map(([method, points]) => h("tr", {}, h("td", {}, method), h("td", {},
          points.map((p) => h("a", {
            href: "javascript:void 0", class: "probe-point", style: "margin-right: .8em",
            onclick: () => probeDetail(run, g.feature, g.hook, method, p.k, detail),
          }, `k${p.k}: ${fmt(p.f1)}`))))))))),
    detail,
  );
}

function f1Chart(methods) {
  const w = 360, hgt = 200, left = 36, bottom = 24;
  const ks = [...new Set(Object.values(methods).flat().map((p) => p.k))].sort((a, b) => a - b);
  const x = (k) => left + (ks.length < 2 ? 0 : (Math.log2(k) - Math.log2(ks[0])) / (Math.log2(ks[ks.length - 1]) - Math.log2(ks[0])) * (w - left - 10));
  const y = (f1) => 8 + (1 - f1) * (hgt - bottom - 8);
  const lines = Object.entries(methods).map(([method, points], i) => [
    s("polyline", { fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, points: points.map((p) => `${x(p.k)},${y(p.f1)}`).join(" ") }),
    points.map((p) => s("circle", { cx: x(p.k), cy: y(p.f1), r: 3, fill: COLORS[i % COLORS.length] }, s("title", {}, `${method} k=${p.k}: F1 ${fmt(p.f1)}`))),
    s("text", { x: w - 10, y: 14 + 14 * i, "text-anchor": "end", fill: COLORS[i % COLORS.length] }, method),
  ]);
  return s("svg", { width: w, height: hgt, class: "f1-chart" },
    [0, 0.5, 1].map((v) => [s("line", { x1: left, x2: w - 10, y1: y(v), y2: y(v), stroke: "#e3e6e9" }), s("text", { x: 4, y: y(v) + 4 }, v.toFixed(1))]),
    ks.map((k) => s("text", { x: x(k), y: hgt - 6, "text-anchor": "middle" }, `k${k}`)),
    s("text", { x: 4, y: hgt - 6 }, "F1"), lines);
}

async function probeDetail(run, feature, hook, method, k, out) {
  out.replaceChildren(h("p", { class: "muted" }, "Reading the probe and its contexts…"));
  try {
    const q = new URLSearchParams({ run, feature, hook, method, k });
    const d = await api(`/probe/detail?${q}`);
    out.replaceChildren(h("div", { class: "panel" },
      h("h2", {}, `${d.feature} · ${d.method} · k = ${d.k}`),
      h("p", {}, `held-out F1 ${fmt(d.held_out.f1)}, MCC ${fmt(d.held_out.mcc)}, precision ${fmt(d.held_out.precision)}, recall ${fmt(d.held_out.recall)}`),
      d.notes.map((n) => h("p", { class: "note" }, n)),
      h("table", { id: "probe-neurons" }, h("tr", {}, h("th", {}, "neuron"), h("th", {}, "weight"), h("th", {}, "where it fires hardest (lowest, for a negative weight)")),
        d.neurons.map((n) => h("tr", {}, h("td", { class: "num" }, n.neuron), h("td", { class: "num" }, fmt(n.weight)),
          h("td", {}, n.contexts.map((c) => h("div", { class: "tokens" }, visible(c.before),
            h("span", { class: "hit" }, visible(c.token)), visible(c.after), h("span", { class: "muted" }, `  ${fmt(c.activation, 2)}`)))))))));
  } catch (e) {
    out.replaceChildren(h("p", { class: "note" }, e.message));
  }
}

// ---- scope runs -----------------------------------------------------------------------------

async function scopePage(run) {
  const data = await api(`/scope?run=${encodeURIComponent(run)}`);
  const records = data.records;
  const layers = [...new Set(records.map((r) => r.layer))].sort((a, b) => a - b);
  const kinds = [...new Set(records.map((r) => r.amplifier))];
  const values = [...new Set(records.map((r) => r.value).filter((v) => v !== null))].sort((a, b) => a - b);
  const select = (id, options, label) => h("label", {}, label + " ", h("select", { id }, options.map(([v, t]) => h("option", { value: v }, t))));
  const layerSel = select("scope-layer", layers.map((l) => [l, `layer ${l}`]), "Layer");
  const kindSel = select("scope-amplifier", [["", "all"], ...kinds.map((k) => [k, k])], "Amplifier");
  const valueSel = select("scope-value", [["", "all"], ...values.map((v) => [v, v])], "Value");
  const grid = h("div", { id: "scope-grid" });
  const draw = () => {
    const layer = Number(layerSel.querySelector("select").value);
    const kind = kindSel.querySelector("select").value;
    const value = valueSel.querySelector("select").value;
    const shown = records.filter((r) => r.layer === layer && (!kind || r.amplifier === kind) &&
      (!value || r.value === null || String(r.value) === value));
    const labels = [...new Set(shown.map((r) => r.label))];
    const sources = [...new Set(shown.map((r) => r.source))];
    const cell = new Map(shown.map((r) => [r.source + "\u0000" + r.label, r]));
    grid.replaceChildren(h("table", {},
      h("tr", {}, h("th", {}, "source"), labels.map((l) => h("th", {}, l))),
      h("tr", {}, h("th", { class: "muted" }, "interpreted"), labels.map((l) => {
        const col = shown.filter((r) => r.label === l);
        return h("th", { class: "num" }, `${col.filter((r) => r.interpreted).length}/${col.length}`);
      })),
      sources.map((src) => h("tr", {}, h("td", {}, src), labels.map((l) => {
        const r = cell.get(src + "\u0000" + l);
        if (!r) return h("td", {}, "");
        const td = h("td", { class: `cell ${r.degenerate ? "degenerate" : r.interpreted ? "yes" : "no"}` }, fmt(r.score, 2));
        hoverText(td, `${r.label} at layer ${r.layer}: ${r.generation}\n\nscore ${fmt(r.score)}${r.degenerate ? " (degenerate)" : ""}` +
          (r.fluency === null || r.fluency === undefined ? "" : `, fluency ${fmt(r.fluency, 2)} nats/token`));
        return td;
      })))));
  };
  [layerSel, kindSel, valueSel].forEach((el) => el.addEventListener("change", draw));
  page(
    h("h1", {}, "Scope run ", h("span", { class: "mono" }, run)),
    h("p", {}, `${fmt(records.length)} generations; interpreted: ${data.criterion}, and not degenerate. Hover a cell for its generation.`,
      data.report ? [" ", h("a", { href: fileUrl(run, data.report) }, "Static report")] : ""),
    h("div", { class: "row" }, layerSel, kindSel, valueSel),
    grid,
    data.charts.length ? h("h2", {}, "Comparison") : null,
    h("div", { class: "columns" }, data.charts.map((c) => h("img", { src: fileUrl(run, c), alt: c }))),
  );
  draw();
}

// ---- the playground -------------------------------------------------------------------------

async function playground(params) {
  const [options, runs] = await Promise.all([api("/playground/options"), api("/runs")]);
  const saes = runs.runs.filter((r) => r.kind === "sae");
  const steerRun = params.get("sae");
  const steerLatent = params.get("latent");
  let model = options.default_model, layers = "3, 6", site = "resid_post";
  if (steerRun) {
    const info = await api(`/sae?run=${encodeURIComponent(steerRun)}`);
    model = info.model;
    const m = /^blocks\.(\d+)\.(hook_resid_post|hook_mlp_out|mlp\.hook_post)$/.exec(info.hook);
    if (m) { layers = m[1]; site = { hook_resid_post: "resid_post", hook_mlp_out: "mlp_out", "mlp.hook_post": "mlp_post" }[m[2]]; }
  } else if (saes.length) {
    model = saes[0].model || model;
  }
  const field = (id, value, size) => h("input", { type: "text", id, value, size: size || 24 });
  const modelIn = field("pg-model", model, 36);
  const promptIn = field("pg-prompt", "Marie Curie", 40);
  const entity = h("select", { id: "pg-entity", onchange: () => { if (entity.value) promptIn.value = entity.value; } },
    h("option", { value: "" }, "or pick an entity…"), options.entities.map((e) => h("option", { value: e }, e)));
  const layersIn = field("pg-layers", layers, 14);
  const siteSel = h("select", { id: "pg-site" }, options.sites.map((x) => h("option", { value: x, selected: x === site }, x)));
  const targetSel = h("select", { id: "pg-target" }, options.targets.map((t) => h("option", { value: t.name }, t.name)), h("option", { value: "custom" }, "custom…"));
  const targetText = h("textarea", { id: "pg-target-text", rows: 2, hidden: true });
  targetSel.addEventListener("change", () => { targetText.hidden = targetSel.value !== "custom"; });
  const nullIn = field("pg-null", "", 24);
  const tokensIn = h("input", { type: "number", id: "pg-tokens", value: 12, min: 1, max: options.limits.max_new_tokens });
  const check = (id, on) => h("input", { type: "checkbox", id, checked: on });
  const useNone = check("pg-none", true), useScale = check("pg-scale", !steerRun), useCfg = check("pg-cfg", false);
  const scaleIn = field("pg-scale-values", "4", 10), cfgIn = field("pg-cfg-values", "2", 10);
  const useSae = check("pg-sae", Boolean(steerRun));
  const saeSel = h("select", { id: "pg-sae-run" }, saes.map((r) => h("option", { value: r.id, selected: r.id === steerRun }, r.id)));
  const latentIn = h("input", { type: "number", id: "pg-latent", value: steerLatent || 0, min: 0 });
  const saeValues = field("pg-sae-values", "4, 8", 10);
  // Every probe of the served probe runs, as "run · feature · hook · method k".
  const probes = [];
  for (const run of runs.runs.filter((r) => r.kind === "probe")) {
    const data = await api(`/probe?run=${encodeURIComponent(run.id)}`);
    for (const g of data.groups) {
      for (const [method, points] of Object.entries(g.methods)) {
        for (const p of points) probes.push({ run: run.id, feature: g.feature, hook: g.hook, method, k: p.k });
      }
    }
  }
  const useProbe = check("pg-probe", false);
  const probeSel = h("select", { id: "pg-probe-name" }, probes.map((p, i) =>
    h("option", { value: i }, `${p.run} · ${p.feature} · ${p.hook} · ${p.method} k${p.k}`)));
  const probeValues = field("pg-probe-values", "4, 8", 10);
  const useFeature = check("pg-feature", false);
  const featureSel = h("select", { id: "pg-feature-name" }, options.features.map((f) =>
    h("option", { value: f.name }, `${f.name} (${f.kind})`)));
  const featureValues = field("pg-feature-values", "4, 8", 10);
  const status = h("span", { id: "pg-status", class: "status" });
  const results = h("div", { id: "pg-results" });
  const runButton = h("button", { id: "pg-run" }, "Run");
  const cancelButton = h("button", { id: "pg-cancel", class: "secondary", disabled: true }, "Cancel");
  const numbers = (text) => text.split(/[\s,]+/).filter(Boolean).map(Number);

  page(
    h("h1", {}, "Playground"),
    h("p", { class: "muted" }, "Patch the source prompt's last-token activation, amplified each way, into the target prompt at the same layer; the model continues greedily and each continuation is judged against the source."),
    h("div", { class: "panel" },
      h("div", { class: "row" }, h("label", {}, "Model ", modelIn)),
      h("div", { class: "row" }, h("label", {}, "Source prompt ", promptIn), entity),
      h("div", { class: "row" }, h("label", {}, "Layers ", layersIn), h("label", {}, "Site ", siteSel), h("label", {}, "New tokens ", tokensIn)),
      h("div", { class: "row" }, h("label", {}, "Target ", targetSel), targetText),
      h("div", { class: "row" }, h("label", {}, useNone, " none")),
      h("div", { class: "row" }, h("label", {}, useScale, " scale α "), scaleIn),
      h("div", { class: "row" }, h("label", {}, useCfg, " cfg s "), cfgIn, h("label", {}, "null prompt ", nullIn)),
      saes.length ? h("div", { class: "row" }, h("label", {}, useSae, " SAE latent "), saeSel, latentIn, h("label", {}, "α ", saeValues)) : null,
      probes.length ? h("div", { class: "row" }, h("label", {}, useProbe, " probe "), probeSel, h("label", {}, "α ", probeValues)) : null,
      options.features.length ? h("div", { class: "row" }, h("label", {}, useFeature, " feature book entry "), featureSel, h("label", {}, "α ", featureValues))
        : h("div", { class: "row muted" }, "Feature book entries: start the server with --features FILE (e.g. configs/features-main.toml)."),
      h("div", { class: "row" }, runButton, cancelButton, status)),
    results,
  );

  let job = null;
  cancelButton.addEventListener("click", async () => {
    if (job !== null) await api(`/jobs/${job}/cancel`, {}).catch((e) => showError(e.message));
  });
  runButton.addEventListener("click", async () => {
    showError("");
    const amplifiers = [];
    if (useNone.checked) amplifiers.push({ kind: "none" });
    if (useScale.checked) amplifiers.push({ kind: "scale", values: numbers(scaleIn.value) });
    if (useCfg.checked) amplifiers.push({ kind: "cfg", values: numbers(cfgIn.value) });
    if (saes.length && useSae.checked) amplifiers.push({ kind: "sae", run: saeSel.value, latent: Number(latentIn.value), values: numbers(saeValues.value) });
    if (probes.length && useProbe.checked) {
      const p = probes[Number(probeSel.value)];
      amplifiers.push({ kind: "probe", run: p.run, feature: p.feature, hook: p.hook, method: p.method, k: p.k, values: numbers(probeValues.value) });
    }
    if (options.features.length && useFeature.checked) amplifiers.push({ kind: "feature", name: featureSel.value, values: numbers(featureValues.value) });
    const request = {
      model: modelIn.value, prompt: promptIn.value, layers: numbers(layersIn.value), site: siteSel.value,
      target: targetSel.value === "custom" ? targetText.value : targetSel.value, null_prompt: nullIn.value,
      amplifiers, max_new_tokens: Number(tokensIn.value),
    };
    let started;
    try {
      status.className = "status";
      status.textContent = "checking…";
      started = await api("/playground", request);
    } catch (e) {
      status.textContent = e.status === 409 ? "busy" : "";
      showError(e.message);
      return;
    }
    job = started.job;
    runButton.disabled = true;
    cancelButton.disabled = false;
    const rows = [];
    const draw = () => results.replaceChildren(resultGrid(rows));
    draw();
    const events = new EventSource(`/api/jobs/${job}/events`);
    events.addEventListener("record", (e) => { rows.push(JSON.parse(e.data)); draw(); });
    events.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      status.className = "status running";
      status.textContent = `running: ${p.done} of ${p.total}`;
    });
    events.addEventListener("end", (e) => {
      const end = JSON.parse(e.data);
      events.close();
      status.className = `status ${end.status}`;
      status.textContent = `${end.status}: ${rows.length} rows`;
      if (end.error) showError(end.error);
      runButton.disabled = false;
      cancelButton.disabled = true;
    });
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) return;
      events.close();
      status.textContent = "connection lost";
      runButton.disabled = false;
    };
  });
}

/** Rows by layer, columns by amplifier label: each continuation with its score. */
function resultGrid(rows) {
  const labels = [...new Set(rows.map((r) => r.label))];
  const layers = [...new Set(rows.map((r) => r.layer))].sort((a, b) => a - b);
  const cell = new Map(rows.map((r) => [r.layer + "\u0000" + r.label, r]));
  return h("table", { id: "pg-grid" },
    h("tr", {}, h("th", {}, "layer"), labels.map((l) => h("th", {}, l))),
    layers.map((layer) => h("tr", {}, h("td", {}, layer), labels.map((l) => {
      const r = cell.get(layer + "\u0000" + l);
      if (!r) return h("td", {});
      return h("td", { class: `cell ${r.degenerate ? "degenerate" : r.interpreted ? "yes" : "no"}` },
        h("div", { class: "generation" }, r.generation),
        h("div", { class: "muted" }, `score ${fmt(r.score, 2)}`,
          r.fluency === null || r.fluency === undefined ? "" : ` · surprisal ${fmt(r.fluency, 2)}`,
          r.degenerate ? " · degenerate" : ""));
    }))));
}
