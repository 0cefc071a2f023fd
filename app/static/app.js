// The search page: text or image queries against the /v1 API, results as a grid.
"use strict";

const $ = (id) => document.getElementById(id);

// Near-duplicates: hits whose cosine similarity to a better hit is at least this.
const DEDUPE = 0.95;

// `relevance: false` leaves the relevance floor out (composite queries have no calibrated relevance).
function options({ relevance = true } = {}) {
  const k = Math.min(1000, Math.max(1, parseInt($("k").value, 10) || 10));
  const opts = { target: $("target").value, k };
  const floor = parseFloat($("min-relevance").value);
  if (relevance && floor > 0) opts.min_relevance = Math.min(1, floor);
  if ($("dedupe").checked) opts.dedupe = DEDUPE;
  return opts;
}

// The relevance slider shows its value, "off" at 0.
function showFloor() {
  const floor = parseFloat($("min-relevance").value);
  $("min-relevance-value").textContent = floor > 0 ? floor.toFixed(2) : "off";
}

function showError(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

// Searches can overlap (a weight edited, then a part removed at once): only the latest one is shown,
// whichever answers last.
let latestCall = 0;

async function call(url, init, label) {
  const mine = ++latestCall;
  showError("");
  $("summary").textContent = "searching…";
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (mine !== latestCall) return;
    $("summary").textContent = "";
    showError(`The server did not answer: ${err.message}`);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (mine !== latestCall) return;
  if (!response.ok) {
    $("summary").textContent = "";
    showError(body.detail ? `${body.detail} (${response.status})` : `Error ${response.status}`);
    return;
  }
  render(body, label);
}

function searchText(query) {
  return call("/v1/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, ...options(), ...($("mode").value ? { mode: $("mode").value } : {}) }),
  }, `"${query}"`);
}

function searchImage(blob, name, label) {
  const form = new FormData();
  form.append("file", blob, name || "query");
  const opts = options();
  for (const [name, value] of Object.entries(opts)) form.append(name, String(value));
  return call("/v1/search/image", { method: "POST", body: form }, label || `image ${name || ""}`.trim());
}

async function similarTo(imageUrl) {
  const response = await fetch(imageUrl);
  if (!response.ok) {
    showError(`Could not fetch ${imageUrl} (${response.status})`);
    return;
  }
  $("target").value = "image";
  const id = imageUrl.split("/").slice(-2, -1)[0];
  await startImage(await response.blob(), `item-${id}`, `images like #${id}`);
}

// A lexical or hybrid hit's place in each list: "· meaning #3 · words #6".
function explain(parts) {
  if (!parts) return "";
  const at = (name, part) => (part ? ` · ${name} #${part.rank}` : "");
  return at("meaning", parts.vector) + at("words", parts.lexical);
}

function render(body, label) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of body.data) {
    const item = document.createElement("li");
    if (hit.image_url) {
      const img = document.createElement("img");
      img.src = hit.image_url;
      img.alt = hit.text || hit.external_id;
      img.loading = "lazy";
      item.append(img);
    }
    const text = document.createElement("div");
    text.textContent = hit.text || hit.external_id;
    const score = document.createElement("div");
    score.className = "score";
    const relevance = hit.relevance === null || hit.relevance === undefined ? "" : ` · relevance ${hit.relevance.toFixed(2)}`;
    score.textContent = `score ${hit.score.toFixed(3)}${relevance} · #${hit.id}` + explain(hit.parts);
    item.append(text, score);
    if (hit.image_url) {
      const similar = document.createElement("button");
      similar.type = "button";
      similar.textContent = "similar images";
      similar.addEventListener("click", () => similarTo(hit.image_url));
      item.append(similar);
    }
    if (parts.length) item.append(refineButtons(hit));
    list.append(item);
  }
  $("summary").textContent =
    `${label}: ${body.count} result(s) by ${body.mode || "vector"} from the ${body.index.modality} index ` +
    `(${body.index.ntotal} vectors) ` +
    `in ${body.took_ms.toFixed(1)} ms` +
    (body.vector_weight != null ? ` · weights: meaning ${body.vector_weight.toFixed(2)}, words ` +
      `${(1 - body.vector_weight).toFixed(2)}` : "") +
    (body.relevance && !body.relevance.calibrated ? ` · no relevance: ${body.relevance.reason}` : "");
}

async function checkReady() {
  const status = $("status");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    status.textContent = response.ok ? `ready · ${body.model.spec}` : `not ready: ${body.problems.join("; ")}`;
    status.className = `status ${response.ok ? "ready" : "not-ready"}`;
  } catch (err) {
    status.textContent = "server unreachable";
    status.className = "status not-ready";
  }
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (query) {
    startQuery({ kind: "text", value: query, weight: 1 });
    searchText(query);
  }
});

$("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (file) startImage(file, file.name);
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) startImage(file, file.name);
});

// --- The running query as weighted parts (composite queries) ---
// A text or image search starts it. "more like this" / "less like this" on a hit add that item with
// weight +STEP / -STEP (on an item already there, its weight moves by STEP) and search all the parts
// at once (/v1/search/composite). The parts are listed with their weights: edit one, remove one, or
// reset to the search that started them. Every label is text (textContent), never markup. STEP is
// measured (docs/benchmarks.md, Composite queries): a drawing as a part at 0.25 already moves its
// likes the intended way in most queries and costs the query's own best hit least; at 0.5 it sends
// them to the top or the bottom; clicking again adds another step.
const STEP = 0.25;
let parts = [];
let origin = null;

function startQuery(part) {
  origin = part;
  parts = [{ ...part }];
  showParts();
}

async function startImage(blob, name, label) {
  let value;
  try {
    value = await readDataUrl(blob);
  } catch (err) {
    showError(`Could not read the image: ${err && err.message}`);
    return;
  }
  startQuery({ kind: "image", value, blob, name, weight: 1 });
  return searchImage(blob, name, label);
}

function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function partLabel(part) {
  if (part.kind === "text") return `"${part.value}"`;
  if (part.kind === "image") return `image ${part.name || ""}`.trim();
  return `#${part.value} ${part.name || ""}`.trim();
}

function button(text, className, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function weightInput(part, label) {
  const input = document.createElement("input");
  Object.assign(input, { type: "number", step: "0.1", min: "-100", max: "100", value: String(part.weight) });
  input.className = "weight";
  input.setAttribute("aria-label", `weight of ${label}`);
  input.addEventListener("change", () => {
    const value = parseFloat(input.value);
    if (!Number.isFinite(value)) {
      input.value = String(part.weight);
      return;
    }
    part.weight = Math.min(100, Math.max(-100, value));
    runParts();
  });
  return input;
}

function showParts() {
  const list = $("parts");
  list.replaceChildren();
  parts.forEach((part, at) => {
    const item = document.createElement("li");
    item.className = part.weight < 0 ? "negative" : "positive";
    const label = document.createElement("span");
    label.className = "part-label";
    label.textContent = partLabel(part);
    label.title = label.textContent;
    const remove = button("×", "remove", "remove this part", () => {
      parts.splice(at, 1);
      runParts();
    });
    remove.setAttribute("aria-label", `remove ${label.textContent}`);
    item.append(label, weightInput(part, label.textContent), remove);
    list.append(item);
  });
  $("refine").hidden = parts.length === 0 && origin === null;
}

function refineButtons(hit) {
  const box = document.createElement("div");
  box.className = "refine-buttons";
  box.append(
    button("more like this", "more", `add #${hit.id} to the query, weight +${STEP}`, () => refine(hit, 1)),
    button("less like this", "less", `add #${hit.id} to the query, weight -${STEP}`, () => refine(hit, -1)),
  );
  for (const b of box.children) b.dataset.id = String(hit.id);
  return box;
}

function refine(hit, sign) {
  const at = parts.findIndex((p) => p.kind === "item" && p.value === hit.id);
  if (at < 0) {
    parts.push({ kind: "item", value: hit.id, name: hit.text || hit.external_id, weight: sign * STEP });
  } else {
    parts[at].weight = Math.round((parts[at].weight + sign * STEP) * 1000) / 1000;
    if (parts[at].weight === 0) parts.splice(at, 1);
  }
  return runParts();
}

function partBody(part) {
  if (part.kind === "text") return { text: part.value, weight: part.weight };
  if (part.kind === "image") return { image_base64: part.value, weight: part.weight };
  return { item: part.value, weight: part.weight };
}

// One part at weight 1 is the search that started the query (its own endpoint, any mode); more
// parts are one composite search, ranked by `vector` or `hybrid` (a composite has no `lexical`).
function runParts() {
  showParts();
  if (!parts.length) {
    $("results").replaceChildren();
    $("summary").textContent = "no query parts left: search again, or reset";
    return;
  }
  const [only] = parts;
  if (parts.length === 1 && only.weight === 1 && only.kind === "text") return searchText(only.value);
  if (parts.length === 1 && only.weight === 1 && only.kind === "image") return searchImage(only.blob, only.name);
  const mode = $("mode").value;
  const body = { parts: parts.map(partBody), ...options({ relevance: false }) };
  if (mode === "vector" || mode === "hybrid") body.mode = mode;
  return call("/v1/search/composite", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }, `${parts.length} part(s)`);
}

$("reset-parts").addEventListener("click", () => {
  if (origin === null) return;
  parts = [{ ...origin }];
  runParts();
});

$("min-relevance").addEventListener("input", showFloor);
showFloor();
checkReady();
