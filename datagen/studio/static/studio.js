// datagen studio: paint a label map, watch the model render it, browse and label vectors.
// No build step: plain browser JavaScript over the JSON/PNG API of datagen/studio/app.py.
"use strict";

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));

const S = {
  state: null,      // GET /api/state
  H: 0, W: 0,
  labels: null,     // Uint8Array(H*W): the painted map, one class id per pixel
  cls: null,        // selected class id
  tool: "brush",
  brush: 32,
  soft: 0,
  library: null,
  index: 0,
  grid: false,
  opacity: 0.45,
  scale: 1,         // display pixels per map pixel
  drawing: false,
  last: null,       // last stamped map position while drawing
  hover: null,
  inflight: false,  // one render request at a time; `dirty` asks for another after it
  dirty: false,
  renders: 0,
  image: null,      // Blob of the last render (PNG)
  bitmap: null,
  vectors: null,    // GET /api/vectors
  selected: new Set(),
};

const labelCanvas = document.createElement("canvas");  // the map in class colours, map resolution
let labelPixels = null;  // its ImageData
let colorOf = new Map(); // class id -> [r, g, b, a]

// ---- messages ------------------------------------------------------------------------------
function status(text) { $("#status").textContent = text; }

function showError(text) {
  $("#error-text").textContent = text;
  $("#error").hidden = false;
}

function hideError() { $("#error").hidden = true; }

async function errorOf(res) {
  try { const j = await res.json(); return j.error || res.statusText; } catch (_) { return `${res.status} ${res.statusText}`; }
}

// ---- state -----------------------------------------------------------------------------
async function loadState(url = "/api/state", method = "GET") {
  const res = await fetch(url, { method });
  const st = await res.json();
  S.state = st;
  $("#source").textContent = st.source + (st.mode === "library" ? " (library)" : "");
  $("#out-dir").textContent = `output folder: ${st.out_dir}`;
  if (st.error) {
    showError(`datagen studio: error: ${st.error}`);
    document.body.dataset.error = st.error;
    return;
  }
  delete document.body.dataset.error;
  hideError();
  const [H, W] = st.size;
  const resized = H !== S.H || W !== S.W || !S.labels;
  S.H = H; S.W = W;
  if (resized) {
    S.labels = new Uint8Array(H * W).fill(st.eraser);
    labelCanvas.width = W; labelCanvas.height = H;
    labelPixels = labelCanvas.getContext("2d").createImageData(W, H);
    S.scale = Math.max(1, Math.floor(560 / Math.max(H, W)));
    for (const c of [$("#paint"), $("#render")]) { c.width = W * S.scale; c.height = H * S.scale; }
  }
  colorOf = new Map(st.classes.map((c) => [c.id, c.id === st.eraser ? [0, 0, 0, 0] : hexRGBA(c.color)]));
  const ids = new Set(st.classes.map((c) => c.id));
  for (let i = 0; i < S.labels.length; i++) if (!ids.has(S.labels[i])) S.labels[i] = st.eraser;  // classes went away
  if (S.cls === null || !ids.has(S.cls) || S.cls === st.eraser) {
    const first = st.classes.find((c) => c.id !== st.eraser);
    S.cls = first ? first.id : st.eraser;
  }
  S.soft = st.soft_boundary;
  $("#soft").value = S.soft; $("#soft-out").textContent = S.soft;
  S.library = S.library && st.libraries.some((l) => l.name === S.library) ? S.library : st.library;
  buildPalette();
  buildLibraries();
  redrawLabels();
  drawAll();
  requestRender();
}

function hexRGBA(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255, 255];
}

function buildPalette() {
  const box = $("#palette");
  box.replaceChildren();
  S.state.classes.forEach((c, k) => {
    if (c.id === S.state.eraser && c.eraser) return;  // the added keep class is the eraser tool
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch" + (c.id === S.cls ? " active" : "");
    b.dataset.cls = c.id;
    b.title = (c.keep ? "keep: the generator's own activations" : `paint ${c.name}`) + (k < 9 ? ` (${k + 1})` : "");
    b.innerHTML = `<i style="background:${c.color}"></i><span></span><span class="id">${c.id}${c.keep ? " keep" : ""}</span>`;
    b.children[1].textContent = c.name;
    b.addEventListener("click", () => selectClass(c.id));
    box.appendChild(b);
  });
}

function selectClass(id) {
  S.cls = id;
  if (S.tool === "eraser") setTool("brush");
  $$(".swatch").forEach((b) => b.classList.toggle("active", Number(b.dataset.cls) === id));
}

function buildLibraries() {
  const sel = $("#library");
  sel.replaceChildren();
  for (const l of S.state.libraries) {
    const o = document.createElement("option");
    o.value = l.name;
    o.textContent = `${l.layer} (${l.layer_size[0]}×${l.layer_size[1]} cells)`;
    o.title = `vectors of library ${l.name}`;
    sel.appendChild(o);
  }
  sel.value = S.library || "";
  sel.disabled = S.state.libraries.length < 2;
}

function layerSize() {
  const l = S.state.libraries.find((x) => x.name === S.library);
  return l ? l.layer_size : S.state.layer_size;
}

// ---- drawing -------------------------------------------------------------------------------
function redrawLabels(y0 = 0, y1 = S.H, x0 = 0, x1 = S.W) {
  const d = labelPixels.data, L = S.labels, W = S.W;
  y0 = Math.max(0, y0); x0 = Math.max(0, x0); y1 = Math.min(S.H, y1); x1 = Math.min(W, x1);
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = y * W + x, c = colorOf.get(L[i]) || [255, 0, 255, 255], o = 4 * i;
      d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = c[3];
    }
  }
  labelCanvas.getContext("2d").putImageData(labelPixels, 0, 0);
}

function drawAll() {
  if (!S.labels) return;
  const cv = $("#paint"), g = cv.getContext("2d"), w = cv.width, h = cv.height;
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, w, h);
  if (S.bitmap) g.drawImage(S.bitmap, 0, 0, w, h);
  else { g.fillStyle = "#333"; g.fillRect(0, 0, w, h); }
  g.globalAlpha = S.opacity;
  g.drawImage(labelCanvas, 0, 0, w, h);
  g.globalAlpha = 1;
  if (S.grid) {
    const [lh, lw] = layerSize();
    g.strokeStyle = "rgba(255,255,255,0.55)";
    g.lineWidth = 1;
    g.beginPath();
    for (let k = 1; k < lw; k++) { const x = Math.round(k * w / lw) + 0.5; g.moveTo(x, 0); g.lineTo(x, h); }
    for (let k = 1; k < lh; k++) { const y = Math.round(k * h / lh) + 0.5; g.moveTo(0, y); g.lineTo(w, y); }
    g.stroke();
  }
  if (S.hover && S.tool !== "fill") {
    g.strokeStyle = "#fff";
    g.setLineDash([4, 3]);
    g.beginPath();
    g.arc(S.hover[0] * S.scale, S.hover[1] * S.scale, Math.max(1, S.brush / 2) * S.scale, 0, 2 * Math.PI);
    g.stroke();
    g.setLineDash([]);
  }
  const rv = $("#render"), rg = rv.getContext("2d");
  rg.imageSmoothingEnabled = false;
  if (S.bitmap) rg.drawImage(S.bitmap, 0, 0, rv.width, rv.height);
}

function mapPos(ev) {
  const r = $("#paint").getBoundingClientRect();
  return [(ev.clientX - r.left) * S.W / r.width, (ev.clientY - r.top) * S.H / r.height];
}

function paintValue() { return S.tool === "eraser" ? S.state.eraser : S.cls; }

function stamp(cx, cy, value) {
  const r = S.brush / 2, L = S.labels, W = S.W;
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(S.H - 1, Math.ceil(cy + r));
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(W - 1, Math.ceil(cx + r));
  const r2 = Math.max(r * r, 0.25);
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2) L[y * W + x] = value;
    }
  }
  return [y0, y1 + 1, x0, x1 + 1];
}

function strokeTo(p) {
  const value = paintValue(), a = S.last || p;
  const dist = Math.hypot(p[0] - a[0], p[1] - a[1]);
  const steps = Math.max(1, Math.ceil(dist / Math.max(0.5, S.brush / 4)));
  let box = [S.H, 0, S.W, 0];
  for (let k = 1; k <= steps; k++) {
    const t = k / steps, b = stamp(a[0] + t * (p[0] - a[0]), a[1] + t * (p[1] - a[1]), value);
    box = [Math.min(box[0], b[0]), Math.max(box[1], b[1]), Math.min(box[2], b[2]), Math.max(box[3], b[3])];
  }
  S.last = p;
  redrawLabels(...box);
}

function fill(p) {
  const W = S.W, H = S.H, L = S.labels, x = Math.floor(p[0]), y = Math.floor(p[1]);
  if (x < 0 || y < 0 || x >= W || y >= H) return;
  const from = L[y * W + x], to = S.cls;
  if (from === to) return;
  const stack = new Int32Array(W * H);
  let n = 0;
  stack[n++] = y * W + x;
  L[y * W + x] = to;
  while (n > 0) {
    const i = stack[--n], px = i % W;
    if (px > 0 && L[i - 1] === from) { L[i - 1] = to; stack[n++] = i - 1; }
    if (px < W - 1 && L[i + 1] === from) { L[i + 1] = to; stack[n++] = i + 1; }
    if (i >= W && L[i - W] === from) { L[i - W] = to; stack[n++] = i - W; }
    if (i < W * (H - 1) && L[i + W] === from) { L[i + W] = to; stack[n++] = i + W; }
  }
  redrawLabels();
}

function setTool(tool) {
  S.tool = tool;
  $$(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  drawAll();
}

// ---- rendering -------------------------------------------------------------------------------
function query(extra = {}) {
  const q = new URLSearchParams({ index: S.index, soft: S.soft, ...extra });
  if (S.library) q.set("library", S.library);
  return q.toString();
}

function requestRender() {
  S.dirty = true;
  pump();
}

async function pump() {
  if (S.inflight || !S.dirty || !S.state || S.state.error) return;
  S.dirty = false;
  S.inflight = true;
  const t0 = performance.now();
  try {
    const res = await fetch(`/api/render?${query()}`, {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: S.labels.slice(),
    });
    if (!res.ok) {
      showError(await errorOf(res));
    } else {
      const blob = await res.blob();
      S.image = blob;
      S.bitmap = await createImageBitmap(blob);
      S.renders += 1;
      document.body.dataset.renders = String(S.renders);
      const ms = Math.round(performance.now() - t0);
      $("#render-info").textContent = `index ${res.headers.get("X-Index")} · ${ms} ms (model ${Math.round(Number(res.headers.get("X-Render-Ms")))} ms)`;
      drawAll();
    }
  } catch (e) {
    showError(String(e));
  } finally {
    S.inflight = false;
    if (S.dirty) pump();
  }
}

function setIndex(i) {
  S.index = Math.max(0, Math.floor(Number(i) || 0));
  $("#index").value = S.index;
  requestRender();
}

async function loadLayout() {
  const res = await fetch(`/api/layout?${query()}`);
  if (!res.ok) { showError(await errorOf(res)); return; }
  S.labels = new Uint8Array(await res.arrayBuffer());
  redrawLabels();
  drawAll();
  requestRender();
}

// ---- exports ---------------------------------------------------------------------------------
async function exportBlob(kind) {
  const res = await fetch(`/api/export/${kind}?${query()}`, {
    method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: S.labels.slice(),
  });
  if (!res.ok) throw new Error(await errorOf(res));
  const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
  return { blob: await res.blob(), name: name ? name[1] : kind };
}

async function download(kind) {
  status(kind === "mask.png" || kind === "pair.zip"
    ? `exporting ${kind}… (mask: ${S.state.mask_mode}${S.state.mask_mode === "rendered" ? ": its classifier is fitted on first use, seconds" : ""})`
    : `exporting ${kind}…`);
  try {
    const { blob, name } = await exportBlob(kind);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    status(`exported ${name}`);
  } catch (e) {
    status("");
    showError(e.message);
  }
}

async function save() {
  status("saving…");
  const res = await fetch(`/api/save?${query({ name: $("#save-name").value })}`, {
    method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: S.labels.slice(),
  });
  if (!res.ok) { status(""); showError(await errorOf(res)); return; }
  const j = await res.json();
  status(`saved ${j.files.length} files: ${j.files[0].replace(/[^/\\]+$/, "")}`);
}

// ---- vectors ---------------------------------------------------------------------------------
async function loadVectors() {
  if (!S.state || S.state.error || !S.library) {
    $("#vector-grid").replaceChildren();
    $("#v-summary").textContent = S.state && !S.state.error ? "this recipe names no vector library" : "";
    return;
  }
  const res = await fetch(`/api/vectors?library=${encodeURIComponent(S.library)}`);
  if (!res.ok) { showError(await errorOf(res)); return; }
  S.vectors = await res.json();
  const v = S.vectors;
  $("#v-summary").textContent = `${v.library}: ${v.summary}` + (v.threshold != null ? `; tileable: score ≥ ${v.threshold.toFixed(3)}` : "");
  fillSelect($("#f-label"), [["", "all"], ["\u0000", "unlabelled"], ...v.labels.map((l) => [l, l])]);
  fillSelect($("#f-class"), [["", "all"], ...v.classes.map((c) => [c, c])]);
  fillSelect($("#f-cluster"), [["", "all"], ...v.clusters.map((c) => [String(c), String(c)])]);
  fillSelect($("#v-old"), v.labels.map((l) => [l, l]));
  $("#v-labels").replaceChildren(...v.labels.map((l) => Object.assign(document.createElement("option"), { value: l })));
  const known = new Set(v.vectors.map((r) => r.id));
  for (const id of [...S.selected]) if (!known.has(id)) S.selected.delete(id);
  showVectors();
}

function fillSelect(sel, options) {
  const keep = sel.value;
  sel.replaceChildren(...options.map(([value, text]) => Object.assign(document.createElement("option"), { value, textContent: text })));
  if (options.some(([value]) => value === keep)) sel.value = keep;
}

function shownVectors() {
  const lab = $("#f-label").value, cls = $("#f-class").value, clu = $("#f-cluster").value;
  let rows = S.vectors.vectors.filter((r) =>
    (lab === "" || (lab === "\u0000" ? r.label === null : r.label === lab)) &&
    (cls === "" || r.classes.includes(cls)) &&
    (clu === "" || String(r.cluster) === clu) &&
    (!$("#f-tileable").checked || r.tileable === true));
  if ($("#f-sort").value === "tile") rows = rows.slice().sort((a, b) => (b.tileability ?? -1) - (a.tileability ?? -1));
  return rows;
}

function showVectors() {
  const rows = shownVectors(), lib = encodeURIComponent(S.vectors.library);
  $("#v-count").textContent = `${rows.length} of ${S.vectors.vectors.length} vectors`;
  const cards = rows.map((r) => {
    const card = document.createElement("div");
    card.className = "card" + (S.selected.has(r.id) ? " selected" : "");
    card.dataset.id = r.id;
    const t = r.tileability == null ? "" : `<span class="${r.tileable ? "tile-yes" : "tile-no"}" title="tileability">t ${r.tileability.toFixed(3)}</span>`;
    card.innerHTML = `<div class="imgs">
        <img loading="lazy" alt="full replace" title="full replace" src="/api/vectors/${r.id}/full.png?library=${lib}">
        <img loading="lazy" alt="grid replace" title="grid replace (2x2 blocks)" src="/api/vectors/${r.id}/grid.png?library=${lib}">
      </div><div class="cap"><b>#${r.id}</b>${t}<span title="cluster">${r.cluster == null ? "" : "c" + r.cluster}</span><span class="lab"></span></div>`;
    const lab = card.querySelector(".lab");
    if (r.label) lab.textContent = r.label; else lab.remove();
    card.addEventListener("click", () => {
      if (S.selected.has(r.id)) S.selected.delete(r.id); else S.selected.add(r.id);
      card.classList.toggle("selected", S.selected.has(r.id));
      $("#v-selected").textContent = `${S.selected.size} selected`;
    });
    return card;
  });
  $("#vector-grid").replaceChildren(...cards);
  $("#v-selected").textContent = `${S.selected.size} selected`;
}

async function postJSON(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(await errorOf(res));
  return res.json();
}

async function labelSelected(label) {
  if (!S.selected.size) { showError("select vectors first (click their cards)"); return; }
  try {
    const j = await postJSON("/api/vectors/label", { library: S.library, ids: [...S.selected], label });
    status(`labelled ${j.ids.length} vectors ${j.label === null ? "(cleared)" : JSON.stringify(j.label)}`);
    await afterLabels();
  } catch (e) { showError(e.message); }
}

async function renameLabel() {
  const old = $("#v-old").value, nw = $("#v-new").value.trim();
  if (!old) return;
  try {
    const j = await postJSON("/api/vectors/rename", { library: S.library, old, new: nw || null });
    status(`renamed ${JSON.stringify(old)} to ${JSON.stringify(j.label)} on ${j.ids.length} vectors`);
    $("#v-new").value = "";
    await afterLabels();
  } catch (e) { showError(e.message); }
}

async function afterLabels() {
  await loadState();  // classes that paint by label (and a library's own classes) may have changed
  await loadVectors();
}

// ---- wiring ------------------------------------------------------------------------------------
function wire() {
  const cv = $("#paint");
  cv.addEventListener("pointerdown", (ev) => {
    if (!S.labels || ev.button !== 0) return;
    cv.setPointerCapture(ev.pointerId);
    const p = mapPos(ev);
    if (S.tool === "fill") { fill(p); drawAll(); requestRender(); return; }
    S.drawing = true;
    S.last = null;
    strokeTo(p);
    drawAll();
    requestRender();
  });
  cv.addEventListener("pointermove", (ev) => {
    if (!S.labels) return;
    const p = mapPos(ev);
    S.hover = p;
    if (S.drawing) { strokeTo(p); requestRender(); }
    drawAll();
  });
  const end = () => { if (S.drawing) { S.drawing = false; S.last = null; requestRender(); } };
  cv.addEventListener("pointerup", end);
  cv.addEventListener("pointercancel", end);
  cv.addEventListener("pointerleave", () => { S.hover = null; drawAll(); });

  $$(".tool").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("#brush").addEventListener("input", (e) => { S.brush = Number(e.target.value); $("#brush-out").textContent = S.brush; });
  $("#soft").addEventListener("input", (e) => { S.soft = Number(e.target.value); $("#soft-out").textContent = S.soft; requestRender(); });
  $("#library").addEventListener("change", (e) => { S.library = e.target.value; drawAll(); requestRender(); S.vectors = null; });
  $("#grid").addEventListener("change", (e) => { S.grid = e.target.checked; drawAll(); });
  $("#opacity").addEventListener("input", (e) => { S.opacity = Number(e.target.value); drawAll(); });
  $("#index").addEventListener("change", (e) => setIndex(e.target.value));
  $("#noise").addEventListener("click", () => setIndex(S.index + 1));
  $("#random").addEventListener("click", loadLayout);
  $("#clear").addEventListener("click", () => { S.labels.fill(S.state.eraser); redrawLabels(); drawAll(); requestRender(); });
  $$("[data-export]").forEach((b) => b.addEventListener("click", () => download(b.dataset.export)));
  $("#save").addEventListener("click", save);
  $("#reload").addEventListener("click", () => loadState("/api/reload", "POST"));
  $("#dismiss").addEventListener("click", hideError);

  $$(".tab").forEach((b) => b.addEventListener("click", () => {
    $$(".tab").forEach((t) => t.classList.toggle("active", t === b));
    $("#tab-paint").hidden = b.dataset.tab !== "paint";
    $("#tab-vectors").hidden = b.dataset.tab !== "vectors";
    if (b.dataset.tab === "vectors" && (!S.vectors || S.vectors.library !== S.library)) loadVectors();
  }));
  for (const id of ["#f-label", "#f-class", "#f-cluster", "#f-tileable", "#f-sort"]) $(id).addEventListener("change", showVectors);
  $("#v-select-all").addEventListener("click", () => { shownVectors().forEach((r) => S.selected.add(r.id)); showVectors(); });
  $("#v-select-none").addEventListener("click", () => { S.selected.clear(); showVectors(); });
  $("#v-assign").addEventListener("click", () => {
    const name = $("#v-label").value.trim();
    if (!name) { showError("type a label name first"); return; }
    labelSelected(name);
  });
  $("#v-unlabel").addEventListener("click", () => labelSelected(null));
  $("#v-rename").addEventListener("click", renameLabel);

  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key.toLowerCase();
    if (k === "b") setTool("brush");
    else if (k === "e") setTool("eraser");
    else if (k === "f") setTool("fill");
    else if (k === "n") setIndex(S.index + 1);
    else if (k === "[" || k === "]") {
      S.brush = Math.min(128, Math.max(1, S.brush + (k === "]" ? 4 : -4)));
      $("#brush").value = S.brush; $("#brush-out").textContent = S.brush; drawAll();
    } else if (/^[1-9]$/.test(k) && S.state && S.state.classes) {
      const c = S.state.classes.filter((x) => !x.eraser)[Number(k) - 1];
      if (c) selectClass(c.id);
    }
  });
}

// For tests and scripting: the page's own view of what it painted and received.
window.studio = {
  get renders() { return S.renders; },
  idle() { return !S.inflight && !S.dirty; },
  state() { return S.state; },
  labels() { return S.labels; },
  async imageBase64() { return S.image ? blobBase64(S.image) : null; },
  async exportBase64(kind) { return blobBase64((await exportBlob(kind)).blob); },
};

function blobBase64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",", 2)[1]);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

wire();
loadState().catch((e) => showError(String(e)));
