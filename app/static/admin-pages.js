// The models page (lineage, evaluations over time, the active model and the rollback target, two models
// compared), the indexes page (each version's ladder as recall@10-vs-QPS curves per rung) and the keys page.
"use strict";

const AdminPages = (() => {
  const compared = new Set(); // model ids ticked for comparison (two at most)
  let historyOf = null;
  let models = [];

  // a model's headline evaluation: the database's held-out pairs first, else any
  function evaluation(model) {
    const report = model.eval_report || {};
    const evaluations = report.evaluations || {};
    return evaluations.db || Object.values(evaluations)[0] || report.val || null;
  }

  function headline(model) {
    const e = evaluation(model);
    if (!e || e["t2i_R@1"] == null) return "–";
    return `t2i R@1 ${fmt(e["t2i_R@1"])} · i2t R@1 ${fmt(e["i2t_R@1"] ?? 0)}`;
  }

  // parents before children, each child indented under its parent
  function lineage(rows) {
    const byParent = new Map();
    const ids = new Set(rows.map((m) => m.id));
    for (const m of rows) {
      const parent = m.parent_id && ids.has(m.parent_id) ? m.parent_id : null;
      if (!byParent.has(parent)) byParent.set(parent, []);
      byParent.get(parent).push(m);
    }
    const out = [];
    const walk = (parent, depth) => {
      for (const m of (byParent.get(parent) || []).sort((a, b) => a.id - b.id)) {
        out.push([m, depth]);
        walk(m.id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  async function modelsPage() {
    const body = await api("/models?limit=100");
    models = body.data;
    const active = models.find((m) => m.id === body.active_id);
    const target = models.find((m) => m.id === body.rollback_target_id);
    $("models-summary").textContent = `active: ${active ? `#${active.id} ${active.name || ""}` : "none"} · rollback target: ${
      target ? `#${target.id} ${target.name || ""}` : "none"}`;
    $("rollback").disabled = !target;
    const rows = lineage(models).map(([model, depth]) => {
      const row = el("tr");
      row.dataset.model = model.id;
      if (model.id === historyOf) row.className = "selected";
      cell(row, `${model.id}`);
      const name = cell(row, `${depth ? `${"  ".repeat(depth - 1)}└ ` : ""}${model.name || model.spec}`);
      name.className = "lineage";
      const tags = [model.status];
      if (model.id === body.active_id) tags[0] = "active";
      if (model.id === body.rollback_target_id) tags.push("rollback target");
      cell(row, tags.join(" · ")).className = `status-${model.status}`;
      cell(row, model.parent_id ? `#${model.parent_id} → #${model.id}` : "");
      cell(row, headline(model));
      cell(row, when(model.promoted_at));
      const box = el("input");
      box.type = "checkbox";
      box.className = "compare-box";
      box.checked = compared.has(model.id);
      box.setAttribute("aria-label", `compare model ${model.id}`);
      box.addEventListener("click", (event) => event.stopPropagation());
      box.addEventListener("change", () => {
        if (box.checked) compared.add(model.id); else compared.delete(model.id);
        while (compared.size > 2) compared.delete(compared.values().next().value);
        modelsPage();
      });
      cell(row, box);
      const actions = cell(row, "");
      const queued = (what) => async () => {
        const job = await api(`/models/${model.id}/${what}`, { method: "POST", body: "{}" });
        $("notice").textContent = `Queued job #${job.id}: ${what} model #${model.id}.`;
      };
      actions.append(button("Evaluate", queued("evaluate")));
      if (model.id !== body.active_id) actions.append(button("Promote", queued("promote")));
      row.addEventListener("click", () => { historyOf = model.id; modelsPage(); });
      return row;
    });
    $("models").replaceChildren(...rows);
    renderCompare();
    renderHistory();
  }

  function renderCompare() {
    const pair = [...compared].map((id) => models.find((m) => m.id === id)).filter(Boolean);
    $("model-compare").hidden = pair.length !== 2;
    if (pair.length !== 2) return;
    const [a, b] = pair.map(evaluation);
    $("compare-title").textContent = `model #${pair[0].id} vs model #${pair[1].id}`;
    const names = [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])]
      .filter((k) => typeof (a || {})[k] === "number" || typeof (b || {})[k] === "number")
      .filter((k) => !["seconds", "n", "step", "pairs"].includes(k));
    const head = el("tr");
    for (const title of ["metric", `#${pair[0].id} ${pair[0].name || ""}`, `#${pair[1].id} ${pair[1].name || ""}`, "Δ"]) head.append(el("th", title));
    $("compare-head").replaceChildren(head);
    $("compare-rows").replaceChildren(...names.map((name) => {
      const row = el("tr");
      const [x, y] = [(a || {})[name], (b || {})[name]];
      cell(row, name);
      cell(row, metricText(x));
      cell(row, metricText(y));
      cell(row, x != null && y != null ? metricText(y - x) : "–");
      return row;
    }));
    const recall = names.filter((n) => n.includes("R@") || n.includes("recall") || n.includes("ndcg") || n.includes("mrr"));
    barChart($("chart-compare"), "metrics compared", recall,
      pair.map((m, i) => ({ label: `#${m.id}`, values: recall.map((n) => ([a, b][i] || {})[n] ?? null) })), { yLabel: "value" });
  }

  function renderHistory() {
    const model = models.find((m) => m.id === historyOf);
    const history = ((model || {}).eval_report || {}).history || [];
    $("model-history").hidden = !model;
    if (!model) return;
    $("history-title").textContent = `model #${model.id}: evaluations over time (${history.length})`;
    const metrics = [...new Set(history.flatMap((h) => Object.keys(h.metrics || {})))].filter((k) => k.includes("R@1"));
    lineChart($("chart-history"), "evaluations over time", history.map((_, i) => i + 1),
      metrics.map((m) => ({ label: m, values: history.map((h) => (h.metrics || {})[m] ?? null) })),
      { xLabel: "evaluation", yLabel: "recall", points: true });
    const head = el("tr");
    for (const title of ["when", "set", ...metrics]) head.append(el("th", title));
    $("history-head").replaceChildren(head);
    $("history-rows").replaceChildren(...history.map((h) => {
      const row = el("tr");
      cell(row, when(h.at));
      cell(row, h.key);
      for (const m of metrics) cell(row, metricText((h.metrics || {})[m]));
      return row;
    }));
  }

  async function indexesPage() {
    const body = await api("/indexes?limit=20");
    const root = $("indexes");
    root.replaceChildren(...body.data.map(indexCard));
  }

  function indexCard(index) {
    const stats = index.stats || {};
    const card = el("article", null, "index-card");
    card.dataset.index = index.id;
    card.append(el("h3", `index #${index.id} · model #${index.model_id} · ${index.modality} · ${index.kind} · ${index.status}`));
    const ladder = stats.ladder || [];
    const target = stats.target_recall;
    const served = Object.keys(stats.recall_by_query || {});
    const extra = [stats.memory_bytes != null ? `${(stats.memory_bytes / 2 ** 20).toFixed(2)} MiB` : null,
      stats.build_seconds != null ? `built in ${stats.build_seconds.toFixed(2)} s` : null].filter(Boolean).join(" · ");
    card.append(el("p", `published: ${index.kind}${stats.search_param ? ` (${stats.search_param}=${stats.search_value})` : ""} · recall@10 ${
      Object.entries(stats.recall_by_query || { served: stats.recall_at_10 }).map(([q, r]) => `${q} ${fmt(r)}`).join(", ")}${
      target != null ? ` · target ${fmt(target)}` : ""}${stats.qps_single != null ? ` · ${fmt(stats.qps_single, 0)} QPS` : ""}${
      extra ? ` · ${extra}` : ""}`, "published"));
    const chart = el("div", null, "chart wide ladder-chart");
    card.append(chart);
    const curves = ladder.map((rung) => {
      const points = rung.curve && rung.curve.length ? rung.curve : [{ recall: rung.recall, qps: rung.qps_single }];
      return { label: rung.kind, xs: points.map((p) => p.recall), ys: points.map((p) => p.qps) };
    });
    const chosen = ladder.find((r) => r.kind === index.kind);
    if (chosen) curves.push({ label: `published (${chosen.kind})`, xs: [chosen.recall], ys: [chosen.qps_single], dots: true, size: 12, width: 0 });
    if (ladder.length) {
      queueMicrotask(() => xyChart(chart, `recall@10 vs QPS (${served[0] || "served"} queries)`, curves,
        { xLabel: "recall@10", yLabel: "queries/s", logY: true, marks: target != null ? [{ x: target, label: `target ${target}` }] : [] }));
    }
    const table = el("table", null, "grid ladder");
    const head = el("tr");
    for (const title of ["rung", "factory", "recall@10", "same-modality recall", "QPS (1)", "QPS (64)", "memory", "build", "reached", "note"]) head.append(el("th", title));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    for (const rung of ladder) {
      const row = el("tr");
      if (rung.kind === index.kind) row.className = "chosen";
      cell(row, rung.kind === index.kind ? `${rung.kind} (published)` : rung.kind);
      cell(row, rung.factory);
      cell(row, fmt(rung.recall));
      cell(row, fmt(rung.recall_same));
      cell(row, fmt(rung.qps_single, 0));
      cell(row, fmt(rung.qps_batch, 0));
      cell(row, rung.memory_bytes != null ? `${(rung.memory_bytes / 2 ** 20).toFixed(2)} MiB` : "–");
      cell(row, rung.build_seconds != null ? `${rung.build_seconds.toFixed(2)} s` : "–");
      cell(row, rung.reached ? "yes" : "no");
      cell(row, rung.note || "");
      tbody.append(row);
    }
    table.append(thead, tbody);
    card.append(ladder.length ? table : el("p", `no ladder measured: ${stats.reason || (stats.incremental ? "extended from an earlier version" : "a kind set by the operator")}`));
    return card;
  }

  async function keysPage() {
    const body = await api("/keys");
    $("keys").replaceChildren(...body.data.map((k) => {
      const row = el("tr");
      row.dataset.key = k.id;
      cell(row, `${k.id}`);
      cell(row, k.name);
      cell(row, k.role);
      cell(row, k.prefix);
      cell(row, when(k.created_at));
      cell(row, when(k.last_used_at));
      cell(row, k.revoked_at ? when(k.revoked_at) : "").className = k.revoked_at ? "status-failed" : "";
      const actions = cell(row, "");
      if (!k.revoked_at) {
        actions.append(button("Revoke", async () => {
          if (!confirm(`Revoke key "${k.name}" (${k.prefix})? Clients using it are refused from their next request.`)) return;
          await api(`/keys/${k.id}`, { method: "DELETE" });
          $("notice").textContent = `Revoked key #${k.id} (${k.name}).`;
        }));
      }
      return row;
    }));
  }

  $("new-key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("/keys", { method: "POST", body: JSON.stringify({ name: $("new-key-name").value, role: $("new-key-role").value }) });
      $("new-key-secret").textContent = created.key;
      $("new-key").hidden = false;
      $("copied").textContent = "";
      $("new-key-name").value = "";
      showError("");
      await keysPage();
    } catch (err) { showError(err.message); }
  });
  $("copy-key").addEventListener("click", async () => {
    const text = $("new-key-secret").textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("copied").textContent = "copied";
    } catch (err) { // no clipboard (plain http): select it for Ctrl+C
      getSelection().selectAllChildren($("new-key-secret"));
      $("copied").textContent = "selected: press Ctrl+C";
    }
  });
  window.addEventListener("hashchange", () => { $("new-key").hidden = true; $("new-key-secret").textContent = ""; });
  $("rollback").addEventListener("click", async () => {
    try {
      const body = await api("/rollback", { method: "POST", body: "{}" });
      showError("");
      $("notice").textContent = `Rolled back: model #${body.active.id} is active (was #${body.previous.id}).`;
    } catch (err) { showError(err.message); }
    refresh();
  });

  return { models: modelsPage, indexes: indexesPage, keys: keysPage };
})();

if (key()) signIn(key());
