// One job's page (#job/ID): live progress (stage, rate, ETA) over the job's server-sent events, the log tail,
// a fine-tune's curves (loss, learning rate, every validation metric against step: details.series), the
// evaluation report, and a promotion's decision with both models' reports side by side.
"use strict";

const AdminJob = (() => {
  let following = null; // {id, abort}
  let last = null;

  function stop() {
    if (following) following.abort.abort();
    following = null;
  }

  async function show(id) {
    if (following && following.id === id) return;
    stop();
    last = null;
    $("job-title").textContent = `job #${id}`;
    for (const part of ["job-outcome", "job-decision", "job-curves", "job-report"]) $(part).hidden = true;
    render(await api(`/jobs/${id}`));
    if (last && ["succeeded", "failed", "cancelled"].includes(last.status)) return;
    following = { id, abort: new AbortController() };
    follow(following);
  }

  // fetch, not EventSource: the stream needs the Authorization header
  async function follow(state) {
    while (following === state) {
      try {
        const response = await fetch(`/v1/admin/jobs/${state.id}/events`, {
          headers: { Authorization: `Bearer ${key()}` }, signal: state.abort.signal,
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            onEvent(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
        if (last && ["succeeded", "failed", "cancelled"].includes(last.status)) {
          if (following === state) following = null; // finished: a later refresh (a retry) fetches it again
          return;
        }
      } catch (err) {
        if (state.abort.signal.aborted) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000)); // dropped: follow again
    }
  }

  function onEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (name === "job" && data.length) render(JSON.parse(data.join("\n")));
  }

  function render(job) {
    last = job;
    $("job-title").textContent = `job #${job.id} · ${job.kind} · ${jobStatus(job)}`;
    $("job-title").className = `status-${job.result && job.result.refused ? "refused" : job.status}`;
    $("job-actions").replaceChildren(...jobActions(job));
    renderProgress(job);
    renderOutcome(job);
    renderDecision(job.result && job.result.decision);
    renderCurves((job.details || {}).series);
    renderReport(job);
    $("job-tail").textContent = [...(job.log || []), job.error && !job.result?.refused ? job.error : ""].join("\n").trim() || "(no log yet)";
  }

  function renderProgress(job) {
    const d = job.details || {};
    const parts = [];
    if (d.stage) parts.push(`stage: ${d.stage}`);
    if (d.done != null) parts.push(d.total != null ? `${d.done}/${d.total} ${d.unit || ""}` : `${d.done} ${d.unit || ""}`);
    if (d.rate != null) parts.push(`${d.rate.toFixed(2)} ${d.unit || "items"}/s`);
    if (d.eta_s != null && job.status === "running") parts.push(`ETA ${Math.ceil(d.eta_s)} s`);
    const text = el("div", parts.join(" · "), "stage-line");
    text.id = "job-stage";
    $("job-progress").replaceChildren(progress(job), text);
  }

  function renderOutcome(job) {
    const outcome = $("job-outcome");
    const result = job.result || {};
    let text = "";
    if (result.refused) text = result.refused;
    else if (job.status === "failed") text = `failed: ${(job.error || "").split("\n")[0]}`;
    else if (job.status === "cancelled") text = `cancelled${result.cancelled ? `: ${result.cancelled}` : ""}`;
    else if (job.status === "succeeded" && result.stopped_early) text = `stopped early at step ${result.steps} (validation stopped improving)`;
    outcome.textContent = text;
    outcome.className = `outcome ${result.refused ? "refused" : job.status}`;
    outcome.hidden = !text;
  }

  function renderDecision(decision) {
    $("job-decision").hidden = !decision;
    if (!decision) return;
    const reports = decision.reports || {};
    const cand = reports.candidate || {};
    const act = reports.active || {};
    $("decision-candidate").textContent = "candidate";
    $("decision-active").textContent = decision.active_model_id ? `active (model #${decision.active_model_id})` : "active";
    const names = [...new Set([...Object.keys(cand), ...Object.keys(act)])]
      .filter((k) => typeof (cand[k] ?? act[k]) === "number" && !["seconds", "pairs"].includes(k));
    const rows = names.map((name) => {
      const row = el("tr");
      if (name === decision.metric) row.className = "decider";
      cell(row, name === decision.metric ? `${name} (decides)` : name);
      cell(row, metricText(cand[name]));
      cell(row, metricText(act[name]));
      cell(row, cand[name] != null && act[name] != null ? metricText(cand[name] - act[name]) : "–");
      return row;
    });
    const verdict = el("tr", null, "verdict");
    cell(verdict, decision.promote ? (decision.forced && !decision.beats ? "forced" : "promoted") : "refused");
    const set = `${decision.dataset}${decision.split ? `#${decision.split}` : ""}${cand.pairs != null ? `, ${cand.pairs} pairs` : ""}`;
    cell(verdict, `${metricText(decision.candidate)} vs ${metricText(decision.active)} on ${decision.metric} (${set})`).colSpan = 3;
    $("decision-rows").replaceChildren(...rows, verdict);
  }

  function renderCurves(series) {
    const has = series && series.train && series.train.length;
    $("job-curves").hidden = !has;
    if (!has) return;
    const steps = series.train.map((r) => r[0]);
    lineChart($("chart-loss"), "training loss", steps, [{ label: "loss", values: series.train.map((r) => r[1]) }], { yLabel: "loss" });
    lineChart($("chart-lr"), "learning rate", steps, [{ label: "lr", values: series.train.map((r) => r[2]) }], { yLabel: "lr" });
    const val = series.val || [];
    const metrics = val.length ? Object.keys(val[0]).filter((k) => k !== "step") : [];
    const recalls = metrics.filter((m) => m.includes("R@")); // the chart's scale is recall; the table has all
    lineChart($("chart-val"), "validation", val.map((v) => v.step), recalls.map((m) => ({ label: m, values: val.map((v) => v[m] ?? null) })),
      { yLabel: "recall" });
    const head = el("tr");
    for (const name of ["step", ...metrics]) head.append(el("th", name));
    $("val-head").replaceChildren(head);
    $("val-rows").replaceChildren(...val.map((v) => {
      const row = el("tr");
      for (const name of ["step", ...metrics]) cell(row, name === "step" ? fmt(v[name]) : metricText(v[name]));
      return row;
    }));
  }

  function renderReport(job) {
    const result = { ...(job.result || {}) };
    delete result.decision;
    delete result.refused;
    const entries = Object.entries(result);
    $("job-report").hidden = !entries.length;
    $("report-rows").replaceChildren(...entries.map(([name, value]) => {
      const row = el("tr");
      cell(row, name);
      if (value && typeof value === "object" && !Array.isArray(value) && Object.values(value).every((v) => typeof v !== "object")) {
        cell(row, Object.entries(value).map(([k, v]) => `${k} ${fmt(v)}`).join(" · "));
      } else cell(row, fmt(value));
      return row;
    }));
  }

  function redraw() {
    for (const id of ["chart-loss", "chart-lr", "chart-val"]) {
      const node = $(id);
      if (node._chart) { node._chart.destroy(); node._chart = null; }
    }
    if (last) render(last);
  }

  return { show, stop, redraw };
})();
