// The admin page: jobs with live progress (polled every second), cancel and retry; models with their
// reports, evaluate, promote and roll back. The key lives in this tab's sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
let selectedJob = null;
let selectedModel = null;
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
  if (!response.ok) throw new Error(body.detail ? `${body.detail} (${response.status})` : `HTTP ${response.status}`);
  return body;
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  row.append(td);
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async (event) => {
    event.stopPropagation();
    try { await onClick(); showError(""); } catch (err) { showError(err.message); }
    refresh();
  });
  return b;
}

function progress(job) {
  const wrap = document.createElement("div");
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.style.width = `${Math.round(job.progress * 100)}%`;
  bar.append(fill);
  const text = document.createElement("div");
  const eta = job.details && job.details.eta_s != null && job.status === "running" ? `, ETA ${Math.ceil(job.details.eta_s)} s` : "";
  text.className = "progress-text";
  text.textContent = `${Math.round(job.progress * 100)}% ${job.message || ""}${eta}`;
  wrap.append(bar, text);
  return wrap;
}

function renderJobs(jobs) {
  const body = $("jobs");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    if (job.id === selectedJob) row.className = "selected";
    cell(row, `${job.id}`);
    cell(row, job.kind);
    const cancelling = job.cancel_requested_at && job.status === "running";
    cell(row, cancelling ? "running (cancelling)" : job.status).className = `status-${job.status}`;
    cell(row, progress(job));
    cell(row, `${job.attempts}/${job.max_attempts}`);
    cell(row, new Date(job.created_at).toLocaleString());
    const actions = cell(row, "");
    if (job.status === "queued" || (job.status === "running" && !cancelling)) {
      actions.append(button("Cancel", () => api(`/jobs/${job.id}/cancel`, { method: "POST" })));
    }
    if (job.status === "failed" || job.status === "cancelled") {
      actions.append(button("Retry", () => api(`/jobs/${job.id}/retry`, { method: "POST" })));
    }
    row.addEventListener("click", () => { selectedJob = job.id; refresh(); });
    body.append(row);
    if (job.id === selectedJob) {
      $("job-log").hidden = false;
      $("job-log").textContent = [job.error || "", ...(job.log || [])].join("\n").trim() || "(no log yet)";
    }
  }
}

function metric(model) {
  const report = model.eval_report || {};
  const evaluation = (report.evaluations || {}).db || Object.values(report.evaluations || {})[0] || report.val || report.held_out;
  if (!evaluation) return "–";
  const r1 = evaluation["t2i_R@1"];
  return r1 == null ? "–" : `t2i R@1 ${r1.toFixed(3)} · i2t R@1 ${(evaluation["i2t_R@1"] ?? 0).toFixed(3)}`;
}

function renderModels(models) {
  const body = $("models");
  body.replaceChildren();
  for (const model of models) {
    const row = document.createElement("tr");
    row.dataset.model = model.id;
    if (model.id === selectedModel) row.className = "selected";
    cell(row, `${model.id}`);
    cell(row, model.name || model.spec);
    cell(row, model.status).className = `status-${model.status}`;
    cell(row, model.parent_id ? `#${model.parent_id}` : "");
    cell(row, metric(model));
    cell(row, model.promoted_at ? new Date(model.promoted_at).toLocaleString() : "");
    const actions = cell(row, "");
    const queued = (what) => async () => {
      const job = await api(`/models/${model.id}/${what}`, { method: "POST", body: "{}" });
      $("notice").textContent = `Queued job #${job.id}: ${what} model #${model.id}.`;
    };
    actions.append(button("Evaluate", queued("evaluate")));
    if (model.status !== "active") actions.append(button("Promote", queued("promote")));
    row.addEventListener("click", () => { selectedModel = model.id; refresh(); });
    body.append(row);
    if (model.id === selectedModel) {
      $("model-report").hidden = false;
      $("model-report").textContent = JSON.stringify(model.eval_report, null, 2);
    }
  }
}

async function refresh() {
  if (!key()) return;
  try {
    const [jobs, models] = await Promise.all([api("/jobs?limit=25"), api("/models?limit=25")]);
    renderJobs(jobs.data);
    renderModels(models.data);
    $("status").textContent = `signed in · ${jobs.count} job(s) · ${models.count} model(s)`;
    $("status").className = "status ready";
  } catch (err) {
    showError(err.message);
    if (err.message.includes("(401)") || err.message.includes("(403)")) signOut();
  }
}

function signIn(value) {
  sessionStorage.setItem("crossmodal-admin-key", value);
  $("admin").hidden = false;
  $("sign-out").hidden = false;
  $("key").value = "";
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 1000);
}

function signOut() {
  sessionStorage.removeItem("crossmodal-admin-key");
  clearInterval(timer);
  $("admin").hidden = true;
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
$("rollback").addEventListener("click", async () => {
  try {
    const body = await api("/rollback", { method: "POST", body: "{}" });
    showError("");
    $("notice").textContent = `Rolled back: model #${body.active.id} is active (was #${body.previous.id}).`;
  } catch (err) { showError(err.message); }
  refresh();
});
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

if (key()) signIn(key());
