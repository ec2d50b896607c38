// convscope web app: plain JavaScript, no build step, nothing from the network but this server.
// Everything that comes from a model (layer names, class labels, messages) is inserted as text, never as HTML;
// styles are set through the CSSOM (el.style.x) or classes: the page's CSP forbids style="..." attributes.
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

// svg("circle", {cx: 1, ...}) -> an SVG element (presentation attributes, not style="..."), in the namespace of the
// page's own <svg> template (parsed by the browser, so no namespace URI is written here).
function svg(tag, attrs = {}) {
  const node = tag === "svg" ? $("svg-template").content.firstElementChild.cloneNode(false)
    : document.createElementNS($("svg-template").content.firstElementChild.namespaceURI, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// The JSON answer; an error carries the server's JSON body ({"error", "field", "in", ...}), its status and Retry-After.
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    const error = new Error("the server did not answer: is convscope serve still running?");
    error.status = 0;
    error.body = {};
    throw error;
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.body = typeof body === "object" ? body : {};
    error.retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw error;
  }
  return body;
}

const enc = encodeURIComponent;
const GROUP_TITLES = { cam: "class activation maps", gradient: "gradients", perturbation: "perturbation" };
const TAKES = { images: "the picture", image: "the picture", model: "the model only", models: "several models and the picture",
  dataset: "a dataset" };
const RETURNS = { map: "a map over the picture", pixels: "a value per pixel", picture: "a picture", feature_maps: "feature maps",
  filters: "filters", table: "a table", embedding: "a map of the dataset (hover a point to see its picture)",
  comparison: "a grid of maps, models × methods", robustness: "the map of each changed copy of the picture, side by side",
  audit: "a verdict with the pictures it flags", ranking: "the methods ranked, with their deletion and insertion curves",
  sanity: "a pass or fail, with the map as the model's weights are randomized", regions: "the regions where the map is high" };
const MAX_STREAMS = 3; // open event streams at once (browsers allow 6 connections per host)
const FULL_WIDTH = 640; // result pictures at least this wide take a whole row of the results
const PICTURE_KINDS = ["map", "pixels", "picture"]; // results shown beside each other; other kinds are figures
const MATRIX_PER_PAGE = 32; // 1×1 filters listed per page (as rows of numbers)
// categorical colours of an embedding map's labels (matplotlib's tab10, as the library's own drawing)
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const state = {
  models: [], model: null, image: null, imageName: "", tools: [], tool: null, families: {}, datasets: [],
  target: null, targetLabel: null, targetImage: null, top: [], layers: [], layer: null, toolLayer: null, view: "maps",
  page: 0, perPage: 16, order: "top", collapsed: new Set(), matrix: new Set(), waiting: [], streams: 0, layerToken: 0,
};

// -- messages: each where it happened; the notice at the top only for what has no place of its own ---------------
function say(id, message) {
  const box = $(id);
  box.textContent = message || "";
  box.hidden = !message;
}

function notice(message) {
  $("notice-text").textContent = message;
  $("notice").hidden = false;
}
const report = (error) => notice(error.message || String(error));

function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}
const percent = (p) => `${(100 * p).toFixed(1)}%`;
const shapeText = (shape) => (shape ? shape.join("×") : "–");
const number = (v) => (v === null || v === undefined ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

// -- models ---------------------------------------------------------------------------------------
function currentModel() { return state.models.find((m) => m.id === state.model); }

async function selectModel(id) {
  state.model = id;
  const m = currentModel();
  $("model-facts").textContent = `${formatCount(m.params)} parameters · input ${m.channels}×${(m.input_size || []).join("×")}`
    + (m.classes ? ` · ${m.classes} classes` : "");
  state.layer = null;
  state.toolLayer = null;
  $("layer-view").hidden = true;
  if ($("dataset-select")) $("dataset-select").value = suitedDataset();
  clearSearch();
  state.top = [];
  setTarget(null, null); // another model has other classes: the choice is reset, visibly
  await loadLayers();
  renderInputs();
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

// A chosen class is kept when the picture changes (the class line says so); the top-1 follows the picture.
async function selectImage(id, name) {
  state.image = id;
  state.imageName = name;
  $("picture").src = `/api/images/${enc(id)}.png?size=480`;
  $("picture-name").textContent = name;
  for (const b of $("samples").children) b.classList.toggle("current", b.dataset.id === id);
  renderInputs();
  await loadPredictions();
  if (state.layer) loadLayerView();
}

// An upload refused by the server (415 format, 413 size, 400 broken file) is said under the upload button until the next try.
async function upload(file) {
  if (!file) return;
  say("upload-error", "");
  const form = new FormData();
  form.append("file", file, file.name);
  let picture;
  try {
    picture = await api("/api/images", { method: "POST", body: form });
  } catch (error) {
    const why = error.status === 0 ? "the upload was cut off: it may be over the server's size limit" : error.message;
    say("upload-error", `Could not use ${file.name}: ${why}`);
    return;
  }
  await selectImage(picture.id, picture.name);
}

// A dataset as a zip (pictures in label folders, masks/ with the object masks): it joins the dataset list, chosen.
async function uploadDataset(file) {
  if (!file) return;
  say("dataset-input-error", "");
  $("dataset-help").textContent = `uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  let made;
  try {
    made = await api("/api/datasets", { method: "POST", body: form });
  } catch (error) {
    $("dataset-help").textContent = datasetHelp($("dataset-select").value);
    say("dataset-input-error", `Could not use ${file.name}: ${error.status === 0 ? "the upload was cut off" : error.message}`);
    return;
  }
  state.datasets = state.datasets.filter((d) => d.name !== made.name).concat([made]);
  renderInputs();
  $("dataset-select").value = made.name;
  $("dataset-help").textContent = datasetHelp(made.name);
}

// -- predictions and the class to explain ---------------------------------------------------------------
async function loadPredictions() {
  say("prediction-error", "");
  try {
    const data = await api(`/api/models/${enc(state.model)}/predict?image=${enc(state.image)}&k=5`);
    state.top = data.top;
  } catch (error) {
    state.top = [];
    say("prediction-error", `No predictions: ${error.message}`);
  }
  renderPredictions();
  renderTarget();
  renderInputs();
}

function renderPredictions() {
  $("predictions").replaceChildren(...state.top.map((p, i) => el("li", {},
    el("button", { type: "button", class: isTarget(p.index, i) ? "current" : "",
      title: i === 0 ? "explain the top-1 class (it follows the picture)" : "explain this class",
      onclick: () => setTarget(i === 0 ? null : p.index, p.label) },
    el("span", { text: p.label }), el("span", { class: "muted", text: percent(p.probability) }),
    el("span", { class: "bar" }, el("span", { style: { width: `${(100 * p.probability).toFixed(1)}%` } }))))));
}

function isTarget(index, rank) { return state.target === null ? rank === 0 : state.target === index; }

// What is explained, in words: "tabby (class 281), chosen by you" or "the top-1 class (now tiger cat)".
function targetWords() {
  if (state.target !== null) return [`${state.targetLabel} (class ${state.target})`, ", chosen by you"];
  const top = state.top[0];
  return ["the top-1 class", top ? ` — now ${top.label}` : ""];
}

function setTarget(index, label) {
  state.target = index;
  state.targetLabel = label;
  state.targetImage = index === null ? null : state.image;
  if (state.top.length) renderPredictions();
  renderTarget();
  renderInputs();
}

function renderTarget() {
  const [name, how] = targetWords();
  $("target-name").textContent = name;
  $("target-how").textContent = how;
  $("target-reset").hidden = state.target === null;
  let note = "";
  if (state.target !== null && state.targetImage !== state.image) {
    note = "Kept when the picture changed.";
    if (state.top.length && !state.top.some((p) => p.index === state.target)) {
      note += " It is not in this picture's top 5: maps may show little; use the top-1 to follow the picture.";
    }
  }
  say("target-note", note);
}

function clearSearch() {
  $("class-search").value = "";
  $("class-results").replaceChildren();
  say("class-error", "");
}

let searchTimer = null;
function searchClasses() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("class-search").value.trim();
    say("class-error", "");
    if (!q) { $("class-results").replaceChildren(); return; }
    try {
      const data = await api(`/api/models/${enc(state.model)}/classes?q=${enc(q)}&limit=40`);
      const items = data.classes.map((c) => el("li", {}, el("button", { type: "button",
        onclick: () => { clearSearch(); setTarget(c.index, c.label); } },
      el("span", { class: "index", text: String(c.index) }), c.label)));
      if (!items.length) items.push(el("li", { class: "muted small", text: "no class matches" }));
      $("class-results").replaceChildren(...items);
    } catch (error) { say("class-error", error.message); }
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
    const current = state.layer && state.layer.name === r.name;
    const classes = ["node-row", current ? "current" : "", r.maps || r.filters ? "" : "nomaps"];
    return el("button", {
      type: "button", role: "treeitem", class: classes.join(" "), "data-layer": r.name, "aria-selected": current ? "true" : "false",
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

// Picking a layer shows it below and applies it to the next run of a tool that works at a layer (if it can use it).
function selectLayer(row) {
  if (row.children && state.collapsed.has(row.name)) state.collapsed.delete(row.name);
  state.layer = row;
  state.toolLayer = row;
  state.page = 0;
  state.view = row.maps ? "maps" : row.filters ? "filters" : "none";
  renderTree();
  renderInputs();
  const input = $("layer-input");
  if (input) { input.classList.remove("changed"); void input.offsetWidth; input.classList.add("changed"); } // replay the highlight
  $("layer-view").hidden = false;
  loadLayerView();
  $("layer-view").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// Why a tool cannot work at a layer, or null when it can (what it needs comes from the registry: t.layer.needs).
function layerProblem(t, row) {
  if (!row.ran) return `${row.name} only groups other layers and is never called itself`;
  const needs = t.layer ? t.layer.needs : "maps";
  if (needs === "conv") return row.filters ? null : `${row.name} (${row.type}) has no filters: only convolutions have them`;
  if (needs === "output") return row.output_shape ? null : `${row.name} (${row.type}) gives no output to use`;
  return row.maps ? null : `${row.name} (${row.type}) outputs ${shapeText(row.output_shape)}: no feature maps (channels × height × width)`;
}

// What a tool does with no layer given, in words (from the registry: t.layer.default; the model's CAM layer named).
function defaultLayer(t) {
  if (!t.layer) return "the tool's own choice";
  const m = currentModel();
  if (t.layer.cam && m && m.default_cam_layer) return `the last feature map, ${m.default_cam_layer}`;
  return t.layer.default;
}

function chosenLayer(t) {
  return t.uses_layer && state.toolLayer && !layerProblem(t, state.toolLayer) ? state.toolLayer.name : null;
}

function clearToolLayer() {
  state.toolLayer = null;
  renderInputs();
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
  $("maps-legend").hidden = state.view !== "maps";
  $("maps-legend").classList.add("waiting"); // keeps its place (the maps' columns) until its picture comes
  $("filter-rows").hidden = true;
  $("filter-grid").hidden = true;
  say("layer-error", "");
  const base = `/api/models/${enc(state.model)}/layers/${enc(row.name)}`;
  try {
    if (state.view === "maps") {
      const per = mapsPerPage();
      if (per !== state.perPage) { state.page = Math.floor((state.page * state.perPage) / per); state.perPage = per; }
      const data = await api(`${base}/feature_maps?image=${enc(state.image)}&page=${state.page}&per_page=${state.perPage}&order=${state.order}`);
      if (token !== state.layerToken) return;
      showMaps(row, data);
    } else if (state.view === "filters") {
      const perPage = state.matrix.has(row.name) ? MATRIX_PER_PAGE : 64;
      const data = await api(`${base}/filters?page=${state.page}&per_page=${perPage}`);
      if (token !== state.layerToken) return;
      if (data.kind === "matrix" && perPage !== MATRIX_PER_PAGE) { // 1×1: fewer per page, as rows of numbers
        state.matrix.add(row.name);
        loadLayerView();
        return;
      }
      showFilters(row, data);
    } else {
      $("layer-help").textContent = row.ran
        ? `This ${row.type} outputs ${shapeText(row.output_shape)}: no feature maps (only (C, H, W) outputs have them). Pick a convolutional block.`
        : `${row.name} groups other layers and is not called itself: open it (▸) and pick one of its layers or blocks.`;
      pager(0, 0, "");
    }
  } catch (error) {
    if (token !== state.layerToken) return;
    pager(0, 0, "");
    $("maps-legend").hidden = true;
    say("layer-error", `Could not show ${row.name}: ${error.message}`);
  }
}

// Two full rows of maps per page, whatever the window's width (8 to 32).
function mapsPerPage() {
  const columns = getComputedStyle($("maps")).gridTemplateColumns.split(" ").filter(Boolean).length;
  return Math.max(8, Math.min(32, 2 * (columns || 8)));
}

function showMaps(row, data) {
  const first = data.page * data.per_page;
  $("layer-help").textContent = `What this layer outputs for the picture: ${data.channels} channels of ${data.shape[1]}×${data.shape[2]}, `
    + (data.order === "top" ? "strongest (largest mean activation) first." : "in channel order.")
    + " Each map has its own scale (its values below it): compare shapes, not brightness, between maps.";
  pager(data.page, data.pages, `channels ${first + 1}–${first + data.items.length} of ${data.channels}`);
  $("grid-download").href = data.grid;
  $("grid-download").setAttribute("download", `${state.imageName.replace(/\.[^.]+$/, "")}_${row.name}_maps_${data.page + 1}.png`.replace(/[^\w.@-]+/g, "_"));
  $("maps").replaceChildren(...data.items.map((item) => el("figure", { class: "map", "data-channel": String(item.channel),
    title: `channel ${item.channel}: from ${number(item.min)} to ${number(item.max)}, mean ${number(item.mean)}` },
  el("img", { src: item.url, alt: `channel ${item.channel}` }),
  el("figcaption", {}, el("span", { class: "channel", text: `#${item.channel}` }), " · mean ",
    el("span", { class: "mean", text: item.mean === null ? "–" : item.mean.toFixed(2) }),
    el("span", { class: "range", text: `${number(item.min)} … ${number(item.max)}` })))));
  if (data.scale) {
    $("legend-img").src = `${data.scale.legend}&height=240`;
    $("legend-text").textContent = `Colours: ${data.scale.text}.`;
    $("maps-legend").classList.toggle("signed", Boolean(data.scale.signed));
    $("maps-legend").classList.remove("waiting");
  }
}

function showFilters(row, data) {
  const first = data.page * data.per_page;
  $("layer-help").textContent = `The layer's learned kernels, shape ${data.shape.join("×")} (out × in × h × w): ${data.help}.`;
  pager(data.page, data.pages, `filters ${first + 1}–${Math.min(first + data.per_page, data.shape[0])} of ${data.shape[0]}`);
  $("grid-download").href = data.grid;
  $("grid-download").setAttribute("download", `${state.model}_${row.name}_filters_${data.page + 1}.png`.replace(/[^\w.@-]+/g, "_"));
  if (data.kind === "matrix" && data.rows) {
    $("filter-rows").replaceChildren(...filterRows(data));
    $("filter-rows").hidden = false;
  } else {
    $("filter-grid").src = data.grid;
    $("filter-grid").hidden = false;
  }
}

// A 1×1 convolution, one row per filter: its size (L2 norm) as a bar, how many inputs carry 90% of it, and its
// strongest inputs with their signed weights (red > 0, blue < 0) as small bars around a zero line.
function filterRows(data) {
  const inputs = data.shape[1];
  const peakNorm = Math.max(...data.rows.map((r) => r.norm || 0)) || 1;
  const peakWeight = Math.max(...data.rows.flatMap((r) => r.strongest.map((s) => Math.abs(s.weight || 0)))) || 1;
  const head = el("div", { class: "frow fhead small muted" }, el("span", { text: "filter" }), el("span", { text: "size (L2 norm)" }),
    el("span", { text: `inputs carrying 90% of it (of ${inputs})` }), el("span", { text: "strongest inputs: channel, weight" }));
  return [head, ...data.rows.map((r) => el("div", { class: "frow", "data-filter": String(r.filter) },
    el("span", { class: "fname", text: `#${r.filter}` }),
    el("span", { class: "fnorm" }, el("span", { class: "hbar" }, el("span", { style: { width: `${(100 * (r.norm || 0) / peakNorm).toFixed(1)}%` } })),
      el("span", { class: "num", text: number(r.norm) })),
    el("span", { class: "fused" }, el("span", { class: "num", text: String(r.inputs_for_90_percent) }),
      el("span", { class: "hbar thin" }, el("span", { style: { width: `${(100 * r.inputs_for_90_percent / inputs).toFixed(1)}%` } }))),
    el("span", { class: "finputs" }, r.strongest.map((s) => weightChip(s, peakWeight))))),
  ];
}

function weightChip(s, peak) {
  const share = Math.min(1, Math.abs(s.weight || 0) / peak);
  const bar = el("span", { class: `wbar ${s.weight < 0 ? "neg" : "pos"}`, style: { width: `${(50 * share).toFixed(1)}%` } });
  return el("span", { class: "wchip", title: `input channel ${s.input}: weight ${s.weight}` },
    el("span", { class: "win", text: `in ${s.input}` }),
    el("span", { class: "num", text: `${s.weight >= 0 ? "+" : "−"}${number(Math.abs(s.weight))}` }), el("span", { class: "wtrack" }, bar));
}

function pager(page, pages, label) {
  $("pager").hidden = !pages;
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

// -- tools: the list, the inputs and the options form, all generated from /api/tools ----------------
async function loadTools() {
  const data = await api("/api/tools");
  state.tools = data.tools;
  state.families = data.families;
  state.datasets = data.datasets;
  const sections = [];
  for (const family of Object.keys(data.families)) {
    const members = data.tools.filter((t) => t.family === family);
    const groups = [...new Set(members.map((t) => t.group))];
    for (const group of groups) {
      const label = group ? `${familyTitle(family)} · ${GROUP_TITLES[group] || group}` : familyTitle(family);
      sections.push(el("optgroup", { label, "data-family": family },
        members.filter((t) => t.group === group).map((t) => el("option", { value: t.name, text: t.name }))));
    }
  }
  $("tool-select").replaceChildren(...sections);
  $("families").replaceChildren(...Object.keys(data.families).filter((f) => data.tools.some((t) => t.family === f)).map((family) =>
    el("button", { type: "button", class: "family-chip", "data-family": family, title: data.families[family],
      onclick: () => selectTool(data.tools.find((t) => t.family === family).name) },
    familyTitle(family), el("span", { class: "count", text: String(data.tools.filter((t) => t.family === family).length) }))));
  selectTool(data.tools.some((t) => t.name === "gradcam") ? "gradcam" : data.tools[0].name);
}

const familyTitle = (family) => family.charAt(0).toUpperCase() + family.slice(1);

function selectTool(name) {
  const t = state.tools.find((x) => x.name === name);
  state.tool = t;
  $("tool-select").value = t.name;
  for (const chip of $("families").children) chip.classList.toggle("current", chip.dataset.family === t.family);
  $("tool-family").textContent = `${familyTitle(t.family)}${t.group ? ` · ${GROUP_TITLES[t.group] || t.group}` : ""}: ${state.families[t.family]}`;
  $("tool-summary").textContent = t.summary;
  $("tool-paper").textContent = t.paper ? `Paper: ${t.paper}` : "";
  $("tool-returns").textContent = `Takes ${TAKES[t.takes] || t.takes}; gives ${RETURNS[t.returns] || t.returns}.${t.loops ? " Shows its progress and can be cancelled." : ""}`;
  $("quick").hidden = !Object.keys(t.quick).length;
  renderOptions();
  renderInputs();
}

function renderOptions() {
  const t = state.tool;
  clearErrors();
  $("options").replaceChildren(...t.options.map(optionField));
  if (!t.options.length) $("options").append(el("p", { class: "muted small", text: "This tool has no options." }));
}

// A value as the form shows it: null -> "" (automatic), [32, 16] -> "32, 16".
function shownValue(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(shownValue).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// One option: its name, the field, its range and default, and its help in plain words (always shown).
function optionField(o) {
  const id = `opt-${o.name}`;
  const kinds = o.kind.split("|");
  let input;
  if (o.kind === "bool") {
    input = el("input", { type: "checkbox", id, checked: Boolean(o.default) });
  } else if (o.kind === "choice") {
    const choices = o.choices.map((c, i) => el("option", { value: String(i), text: String(c), selected: c === o.default }));
    if (o.nullable) choices.unshift(el("option", { value: "", text: "automatic", selected: o.default === null }));
    input = el("select", { id }, choices);
  } else if (o.kind === "int" || o.kind === "float") {
    input = el("input", { type: "number", id, step: o.kind === "int" ? "1" : "any", value: shownValue(o.default),
      min: o.minimum ?? undefined, max: o.maximum ?? undefined, placeholder: o.default === null ? "automatic" : "" });
  } else {
    const hint = kinds.includes("pair") ? "one number or two: 32, 16" : kinds.includes("list") ? "values separated by commas" : "";
    input = el("input", { type: "text", id, value: shownValue(o.default), placeholder: o.default === null ? `automatic${hint ? `, or ${hint}` : ""}` : hint });
  }
  const facts = [];
  if (o.range) facts.push(el("span", { class: "range", text: o.range }));
  if (o.choices.length && o.kind !== "choice") facts.push(el("span", { text: `or ${o.choices.join(", ")}` }));
  facts.push(el("span", { class: "muted", text: o.required ? "required" : `default ${o.default === null ? "automatic" : shownValue(o.default)}` }));
  return el("div", { class: "option", "data-option": o.name },
    el("label", { for: id, text: o.name }), input,
    el("div", { class: "facts small" }, facts),
    el("div", { class: "help", id: `help-${o.name}`, text: o.help || "" }),
    el("div", { class: "field-error", role: "alert" }));
}

// A text field's value as JSON: numbers, "a, b" pairs and lists, true/false; anything else as text (the server checks it).
function parseValue(text, o) {
  const kinds = o.kind.split("|");
  const numeric = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;
  const one = (part) => (numeric.test(part) ? Number(part) : part);
  if (text === "") return null;
  if ((kinds.includes("pair") || kinds.includes("list")) && (text.includes(",") || !(kinds.includes("int") || kinds.includes("float")))) {
    return text.replace(/^[[(]|[\])]$/g, "").split(",").map((p) => p.trim()).filter((p) => p !== "").map(one);
  }
  if (kinds.includes("bool") && /^(true|false)$/i.test(text)) return text.toLowerCase() === "true";
  if ((kinds.includes("int") || kinds.includes("float")) && numeric.test(text)) return Number(text);
  if (kinds.includes("dict") && /^\s*\{/.test(text)) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

// Only options the user changed are sent: the tool's own defaults apply to the rest.
function collectOptions() {
  const options = {};
  for (const o of state.tool.options) {
    const input = $(`opt-${o.name}`);
    let value;
    if (o.kind === "bool") {
      value = input.checked;
      if (value === Boolean(o.default)) continue;
    } else if (o.kind === "choice") {
      value = input.value === "" ? null : o.choices[Number(input.value)];
      if (value === o.default) continue;
    } else {
      const text = input.value.trim();
      if (text === shownValue(o.default) || (text === "" && o.required)) continue;
      value = parseValue(text, o);
    }
    options[o.name] = value;
  }
  return options;
}

function fillQuick() {
  renderOptions();
  for (const [name, value] of Object.entries(state.tool.quick)) {
    const o = state.tool.options.find((x) => x.name === name);
    const input = $(`opt-${name}`);
    if (!o || !input) continue;
    if (o.kind === "bool") input.checked = Boolean(value);
    else if (o.kind === "choice") input.value = value === null ? "" : String(o.choices.indexOf(value));
    else input.value = shownValue(value);
  }
}

function clearErrors() {
  say("run-error", "");
  for (const node of document.querySelectorAll(".option.invalid")) {
    node.classList.remove("invalid");
    node.querySelector(".field-error").textContent = "";
  }
  for (const node of document.querySelectorAll("#tool-inputs .input-error")) { node.textContent = ""; node.hidden = true; }
  for (const node of document.querySelectorAll("#tool-inputs .input-row.invalid")) node.classList.remove("invalid");
}

// A refused request: the message at the option or input it names (422), else under the Run button (a cost over
// the limit with its estimate, a full queue with how long to wait).
function showRefusal(error) {
  const body = error.body || {};
  const field = typeof body.field === "string" ? body.field : null;
  const option = body.in === "options" && field ? document.querySelector(`.option[data-option="${CSS.escape(field)}"]`) : null;
  if (option) {
    option.classList.add("invalid");
    option.querySelector(".field-error").textContent = error.message;
    option.querySelector("input, select").focus();
    say("run-error", `Not run: ${field} is marked in red.`);
    return;
  }
  const input = field ? document.querySelector(`#tool-inputs .input-row[data-input="${CSS.escape(field)}"]`) : null;
  if (input) {
    input.classList.add("invalid");
    say(input.querySelector(".input-error").id, error.message);
    say("run-error", `Not run: the ${field} is marked in red.`);
    return;
  }
  if (error.status === 429) {
    say("run-error", `Not run: ${error.message}. Try again in ${error.retryAfter || "a few"} s.`);
    return;
  }
  say("run-error", `Not run: ${error.message}`);
}

function inputRow(name, label, ...content) {
  return el("div", { class: "input-row", "data-input": name, id: `${name}-input` },
    el("span", { class: "input-name", text: label }), el("span", { class: "input-value" }, ...content),
    el("span", { class: "input-error field-message", id: `${name}-input-error`, role: "alert", hidden: true }));
}

// What the tool takes, from this page's choices: the picture, the model(s), a dataset, the class, the layer.
function renderInputs() {
  const t = state.tool;
  if (!t) return;
  const rows = [];
  const model = currentModel();
  if (t.inputs.includes("models")) {
    const ticked = new Set([...document.querySelectorAll("#models-pick input:checked")].map((i) => i.value));
    const all = !$("models-pick");
    rows.push(inputRow("models", "Models", el("span", { id: "models-pick" }, state.models.map((m) => el("label", { class: "pick" },
      el("input", { type: "checkbox", name: "models", value: m.id, checked: all || ticked.has(m.id) }), ` ${m.name}`)))));
  } else if (model) {
    rows.push(inputRow("model", "Model", el("code", { text: model.name }), el("span", { class: "muted small", text: "(change it at the top)" })));
  }
  if (t.inputs.includes("image")) {
    rows.push(inputRow("image", "Picture",
      state.image ? el("img", { class: "input-thumb", src: `/api/images/${enc(state.image)}.png?size=160`, alt: state.imageName }) : "",
      el("span", { text: state.image ? state.imageName : "pick one on the left" })));
  }
  if (t.inputs.includes("dataset")) {
    const previous = $("dataset-select") ? $("dataset-select").value : suitedDataset();
    const select = el("select", { id: "dataset-select", onchange: () => { $("dataset-help").textContent = datasetHelp(select.value); } },
      state.datasets.map((d) => el("option", { value: d.name, text: d.name, selected: d.name === previous })));
    const zip = el("input", { type: "file", id: "dataset-upload", accept: ".zip,application/zip", hidden: true,
      onchange: (event) => { uploadDataset(event.target.files[0]); event.target.value = ""; } });
    rows.push(inputRow("dataset", "Dataset", select,
      el("label", { class: "link small", for: "dataset-upload", title: "a zip of pictures (sub-folders: labels) and, under masks/, "
        + "each picture's object mask (white = object): the audit then measures how much of each map is on the object", text: "upload a zip…" }), zip,
      el("span", { id: "dataset-help", class: "muted small", text: datasetHelp(select.value) })));
  }
  if (t.inputs.includes("target")) {
    let [name, how] = targetWords();
    if (state.target === null && !t.inputs.includes("image")) { // no picture of its own: it draws the picture's top-1
      const top = state.top[0];
      [name, how] = top ? [`${top.label} (class ${top.index})`, ", the picture's top-1"] : ["the picture's top-1 class", ""];
    }
    rows.push(inputRow("target", "Class", el("span", { id: "class-input-name" }, name, el("span", { class: "muted", text: how })),
      el("span", { class: "muted small", text: "· pick another on the left" })));
  }
  if (t.inputs.includes("layer")) {
    const picked = state.toolLayer;
    const problem = picked ? layerProblem(t, picked) : null;
    let content;
    if (picked && !problem) {
      content = [el("code", { id: "layer-input-name", text: picked.name }), el("span", { class: "muted small", text: "(picked in the tree) —" }),
        el("button", { type: "button", class: "link small", id: "layer-default", text: "use the default instead", onclick: clearToolLayer })];
    } else if (picked) {
      content = [el("span", { class: "warn small", id: "layer-unusable", text: `${problem}, so ${t.name} cannot use it.` }),
        el("span", { class: "small", text: `It uses the default: ${defaultLayer(t)}.` })];
    } else {
      content = [el("span", { text: `the default: ${defaultLayer(t)}` }), el("span", { class: "muted small", text: "· pick another in the layer tree" })];
    }
    rows.push(inputRow("layer", "Layer", ...content));
  }
  $("tool-inputs").replaceChildren(...rows);
}

// The dataset made for the current model (its description names it), else the first.
function suitedDataset() {
  const model = currentModel();
  const found = model && state.datasets.find((d) => d.description.includes(model.name));
  return found ? found.name : (state.datasets[0] || {}).name;
}

function datasetHelp(name) {
  const found = state.datasets.find((d) => d.name === name);
  if (!found) return "";
  const model = currentModel();
  const other = model && found.description.includes("(for ") && !found.description.includes(model.name);
  return other ? `${found.description} — made for another model: pick that model at the top for a meaningful result` : found.description;
}

function requestBody(t) {
  const body = {};
  if (t.inputs.includes("model")) body.model = state.model;
  if (t.inputs.includes("models")) body.models = [...document.querySelectorAll("#models-pick input:checked")].map((i) => i.value);
  if (t.inputs.includes("image")) body.image = state.image;
  if (t.inputs.includes("dataset")) body.dataset = $("dataset-select").value;
  if (t.inputs.includes("target") && state.target !== null) body.target = state.target;
  // a tool without a picture (the class image) has no top-1 of its own: it draws the picture's top-1 class
  else if (t.inputs.includes("target") && !t.inputs.includes("image") && state.top.length) body.target = state.top[0].index;
  const layer = t.inputs.includes("layer") ? chosenLayer(t) : null;
  if (layer) body.layer = layer;
  body.options = collectOptions();
  return body;
}

// -- jobs and result cards ---------------------------------------------------------------------------
async function runTool() {
  const t = state.tool;
  clearErrors();
  if (t.inputs.includes("image") && !state.image) { say("run-error", "Pick a picture first (step 1, on the left)."); return; }
  const body = requestBody(t);
  if (body.models && !body.models.length) {
    $("models-input").classList.add("invalid");
    say("models-input-error", "tick at least one model");
    return;
  }
  let job;
  try {
    job = await api(t.jobs, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (error) { showRefusal(error); return; }
  const card = resultCard(t, body, state.target !== null && "target" in body);
  $("results").prepend(card.node);
  $("results-empty").hidden = true;
  card.update(job);
  watch(job.id, card);
}

function subjectOf(request) {
  if (request.dataset) return `dataset ${request.dataset}`;
  if (request.models) return `${state.imageName} · ${request.models.length} model${request.models.length > 1 ? "s" : ""}`;
  return request.image ? state.imageName : currentModel().name;
}

// A result card: progress while the job runs, then its picture (or table, or embedding map), what it explains, its
// colour scale, and the download named by the server (cat_gradcam_tiger-cat.png).
function resultCard(tool, request, targetChosen) {
  const what = subjectOf(request);
  const model = request.model ? currentModel().name : "";
  const frame = el("div", { class: "frame" });
  const facts = el("div", { class: "facts" });
  const actions = el("div", { class: "actions" });
  const bar = el("span");
  const text = el("div", { class: "progress-text", text: "starting…" });
  const cancel = el("button", { type: "button", text: "Cancel", onclick: () => card.cancel() });
  frame.append(el("div", { class: "progress" }, el("div", { class: "progress-bar" }, bar), text, cancel));
  const node = el("article", { class: "card", "data-tool": tool.name, "data-status": "queued" },
    el("div", { class: "card-head" }, el("strong", { text: tool.name }),
      el("span", { class: "muted small", text: `${tool.family} · ${what}${request.model && what !== model ? ` · ${model}` : ""}` }),
      el("button", { type: "button", class: "close", title: "remove", text: "×", onclick: () => { card.cancel(); node.remove(); } })),
    frame, facts, actions);
  const card = {
    node, id: null, finished: false,
    update(job) {
      card.id = job.id;
      if (card.finished) return;
      node.dataset.status = job.status;
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
      } else card.fail(job.error || "failed");
    },
    done(job) {
      const r = job.result;
      const url = job.urls.result;
      const file = r.filename || `${tool.name}.png`;
      let img = null;
      if (r.kind === "embedding" && r.points && job.urls.sprite) {
        frame.replaceChildren(embeddingMap(r.points, job.urls.sprite));
        node.classList.add("full", "embedding");
      } else if (r.kind === "table") {
        frame.replaceChildren(el("pre", { class: "table-text", text: r.text }));
        node.classList.add("wide", "table");
      } else {
        // an explanation or a picture sits beside the others; a figure (comparison, curves, audit, grids) gets a whole row
        const figure = !PICTURE_KINDS.includes(r.kind);
        node.classList.toggle("full", figure);
        img = el("img", { src: url, alt: r.caption || `${tool.name} result`, onload: () => {
          const w = img.naturalWidth;
          node.classList.toggle("full", figure || w >= FULL_WIDTH);
          node.classList.toggle("wide", !figure && w < FULL_WIDTH && w > 1.6 * img.naturalHeight);
          img.classList.toggle("pixelated", w < 200);
        } });
        frame.replaceChildren(img);
      }
      const options = Object.entries(request.options).map(([k, v]) => `${k}=${shownValue(v)}`).join(", ");
      const made = [];
      if (r.layer) {
        made.push(el("span", { class: "fact-layer" }, "layer ", el("code", { text: r.layer }),
          request.layer ? el("span", { class: "muted", text: " (picked in the tree)" }) : ""));
      }
      if (r.target !== null && r.target !== undefined) {
        made.push(el("span", { class: "fact-class", text: `class ${r.target}${r.label ? ` (${r.label})` : ""}${targetChosen ? ", chosen by you" : ""}` }));
      }
      facts.replaceChildren(
        el("div", { class: "caption", text: r.caption || r.kind }),
        r.scale ? el("div", { class: "scale" }, el("span", { class: "scale-key", text: "Colours: " }), r.scale) : "",
        made.length ? el("div", { class: "made" }, made.flatMap((m, i) => (i ? [" · ", m] : [m]))) : "",
        el("div", { class: "muted" }, `${r.kind} · ${job.seconds}s`, options ? ` · ${options}` : ""),
        r.kind !== "table" && r.text && r.text.includes("\n")
          ? el("details", { open: r.kind === "ranking" }, el("summary", { text: "as text" }), el("pre", { text: r.text })) : "");
      const download = el("a", { href: url, download: file, class: "download", text: "Download PNG", title: file });
      const links = [download, el("a", { href: url, target: "_blank", rel: "noopener", text: "full size" })];
      if (job.urls.map && img) {
        let overlay = true;
        links.push(el("button", { type: "button", class: "link", text: "map only", onclick: (event) => {
          overlay = !overlay;
          img.src = overlay ? url : job.urls.map;
          download.href = img.src;
          download.download = overlay ? file : file.replace(/\.png$/, "_map.png");
          download.title = download.download;
          event.target.textContent = overlay ? "map only" : "over the picture";
        } }));
      }
      actions.replaceChildren(...links);
    },
    fail(message) {
      card.finished = true;
      node.dataset.status = "error";
      node.classList.add("error");
      frame.replaceChildren(el("p", { class: "err", text: message }));
    },
    async cancel() {
      if (!card.id || card.finished) return;
      cancel.disabled = true;
      text.textContent = "cancelling…";
      try { await api(`/api/jobs/${enc(card.id)}/cancel`, { method: "POST" }); } catch (error) { text.textContent = `could not cancel: ${error.message}`; }
    },
  };
  return card;
}

// -- the embedding map: a scatter coloured by true label (crosses: misclassified); hovering a point shows its
// picture, cut from the job's sprite sheet with background-position (no request per point).
const THUMB = 112; // pixels of the hovered picture

function embeddingMap(data, sprite) {
  const points = data.points;
  const labels = [...new Set(points.map((p) => String(p.label)))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const colour = (label) => PALETTE[labels.indexOf(String(label)) % PALETTE.length];
  const wrong = (p) => p.predicted !== null && p.predicted !== undefined && String(p.predicted) !== String(p.label);
  const r = Math.max(0.004, Math.min(0.012, 0.012 * Math.sqrt(400 / Math.max(1, points.length))));
  const plot = svg("svg", { class: "embed-svg", viewBox: "-0.03 -0.03 1.06 1.06", role: "img",
    "aria-label": `${points.length} pictures on a 2-D map (${data.method}), coloured by label` });
  plot.append(svg("rect", { x: -0.03, y: -0.03, width: 1.06, height: 1.06, class: "embed-bg" }));
  const order = points.map((p, i) => i).sort((a, b) => Number(wrong(points[a])) - Number(wrong(points[b]))); // crosses on top
  for (const i of order) {
    const p = points[i];
    const x = p.x;
    const y = 1 - p.y;
    if (wrong(p)) { // a cross in the true label's colour, outlined in black
      const d = r * 1.5;
      const cross = `M${x - d} ${y - d}L${x + d} ${y + d}M${x - d} ${y + d}L${x + d} ${y - d}`;
      plot.append(svg("path", { d: cross, class: "pt miss-outline" }));
      plot.append(svg("path", { d: cross, stroke: colour(p.label), class: "pt miss", "data-i": i }));
    } else {
      plot.append(svg("circle", { cx: x, cy: y, r, fill: colour(p.label), class: "pt", "data-i": i }));
    }
  }
  const halo = svg("circle", { r: r * 2.2, class: "halo", visibility: "hidden" });
  plot.append(halo);
  const thumb = el("div", { class: "embed-thumb", role: "img", "aria-label": "the hovered picture" });
  const info = el("div", { class: "embed-info", text: "Hover a point to see its picture." });
  const hover = el("div", { class: "embed-hover" }, thumb, info);
  let shown = null;
  const show = (i) => {
    if (shown === i) return;
    shown = i;
    const p = points[i];
    halo.setAttribute("cx", String(p.x));
    halo.setAttribute("cy", String(1 - p.y));
    halo.setAttribute("visibility", "visible");
    hover.dataset.i = String(i);
    if (p.cell !== null && p.cell !== undefined && data.columns) {
      const row = Math.floor(p.cell / data.columns);
      const col = p.cell % data.columns;
      thumb.style.backgroundImage = `url("${sprite}")`;
      thumb.style.backgroundSize = `${data.columns * THUMB}px auto`;
      thumb.style.backgroundPosition = `${-col * THUMB}px ${-row * THUMB}px`;
    }
    const lines = [el("div", {}, "label ", el("strong", { text: String(p.label) }))];
    if (p.predicted !== null && p.predicted !== undefined) {
      lines.push(el("div", { class: wrong(p) ? "err" : "" }, "predicted ", el("strong", { text: String(p.predicted) }),
        p.probability !== null && p.probability !== undefined ? ` (${percent(p.probability)})` : "", wrong(p) ? " — misclassified" : ""));
    }
    lines.push(el("div", { class: "muted small", text: `picture ${i + 1} of ${data.total}` }));
    info.replaceChildren(...lines);
  };
  // the nearest point to the pointer (within a few radii), so small points are easy to hover
  plot.addEventListener("pointermove", (event) => {
    const matrix = plot.getScreenCTM();
    if (!matrix) return;
    const at = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
    let best = null;
    let bestDistance = (4 * r) ** 2;
    for (let i = 0; i < points.length; i += 1) {
      const dx = points[i].x - at.x;
      const dy = 1 - points[i].y - at.y;
      const distance = dx * dx + dy * dy;
      if (distance < bestDistance) { best = i; bestDistance = distance; }
    }
    if (best !== null) show(best);
  });
  const counts = new Map(labels.map((l) => [l, [0, 0]]));
  for (const p of points) { const c = counts.get(String(p.label)); c[0] += 1; if (wrong(p)) c[1] += 1; }
  const legend = el("ul", { class: "embed-legend" }, labels.map((label) => el("li", {},
    el("span", { class: "swatch", style: { background: colour(label) } }), el("span", { text: label }),
    el("span", { class: "muted small", text: ` ${counts.get(label)[0]}${counts.get(label)[1] ? `, ${counts.get(label)[1]} wrong` : ""}` }))));
  const misses = points.filter(wrong).length;
  const key = el("p", { class: "muted small" }, `${data.method}. `, `Dots: pictures coloured by their true label; crosses: `
    + `the ${misses} the model gets wrong. Close points look alike to the model.`
    + (data.count < data.total ? ` The first ${data.count} of ${data.total} are drawn.` : ""));
  return el("div", { class: "embed" }, plot, el("div", { class: "embed-side" }, hover, legend, key));
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
  $("notice-close").addEventListener("click", () => { $("notice").hidden = true; });
  $("class-search").addEventListener("input", searchClasses);
  $("target-reset").addEventListener("click", () => setTarget(null, null));
  $("layer-filter").addEventListener("input", renderTree);
  $("tool-select").addEventListener("change", (event) => selectTool(event.target.value));
  $("run").addEventListener("click", runTool);
  $("quick").addEventListener("click", fillQuick);
  $("defaults").addEventListener("click", renderOptions);
  $("options").addEventListener("submit", (event) => { event.preventDefault(); runTool(); });
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
  await Promise.all([loadSamples(), loadTools()]);
  await selectModel(data.default);
  await selectImage("sample-cat", "cat");
  document.body.dataset.ready = "1";
}

init().catch(report);
