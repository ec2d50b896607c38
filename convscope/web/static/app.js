// convscope web app: plain JavaScript, no build step, nothing from the network but this server.
// Everything that comes from a model (layer names, class labels, messages) is inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

// el("div", {class: "x", text: "hello", onclick: fn}, child, "text child") -> element; strings become text nodes.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP, unlike style="..."
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  return body;
}

const enc = encodeURIComponent;
const FAMILIES = { cam: "Class activation maps", gradient: "Gradients (pixel attribution)", perturbation: "Perturbation (slow, with progress)",
  feature: "Feature visualization (slow, with progress)" };
const MAX_STREAMS = 3; // open event streams at once (browsers allow 6 connections per host)

const state = {
  models: [], model: null, image: null, imageName: "", methods: [], method: null,
  target: null, targetLabel: null, top: [], layers: [], layer: null, view: "maps",
  page: 0, perPage: 16, order: "top", collapsed: new Set(), waiting: [], streams: 0, layerToken: 0,
};

// -- notices -------------------------------------------------------------------------------------
let noticeTimer = null;
function notice(message) {
  const box = $("notice");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 9000);
}
const report = (error) => notice(error.message || String(error));

function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}
const percent = (p) => `${(100 * p).toFixed(1)}%`;
const shapeText = (shape) => (shape ? shape.join("×") : "–");

// -- models ---------------------------------------------------------------------------------------
function currentModel() { return state.models.find((m) => m.id === state.model); }

async function selectModel(id) {
  state.model = id;
  const m = currentModel();
  $("model-facts").textContent = `${formatCount(m.params)} parameters · input ${m.channels}×${(m.input_size || []).join("×")}`
    + (m.classes ? ` · ${m.classes} classes` : "");
  state.layer = null;
  $("layer-view").hidden = true;
  $("class-search").value = "";
  $("class-results").replaceChildren();
  setTarget(null, null);
  await loadLayers();
  updateLayerChoice();
  if (state.image) await loadPredictions();
}

// -- pictures -------------------------------------------------------------------------------------
async function loadSamples() {
  const { samples } = await api("/api/samples");
  const box = $("samples");
  box.replaceChildren(...samples.map((s) => el("button", {
    type: "button", title: `use the ${s.name} photo`, "data-id": s.id,
    onclick: () => selectImage(s.id, s.name).catch(report),
  }, el("img", { src: s.thumbnail, alt: s.name }), s.name)));
}

async function selectImage(id, name) {
  state.image = id;
  state.imageName = name;
  $("picture").src = `/api/images/${enc(id)}.png?size=480`;
  $("picture-name").textContent = name;
  for (const b of $("samples").children) b.classList.toggle("current", b.dataset.id === id);
  setTarget(null, null);
  await loadPredictions();
  if (state.layer) loadLayerView();
}

async function upload(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  const picture = await api("/api/images", { method: "POST", body: form });
  await selectImage(picture.id, picture.name);
}

// -- predictions and the target --------------------------------------------------------------------
async function loadPredictions() {
  const data = await api(`/api/models/${enc(state.model)}/predict?image=${enc(state.image)}&k=5`);
  state.top = data.top;
  renderPredictions();
}

function renderPredictions() {
  $("predictions").replaceChildren(...state.top.map((p, i) => el("li", {},
    el("button", { type: "button", class: isTarget(p.index, i) ? "current" : "", title: "explain this class",
      onclick: () => setTarget(i === 0 ? null : p.index, p.label) },
    el("span", { text: p.label }), el("span", { class: "muted", text: percent(p.probability) }),
    el("span", { class: "bar" }, el("span", { style: { width: `${(100 * p.probability).toFixed(1)}%` } }))))));
}

function isTarget(index, rank) { return state.target === null ? rank === 0 : state.target === index; }

function setTarget(index, label) {
  state.target = index;
  state.targetLabel = label;
  $("target-name").textContent = index === null ? "the top-1 class" : `${label} (class ${index})`;
  $("target-reset").hidden = index === null;
  if (state.top.length) renderPredictions();
}

let searchTimer = null;
function searchClasses() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("class-search").value.trim();
    if (!q) { $("class-results").replaceChildren(); return; }
    try {
      const data = await api(`/api/models/${enc(state.model)}/classes?q=${enc(q)}&limit=40`);
      const items = data.classes.map((c) => el("li", {}, el("button", { type: "button", onclick: () => setTarget(c.index, c.label) },
        el("span", { class: "index", text: String(c.index) }), c.label)));
      if (!items.length) items.push(el("li", { class: "muted small", text: "no class matches" }));
      $("class-results").replaceChildren(...items);
    } catch (error) { report(error); }
  }, 180);
}

// -- the layer tree --------------------------------------------------------------------------------
const baseName = (name) => name.split("@")[0];
function parentOf(name) {
  const base = baseName(name);
  const i = base.lastIndexOf(".");
  return i < 0 ? null : base.slice(0, i);
}

async function loadLayers() {
  const data = await api(`/api/models/${enc(state.model)}/layers`);
  state.layers = data.layers;
  const parents = new Set(state.layers.map((r) => parentOf(r.name)).filter((p) => p !== null));
  for (const r of state.layers) r.children = parents.has(r.name);
  state.collapsed = new Set(state.layers.filter((r) => r.children).map((r) => r.name));
  $("layer-count").textContent = `${state.layers.filter((r) => r.leaf).length} layers`;
  renderTree();
}

// "_blocks.0._swish" -> "_swish"; "_blocks.3" -> "_blocks.3" (a bare number says little); "_swish@1" stays.
function shortName(name) {
  const [base, call] = name.split("@");
  const parts = base.split(".");
  let short = parts[parts.length - 1];
  if (/^\d+$/.test(short) && parts.length > 1) short = `${parts[parts.length - 2]}.${short}`;
  return call === undefined ? short : `${short}@${call}`;
}

function visible(row) {
  for (let p = parentOf(row.name); p !== null; p = parentOf(p)) if (state.collapsed.has(p)) return false;
  return true;
}

function renderTree() {
  const q = $("layer-filter").value.trim().toLowerCase();
  const rows = state.layers.filter((r) => (q ? (r.name.toLowerCase().includes(q) || r.type.toLowerCase().includes(q)) : visible(r)));
  $("layer-tree").replaceChildren(...rows.map((r) => {
    const twisty = r.children && !q
      ? el("span", { class: "twisty", text: state.collapsed.has(r.name) ? "▸" : "▾", title: "show / hide its layers",
        onclick: (event) => { event.stopPropagation(); toggle(r.name); } })
      : el("span", { class: "twisty" });
    const classes = ["node-row", state.layer && state.layer.name === r.name ? "current" : "", r.maps || r.filters ? "" : "nomaps"];
    return el("button", {
      type: "button", role: "treeitem", class: classes.join(" "), "data-layer": r.name,
      title: `${r.name} (${r.type})${r.maps ? ": click to see its feature maps" : r.filters ? ": click to see its filters" : ""}`,
      onclick: () => selectLayer(r),
    },
    el("span", { class: "lname", style: { paddingLeft: `${q ? 0 : r.depth * 0.9}em` } }, twisty, q ? r.name : shortName(r.name)),
    el("span", { class: "ltype muted", text: r.type }),
    el("span", { class: "lshape", text: shapeText(r.output_shape) }),
    el("span", { class: "lparams muted", text: r.params ? formatCount(r.params) : "" }));
  }));
}

function toggle(name) {
  if (state.collapsed.has(name)) state.collapsed.delete(name); else state.collapsed.add(name);
  renderTree();
}

function selectLayer(row) {
  if (row.children && state.collapsed.has(row.name)) state.collapsed.delete(row.name);
  state.layer = row;
  state.page = 0;
  state.view = row.maps ? "maps" : row.filters ? "filters" : "none";
  renderTree();
  updateLayerChoice();
  $("layer-view").hidden = false;
  loadLayerView();
  $("layer-view").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// -- feature maps and filters -----------------------------------------------------------------------
async function loadLayerView() {
  const row = state.layer;
  const token = ++state.layerToken;
  $("layer-name").textContent = row.name;
  $("layer-facts").textContent = `${row.type} · output ${shapeText(row.output_shape)} · ${formatCount(row.params)} parameters`;
  $("tab-maps").disabled = !row.maps;
  $("tab-filters").disabled = !row.filters;
  $("tab-maps").classList.toggle("current", state.view === "maps");
  $("tab-filters").classList.toggle("current", state.view === "filters");
  $("order-box").hidden = state.view !== "maps";
  $("maps").replaceChildren();
  $("filter-grid").hidden = true;
  const base = `/api/models/${enc(state.model)}/layers/${enc(row.name)}`;
  try {
    if (state.view === "maps") {
      const data = await api(`${base}/feature_maps?image=${enc(state.image)}&page=${state.page}&per_page=${state.perPage}&order=${state.order}`);
      if (token !== state.layerToken) return;
      const first = data.page * data.per_page;
      $("layer-help").textContent = `What this layer outputs for the picture: ${data.channels} channels of ${data.shape[1]}×${data.shape[2]}, `
        + (data.order === "top" ? "strongest (largest mean activation) first. " : "in channel order. ")
        + "Each map is scaled on its own: yellow = high, dark blue = low.";
      pager(data.page, data.pages, `channels ${first + 1}–${first + data.items.length} of ${data.channels}`);
      $("grid-download").href = data.grid;
      $("grid-download").setAttribute("download", `${row.name}-maps-${data.page + 1}.png`);
      $("maps").replaceChildren(...data.items.map((item) => el("figure", { class: "map" },
        el("img", { src: item.url, alt: `channel ${item.channel}` }),
        el("figcaption", { text: `#${item.channel} · mean ${item.mean === null ? "–" : item.mean.toFixed(2)}` }))));
    } else if (state.view === "filters") {
      const data = await api(`${base}/filters?page=${state.page}&per_page=64`);
      if (token !== state.layerToken) return;
      const first = data.page * data.per_page;
      $("layer-help").textContent = `The layer's learned kernels, shape ${data.shape.join("×")} (out × in × h × w): ${data.help}.`;
      pager(data.page, data.pages, `filters ${first + 1}–${Math.min(first + data.per_page, data.shape[0])} of ${data.shape[0]}`);
      $("grid-download").href = data.grid;
      $("grid-download").setAttribute("download", `${row.name}-filters-${data.page + 1}.png`);
      $("filter-grid").src = data.grid;
      $("filter-grid").hidden = false;
    } else {
      $("layer-help").textContent = row.ran
        ? `This ${row.type} outputs ${shapeText(row.output_shape)}: no feature maps (only (C, H, W) outputs have them). Pick a convolutional block.`
        : `${row.name} groups other layers and is not called itself: open it (▸) and pick one of its layers or blocks.`;
      pager(0, 0, "");
    }
  } catch (error) { report(error); }
}

function pager(page, pages, label) {
  $("page-label").textContent = pages ? `page ${page + 1} of ${pages} · ${label}` : "";
  $("page-prev").disabled = page <= 0;
  $("page-next").disabled = page >= pages - 1;
  $("grid-download").hidden = !pages;
}

function turnPage(step) { state.page += step; loadLayerView(); }

function showTab(view) {
  if (!state.layer || (view === "maps" && !state.layer.maps) || (view === "filters" && !state.layer.filters)) return;
  state.view = view;
  state.page = 0;
  loadLayerView();
}

// -- the method form --------------------------------------------------------------------------------
async function loadMethods() {
  const { methods } = await api("/api/methods");
  state.methods = methods;
  const select = $("method-select");
  const groups = [...new Set(methods.map((m) => m.family))];
  select.replaceChildren(...groups.map((family) => el("optgroup", { label: FAMILIES[family] || family },
    methods.filter((m) => m.family === family).map((m) => el("option", { value: m.name, text: m.name })))));
  select.value = methods.some((m) => m.name === "gradcam") ? "gradcam" : methods[0].name;
  selectMethod(select.value);
}

function selectMethod(name) {
  const m = state.methods.find((x) => x.name === name);
  state.method = m;
  $("method-summary").textContent = m.summary;
  $("method-paper").textContent = m.paper ? `Paper: ${m.paper}` : "";
  $("options").replaceChildren(...m.options.map(optionField));
  if (!m.options.length) $("options").append(el("p", { class: "muted small", text: "This method has no options." }));
  updateLayerChoice();
}

function optionField(o) {
  const id = `opt-${o.name}`;
  let input;
  if (o.kind === "bool") {
    input = el("input", { type: "checkbox", id, checked: Boolean(o.default) });
  } else if (o.choices.length) {
    input = el("select", { id }, o.choices.map((c, i) => el("option", { value: String(i), text: String(c), selected: c === o.default })));
  } else if (o.kind === "int" || o.kind === "float") {
    input = el("input", { type: "number", id, step: o.kind === "int" ? "1" : "any", value: o.default === null ? "" : String(o.default),
      placeholder: o.default === null ? "automatic" : "" });
  } else {
    input = el("input", { type: "text", id, value: o.default === null ? "" : String(o.default), placeholder: o.default === null ? "automatic" : "" });
  }
  return el("div", { class: "option" }, el("label", { for: id, text: o.name }), input, el("div", { class: "help", text: o.help || "" }));
}

// Only options the user changed are sent: the method's own defaults apply to the rest.
function collectOptions() {
  const options = {};
  for (const o of state.method.options) {
    const input = $(`opt-${o.name}`);
    let value;
    if (o.kind === "bool") {
      value = input.checked;
      if (value === Boolean(o.default)) continue;
    } else if (o.choices.length) {
      value = o.choices[Number(input.value)];
      if (value === o.default) continue;
    } else {
      const text = input.value.trim();
      if (text === (o.default === null ? "" : String(o.default))) continue;
      if (text === "") value = null;
      else if (o.kind === "int" || o.kind === "float" || (typeof o.default === "number" && Number.isFinite(Number(text)))) {
        value = Number(text);
        if (!Number.isFinite(value) || (o.kind === "int" && !Number.isInteger(value))) {
          throw new Error(`option ${o.name}: ${text} is not a${o.kind === "int" ? "n integer" : " number"}`);
        }
      } else value = text;
    }
    options[o.name] = value;
  }
  return options;
}

function updateLayerChoice() {
  const box = $("layer-choice");
  const m = state.method;
  if (!m) return;
  const usable = Boolean(state.layer && state.layer.maps);
  const name = usable ? state.layer.name : "(none selected)";
  if (!m.uses_layer) {
    box.replaceChildren(el("span", { class: "muted", text: "This method needs no layer." }));
  } else if (m.needs_layer) {
    box.replaceChildren(usable ? el("span", {}, "Layer: ", el("code", { text: name }))
      : el("span", { class: "muted", text: "Pick a layer in the layer tree (e.g. a block): this method needs one." }));
  } else {
    const model = currentModel();
    const fallback = m.family === "cam" && model && model.default_cam_layer ? `the last feature map, ${model.default_cam_layer}` : "its own choice";
    const check = el("input", { type: "checkbox", id: "use-layer", disabled: !usable, checked: usable && state.useLayer,
      onchange: (event) => { state.useLayer = event.target.checked; } });
    box.replaceChildren(el("label", {}, check, " use the selected layer ", el("code", { text: name })),
      el("div", { class: "muted", text: `otherwise the method's default layer: ${fallback}` }));
  }
}

function chosenLayer() {
  const m = state.method;
  if (!m.uses_layer || !state.layer || !state.layer.maps) return null;
  return m.needs_layer || state.useLayer ? state.layer.name : null;
}

// -- jobs and result cards ---------------------------------------------------------------------------
async function runMethod() {
  const m = state.method;
  if (!state.image) { notice("Pick a picture first."); return; }
  let options;
  try { options = collectOptions(); } catch (error) { report(error); return; }
  const layer = chosenLayer();
  if (m.needs_layer && !layer) { notice(`${m.name} needs a layer: pick one in the layer tree.`); return; }
  const body = { model: state.model, image: state.image, method: m.name, target: m.uses_target ? state.target : null, layer, options };
  const card = resultCard(m, body);
  $("results").prepend(card.node);
  $("results-empty").hidden = true;
  try {
    const job = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    card.update(job);
    watch(job.id, card);
  } catch (error) { card.fail(error.message); }
}

function resultCard(method, request) {
  const title = el("strong", { text: method.name });
  const sub = el("span", { class: "muted small", text: state.imageName });
  const frame = el("div", { class: "frame" });
  const facts = el("div", { class: "facts" });
  const actions = el("div", { class: "actions" });
  const bar = el("span");
  const text = el("div", { class: "progress-text", text: "starting…" });
  const cancel = el("button", { type: "button", text: "Cancel", onclick: () => card.cancel() });
  const progress = el("div", { class: "progress" }, el("div", { class: "progress-bar" }, bar), text, cancel);
  frame.append(progress);
  const node = el("article", { class: "card" },
    el("div", { class: "card-head" }, title, sub, el("button", { type: "button", class: "close", title: "remove", text: "×", onclick: () => { card.cancel(); node.remove(); } })),
    frame, facts, actions);
  const card = {
    node, id: null, finished: false,
    update(job) {
      card.id = job.id;
      if (card.finished) return;
      if (job.status === "queued") { text.textContent = "waiting for the model…"; return; }
      if (job.status === "running") {
        const p = job.progress;
        if (p.total > 1) bar.style.width = `${(100 * p.done / p.total).toFixed(1)}%`;
        text.textContent = p.total > 1 ? `${p.what}: ${p.done} / ${p.total}` : "running…";
        return;
      }
      card.finished = true;
      if (job.status === "done") card.done(job);
      else if (job.status === "cancelled") {
        const p = job.progress;
        frame.replaceChildren(el("p", { class: "muted", text: p.total > 1 ? `cancelled at ${p.done} / ${p.total}` : "cancelled" }));
      }
      else card.fail(job.error || "failed");
    },
    done(job) {
      const r = job.result;
      const url = `/api/jobs/${enc(job.id)}/result.png`;
      const img = el("img", { src: url, alt: `${method.name} result` });
      frame.replaceChildren(img);
      const what = r.label ? `${r.label}${r.probability === null ? "" : ` (${percent(r.probability)})`}` : "";
      facts.replaceChildren(
        what ? el("div", {}, "class: ", el("strong", { text: what })) : "",
        el("div", { class: "muted" }, r.layer ? `layer ${r.layer} · ` : "", `${job.seconds}s`,
          Object.keys(request.options).length ? ` · ${Object.entries(request.options).map(([k, v]) => `${k}=${v}`).join(", ")}` : ""));
      const file = `${method.name}-${state.imageName}${r.label ? `-${r.label}` : ""}.png`.replace(/[^\w.-]+/g, "_");
      const links = [el("a", { href: url, download: file, text: "Download PNG" })];
      if (job.urls.map) {
        let overlay = true;
        links.push(el("button", { type: "button", class: "link", text: "map only", onclick: (event) => {
          overlay = !overlay;
          img.src = overlay ? url : job.urls.map;
          event.target.textContent = overlay ? "map only" : "over the picture";
        } }));
      }
      actions.replaceChildren(...links);
    },
    fail(message) {
      card.finished = true;
      node.classList.add("error");
      frame.replaceChildren(el("p", { class: "err", text: message }));
    },
    async cancel() {
      if (!card.id || card.finished) return;
      cancel.disabled = true;
      text.textContent = "cancelling…";
      try { await api(`/api/jobs/${enc(card.id)}/cancel`, { method: "POST" }); } catch (error) { report(error); }
    },
  };
  return card;
}

// Progress by Server-Sent Events (a few streams at a time; polling if a stream breaks).
function watch(id, card) { state.waiting.push({ id, card }); pump(); }

function pump() {
  while (state.streams < MAX_STREAMS && state.waiting.length) {
    const { id, card } = state.waiting.shift();
    state.streams += 1;
    const source = new EventSource(`/api/jobs/${enc(id)}/events`);
    let closed = false;
    let ended = false;
    const release = () => { if (!closed) { closed = true; source.close(); state.streams -= 1; pump(); } };
    source.addEventListener("progress", (event) => card.update(JSON.parse(event.data)));
    for (const name of ["done", "error", "cancelled"]) {
      // (a plain "error" Event without data is EventSource's own connection error: onerror handles it)
      source.addEventListener(name, (event) => { if (event.data) { ended = true; card.update(JSON.parse(event.data)); } });
    }
    // The server ends the stream after the last event; closing here stops EventSource from reconnecting.
    // A stream that breaks before the last event falls back to polling.
    source.onerror = () => { release(); if (!ended) poll(id, card); };
  }
}

async function poll(id, card) {
  while (!card.finished && document.body.contains(card.node)) {
    try { card.update(await api(`/api/jobs/${enc(id)}`)); } catch (error) { card.fail(error.message); return; }
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}

// -- wiring -----------------------------------------------------------------------------------------
function wire() {
  $("model-select").addEventListener("change", (event) => selectModel(event.target.value).catch(report));
  $("upload").addEventListener("change", (event) => { upload(event.target.files[0]).catch(report); event.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(event.dataTransfer.files[0]).catch(report);
  });
  $("class-search").addEventListener("input", searchClasses);
  $("target-reset").addEventListener("click", () => setTarget(null, null));
  $("layer-filter").addEventListener("input", renderTree);
  $("method-select").addEventListener("change", (event) => selectMethod(event.target.value));
  $("run").addEventListener("click", runMethod);
  $("tab-maps").addEventListener("click", () => showTab("maps"));
  $("tab-filters").addEventListener("click", () => showTab("filters"));
  $("page-prev").addEventListener("click", () => turnPage(-1));
  $("page-next").addEventListener("click", () => turnPage(1));
  $("order").addEventListener("change", (event) => { state.order = event.target.value; state.page = 0; loadLayerView(); });
}

async function init() {
  wire();
  const data = await api("/api/models");
  state.models = data.models;
  $("model-select").replaceChildren(...data.models.map((m) => el("option", { value: m.id, text: m.name })));
  $("model-select").value = data.default;
  await Promise.all([loadSamples(), loadMethods()]);
  await selectModel(data.default);
  await selectImage("sample-cat", "cat");
  document.body.dataset.ready = "1";
}

init().catch(report);
