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

// The JSON answer; an error carries the server's JSON body (a 422 names the refused field and its range).
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.body = typeof body === "object" ? body : {};
    throw error;
  }
  return body;
}

const enc = encodeURIComponent;
const GROUP_TITLES = { cam: "class activation maps", gradient: "gradients", perturbation: "perturbation" };
const TAKES = { images: "the picture", image: "the picture", model: "the model only", models: "several models and the picture",
  dataset: "a dataset" };
const RETURNS = { map: "a map over the picture", pixels: "a value per pixel", picture: "a picture", feature_maps: "feature maps",
  filters: "filters", table: "a table" };
const MAX_STREAMS = 3; // open event streams at once (browsers allow 6 connections per host)

const state = {
  models: [], model: null, image: null, imageName: "", tools: [], tool: null, families: {}, datasets: [], useLayer: false,
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
  if ($("dataset-select")) $("dataset-select").value = suitedDataset();
  $("class-search").value = "";
  $("class-results").replaceChildren();
  setTarget(null, null);
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

async function selectImage(id, name) {
  state.image = id;
  state.imageName = name;
  $("picture").src = `/api/images/${enc(id)}.png?size=480`;
  $("picture-name").textContent = name;
  for (const b of $("samples").children) b.classList.toggle("current", b.dataset.id === id);
  setTarget(null, null);
  renderInputs();
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
  renderInputs();
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
  renderInputs();
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
    el("div", { class: "help", text: o.help || "" }),
    el("div", { class: "field-error", role: "alert" }));
}

// A text field's value as JSON: numbers, "a, b" pairs and lists, true/false; anything else as text (the server checks it).
function parseValue(text, o) {
  const kinds = o.kind.split("|");
  const number = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;
  const one = (part) => (number.test(part) ? Number(part) : part);
  if (text === "") return null;
  if ((kinds.includes("pair") || kinds.includes("list")) && (text.includes(",") || !(kinds.includes("int") || kinds.includes("float")))) {
    return text.replace(/^[[(]|[\])]$/g, "").split(",").map((p) => p.trim()).filter((p) => p !== "").map(one);
  }
  if (kinds.includes("bool") && /^(true|false)$/i.test(text)) return text.toLowerCase() === "true";
  if ((kinds.includes("int") || kinds.includes("float")) && number.test(text)) return Number(text);
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
  $("notice").hidden = true;
  for (const node of document.querySelectorAll(".option.invalid")) {
    node.classList.remove("invalid");
    node.querySelector(".field-error").textContent = "";
  }
}

// A refused request (422): the message under the option it names, else as a notice.
function showRefusal(error) {
  const body = error.body || {};
  const box = body.in === "options" && body.field ? document.querySelector(`.option[data-option="${CSS.escape(body.field)}"]`) : null;
  if (box) {
    box.classList.add("invalid");
    box.querySelector(".field-error").textContent = error.message;
    box.querySelector("input, select").focus();
  }
  notice(body.estimate ? `${error.message}` : error.message);
}

// What the tool takes, from this page's choices: the picture, the model(s), a dataset, the class, the layer.
function renderInputs() {
  const t = state.tool;
  if (!t) return;
  const rows = [];
  const model = currentModel();
  if (t.inputs.includes("models")) {
    rows.push(el("div", { class: "input-row" }, el("span", { class: "input-name", text: "Models" }),
      el("span", { id: "models-pick" }, state.models.map((m) => el("label", { class: "pick" },
        el("input", { type: "checkbox", name: "models", value: m.id, checked: true }), ` ${m.name}`)))));
  } else if (model) {
    rows.push(el("div", { class: "input-row" }, el("span", { class: "input-name", text: "Model" }), el("code", { text: model.name })));
  }
  if (t.inputs.includes("image")) {
    rows.push(el("div", { class: "input-row" }, el("span", { class: "input-name", text: "Picture" }),
      state.image ? el("img", { class: "input-thumb", src: `/api/images/${enc(state.image)}.png?size=160`, alt: state.imageName }) : "",
      el("span", { text: state.image ? state.imageName : "pick one on the left" })));
  }
  if (t.inputs.includes("dataset")) {
    const previous = $("dataset-select") ? $("dataset-select").value : suitedDataset();
    const select = el("select", { id: "dataset-select", onchange: () => { $("dataset-help").textContent = datasetHelp(select.value); } },
      state.datasets.map((d) => el("option", { value: d.name, text: d.name, selected: d.name === previous })));
    rows.push(el("div", { class: "input-row" }, el("label", { class: "input-name", for: "dataset-select", text: "Dataset" }), select,
      el("span", { id: "dataset-help", class: "muted small", text: datasetHelp(select.value) })));
  }
  if (t.inputs.includes("target")) {
    rows.push(el("div", { class: "input-row" }, el("span", { class: "input-name", text: "Class" }),
      el("span", { text: state.target === null ? "the top-1 class" : `${state.targetLabel} (class ${state.target})` }),
      el("span", { class: "muted small", text: "(pick another on the left)" })));
  }
  if (t.inputs.includes("layer")) {
    const usable = usableLayer();
    const name = usable ? state.layer.name : "(none selected)";
    const fallback = t.group === "cam" && model && model.default_cam_layer ? `the last feature map, ${model.default_cam_layer}` : "the tool's own choice";
    const check = el("input", { type: "checkbox", id: "use-layer", disabled: !usable, checked: usable && state.useLayer,
      onchange: (event) => { state.useLayer = event.target.checked; } });
    rows.push(el("div", { class: "input-row" }, el("span", { class: "input-name", text: "Layer" }),
      el("label", {}, check, " the selected layer ", el("code", { text: name })),
      el("span", { class: "muted small", text: `otherwise ${fallback}` })));
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
  return found ? found.description : "";
}

const usableLayer = () => Boolean(state.layer && (state.layer.maps || state.layer.filters));

function chosenLayer() {
  return state.tool.uses_layer && usableLayer() && state.useLayer ? state.layer.name : null;
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
  const layer = t.inputs.includes("layer") ? chosenLayer() : null;
  if (layer) body.layer = layer;
  body.options = collectOptions();
  return body;
}

// -- jobs and result cards ---------------------------------------------------------------------------
async function runTool() {
  const t = state.tool;
  if (t.inputs.includes("image") && !state.image) { notice("Pick a picture first."); return; }
  clearErrors();
  const body = requestBody(t);
  let job;
  try {
    job = await api(t.jobs, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (error) { showRefusal(error); return; }
  const card = resultCard(t, body);
  $("results").prepend(card.node);
  $("results-empty").hidden = true;
  card.update(job);
  watch(job.id, card);
}

function resultCard(tool, request) {
  const title = el("strong", { text: tool.name });
  const what = request.dataset ? `dataset ${request.dataset}` : request.image ? state.imageName : currentModel().name;
  const sub = el("span", { class: "muted small", text: `${tool.family} · ${what}` });
  const frame = el("div", { class: "frame" });
  const facts = el("div", { class: "facts" });
  const actions = el("div", { class: "actions" });
  const bar = el("span");
  const text = el("div", { class: "progress-text", text: "starting…" });
  const cancel = el("button", { type: "button", text: "Cancel", onclick: () => card.cancel() });
  const progress = el("div", { class: "progress" }, el("div", { class: "progress-bar" }, bar), text, cancel);
  frame.append(progress);
  const node = el("article", { class: "card", "data-tool": tool.name },
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
      const url = job.urls.result;
      const img = el("img", { src: url, alt: r.caption || `${tool.name} result`,
        onload: () => node.classList.toggle("wide", img.naturalWidth > 1.6 * img.naturalHeight) });
      frame.replaceChildren(img);
      const options = Object.entries(request.options).map(([k, v]) => `${k}=${shownValue(v)}`).join(", ");
      facts.replaceChildren(
        el("div", { class: "caption", text: r.caption || r.kind }),
        r.scale ? el("div", { class: "muted scale", text: `colours: ${r.scale}` }) : "",
        el("div", { class: "muted" }, `${r.kind} · ${job.seconds}s`, options ? ` · ${options}` : ""),
        r.text && r.text.includes("\n") ? el("details", {}, el("summary", { text: "as text" }), el("pre", { text: r.text })) : "");
      const file = `${tool.name}-${what}${r.label ? `-${r.label}` : ""}.png`.replace(/[^\w.-]+/g, "_");
      const links = [el("a", { href: url, download: file, text: "Download PNG" }), el("a", { href: url, target: "_blank", rel: "noopener", text: "full size" })];
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
