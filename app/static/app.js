// The search page: text or image queries against the /v1 API, results as a grid.
"use strict";

const $ = (id) => document.getElementById(id);

// Near-duplicates: hits whose cosine similarity to a better hit is at least this.
const DEDUPE = 0.95;

function options() {
  const k = Math.min(1000, Math.max(1, parseInt($("k").value, 10) || 10));
  const opts = { target: $("target").value, k };
  const cutoff = parseFloat($("min-score").value);
  if (Number.isFinite(cutoff)) opts.min_score = Math.min(1, Math.max(-1, cutoff));
  if ($("dedupe").checked) opts.dedupe = DEDUPE;
  return opts;
}

function showError(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

async function call(url, init, label) {
  showError("");
  $("summary").textContent = "searching…";
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    $("summary").textContent = "";
    showError(`The server did not answer: ${err.message}`);
    return;
  }
  const body = await response.json().catch(() => ({}));
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
  await searchImage(await response.blob(), `item-${id}`, `images like #${id}`);
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
    score.textContent = `score ${hit.score.toFixed(3)} · #${hit.id}` + explain(hit.parts);
    item.append(text, score);
    if (hit.image_url) {
      const similar = document.createElement("button");
      similar.type = "button";
      similar.textContent = "similar images";
      similar.addEventListener("click", () => similarTo(hit.image_url));
      item.append(similar);
    }
    list.append(item);
  }
  $("summary").textContent =
    `${label}: ${body.count} result(s) by ${body.mode || "vector"} from the ${body.index.modality} index ` +
    `(${body.index.ntotal} vectors) ` +
    `in ${body.took_ms.toFixed(1)} ms`;
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
  if (query) searchText(query);
});

$("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (file) searchImage(file, file.name);
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) searchImage(file, file.name);
});

checkReady();
