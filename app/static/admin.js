// The admin page's shell: sign-in (the key lives in this tab's sessionStorage only), the pages (#jobs, #job/ID,
// #models, #indexes, #keys) and the jobs list, refreshed every second. admin-job.js draws a job's own page,
// admin-pages.js the models, indexes and keys. Everything shown goes in through textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const PAGES = ["jobs", "job", "models", "indexes", "keys"];
let timer = null;

const key = () => sessionStorage.getItem("crossmodal-admin-key");

function showError(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

async function api(path, init = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(init.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(`/v1/admin${path}`, { ...init, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : body.error?.message || JSON.stringify(body.detail ?? "");
    throw new Error(detail ? `${detail} (${response.status})` : `HTTP ${response.status}`);
  }
  return body;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  row.append(td);
  return td;
}

function fmt(value, digits = 3) {
  if (value == null) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// a metric, always with its decimals (a recall of 1 reads 1.000, as in "refused: 1.000 vs 1.000")
function metricText(value) {
  return typeof value === "number" ? value.toFixed(3) : fmt(value);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function button(label, onClick) {
  const b = el("button", label);
  b.type = "button";
  b.addEventListener("click", async (event) => {
    event.stopPropagation();
    try { await onClick(); showError(""); } catch (err) { showError(err.message); }
    refresh();
  });
  return b;
}

function progress(job) {
  const wrap = el("div");
  const bar = el("div", null, "bar");
  const fill = el("div");
  fill.style.width = `${Math.round(job.progress * 100)}%`;
  bar.append(fill);
  const eta = job.details && job.details.eta_s != null && job.status === "running" ? `, ETA ${Math.ceil(job.details.eta_s)} s` : "";
  wrap.append(bar, el("div", `${Math.round(job.progress * 100)}% ${job.message || ""}${eta}`, "progress-text"));
  return wrap;
}

function jobActions(job) {
  const actions = [];
  const cancelling = job.cancel_requested_at && job.status === "running";
  if (job.status === "queued" || (job.status === "running" && !cancelling)) {
    actions.push(button("Cancel", () => api(`/jobs/${job.id}/cancel`, { method: "POST" })));
  }
  if (job.status === "failed" || job.status === "cancelled") {
    actions.push(button("Retry", () => api(`/jobs/${job.id}/retry`, { method: "POST" })));
  }
  return actions;
}

function jobStatus(job) {
  if (job.result && job.result.refused) return "refused";
  return job.cancel_requested_at && job.status === "running" ? "running (cancelling)" : job.status;
}

function renderJobs(jobs) {
  const body = $("jobs");
  body.replaceChildren();
  for (const job of jobs) {
    const row = el("tr");
    row.dataset.job = job.id;
    const link = el("a", `${job.id}`);
    link.href = `#job/${job.id}`;
    cell(row, link);
    cell(row, job.kind);
    const status = jobStatus(job);
    cell(row, status).className = `status-${status === "refused" ? "refused" : job.status}`;
    cell(row, progress(job));
    cell(row, `${job.attempts}/${job.max_attempts}`);
    cell(row, when(job.created_at));
    cell(row, "").append(...jobActions(job));
    row.addEventListener("click", () => { location.hash = `#job/${job.id}`; });
    body.append(row);
  }
}

function route() {
  const [page, id] = (location.hash.replace(/^#/, "") || "jobs").split("/");
  return { page: PAGES.includes(page) ? page : "jobs", id: id ? Number(id) : null };
}

async function refresh() {
  if (!key()) return;
  const { page, id } = route();
  try {
    if (page === "jobs") {
      const jobs = await api("/jobs?limit=25");
      renderJobs(jobs.data);
      $("status").textContent = `signed in · ${jobs.count} job(s)`;
    } else if (page === "job") {
      await AdminJob.show(id);
      $("status").textContent = "signed in";
    } else {
      await AdminPages[page]();
      $("status").textContent = "signed in";
    }
    $("status").className = "status ready";
  } catch (err) {
    showError(err.message);
    if (err.message.includes("(401)") || err.message.includes("(403)")) signOut();
  }
}

function showPage() {
  const { page } = route();
  for (const name of PAGES) $(`page-${name}`).hidden = !key() || name !== page;
  if (page !== "job") AdminJob.stop();
  clearInterval(timer);
  if (!key()) return;
  refresh();
  // the jobs list polls; a job's page follows its server-sent events; the others refresh now and then
  if (page === "jobs") timer = setInterval(refresh, 1000);
  else if (page === "models") timer = setInterval(refresh, 5000);
}

function signIn(value) {
  sessionStorage.setItem("crossmodal-admin-key", value);
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("key").value = "";
  showPage();
}

function signOut() {
  sessionStorage.removeItem("crossmodal-admin-key");
  clearInterval(timer);
  AdminJob.stop();
  for (const name of PAGES) $(`page-${name}`).hidden = true;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("status").textContent = "signed out";
  $("status").className = "status";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("key").value.trim();
  if (value) signIn(value);
});
$("sign-out").addEventListener("click", signOut);
$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const params = JSON.parse($("job-params").value || "{}");
    const job = await api("/jobs", { method: "POST", body: JSON.stringify({ kind: $("job-kind").value, ...params }) });
    showError("");
    $("notice").textContent = `Queued job #${job.id} (${job.kind}).`;
  } catch (err) { showError(err.message); }
  refresh();
});
$("charts-on").checked = localStorage.getItem("crossmodal-admin-charts") !== "off";
$("charts-on").addEventListener("change", () => {
  localStorage.setItem("crossmodal-admin-charts", $("charts-on").checked ? "on" : "off");
  AdminJob.redraw();
  refresh();
});
window.addEventListener("hashchange", () => { showError(""); showPage(); });
