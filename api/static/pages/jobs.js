// The job pages: a client of the JSON API like any other, with the key the user typed.
"use strict";

const KEY = "stillhouse.apiKey";
const SVG = "http://www.w3.org/2000/svg";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

function apiKey() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + apiKey(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) throw new Unauthorized("the API refused this key");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

async function json(path, options) { return (await api(path, options)).json(); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", { maximumFractionDigits: digits });
}

const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + " %");
// Shares of the eval set (agreement, accuracy) read as percentages wherever they appear.
const isShare = (name) => /agreement|accuracy/.test(name);
const mb = (bytes) => (bytes === null || bytes === undefined ? "–" : (bytes / 1e6).toFixed(3) + " MB");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

// --- the key ---------------------------------------------------------------------------------

function askForKey(message) {
  sessionStorage.removeItem(KEY);
  for (const id of ["list-view", "job-view", "not-found", "forget"]) $(id).hidden = true;
  $("key-form").hidden = false;
  $("key-error").hidden = !message;
  $("key-error").textContent = message || "";
  $("api-key").focus();
}

function withKey(run) {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("api-key").value = "";
    $("key-form").hidden = true;
    start(run);
  });
  $("forget").addEventListener("click", () => askForKey());
  if (apiKey()) start(run); else askForKey();
}

async function start(run) {
  $("forget").hidden = false;
  try {
    await run();
  } catch (error) {
    if (error instanceof Unauthorized) askForKey("That key was refused (401). Try another.");
    else showError(error);
  }
}

function showError(error) {
  $("page-error").hidden = false;
  $("page-error").textContent = "Error: " + error.message;
}

// --- the list --------------------------------------------------------------------------------

async function listJobs(cursor) {
  $("list-view").hidden = false;
  const query = new URLSearchParams({ limit: "50" });
  if (cursor) query.set("cursor", cursor);
  const page = await json("/v1/jobs?" + query);
  const body = document.querySelector("#jobs-table tbody");
  if (!cursor) body.replaceChildren();
  for (const job of page.items) {
    const row = el("tr");
    const link = el("a", job.id);
    link.href = "/jobs/" + encodeURIComponent(job.id);
    const idCell = el("td");
    idCell.append(link);
    row.append(idCell, statusCell(job.status), el("td", job.stage || ""),
      el("td", pct(job.progress), "num"), el("td", `${job.epoch} / ${job.epochs}`, "num"),
      el("td", pct(agreementOf(job)), "num"), el("td", when(job.created_at)));
    body.append(row);
  }
  $("jobs-empty").hidden = body.children.length > 0;
  const more = $("more");
  more.hidden = !page.next_cursor;
  more.onclick = () => listJobs(page.next_cursor).catch(showError);
}

// A finished job's final agreement (its report), else the latest epoch's.
function agreementOf(job) {
  const metrics = job.metrics || {}, report = job.report || {};
  for (const value of [report.agreement_top1, metrics.agreement_top1, metrics.eval_agreement]) {
    if (typeof value === "number") return value;
  }
  return null;
}

function statusCell(status) {
  const cell = el("td");
  cell.append(el("span", status, "status " + status));
  return cell;
}

// --- one job ---------------------------------------------------------------------------------

const jobId = () => decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");

async function showJob() {
  const id = jobId();
  const base = "/v1/jobs/" + encodeURIComponent(id);
  let job;
  try {
    job = await json(base);
  } catch (error) {
    if (error.status !== 404) throw error;
    $("missing-id").textContent = id;
    $("not-found").hidden = false;
    return;
  }
  $("job-view").hidden = false;
  $("job-id").textContent = id;
  $("cancel-job").onclick = () => cancelJob(base).catch(showError);
  renderJob(job);
  await Promise.all([renderMetrics(base), renderHistory(base)]);
  if (TERMINAL.includes(job.status)) renderReport(base, job);
  else follow(base);
}

function renderJob(job) {
  const status = $("job-status");
  status.textContent = job.status;
  status.className = "status " + job.status;
  $("job-stage").textContent = job.stage ? "stage: " + job.stage.replace("_", " ") : "";
  $("job-progress").value = job.progress;
  $("job-progress-text").textContent = pct(job.progress);
  $("job-epoch").textContent = `epoch ${job.epoch} / ${job.epochs}`;
  $("job-error").hidden = !job.error;
  if (job.error) $("job-error").textContent = `${job.error.code}: ${job.error.message}`;
  $("cancel-job").hidden = TERMINAL.includes(job.status);
  const list = $("job-metrics");
  list.replaceChildren();
  const shown = Object.entries(job.metrics || {}).filter(([, v]) => typeof v === "number");
  for (const [name, value] of shown.slice(0, 12)) {
    const pair = el("div");
    pair.dataset.name = name;
    pair.append(el("dt", name.replaceAll("_", " ")), el("dd", isShare(name) ? pct(value) : fmt(value, 4)));
    list.append(pair);
  }
}

async function cancelJob(base) {
  const button = $("cancel-job");
  button.disabled = true;
  try {
    renderJob(await json(base + "/cancel", { method: "POST" }));
  } finally {
    button.disabled = false;
  }
}

// Live progress: EventSource cannot send the Authorization header, so the stream is read
// with fetch() and parsed here (blank-line separated "event:", "id:", "data:" fields).
async function follow(base) {
  $("job-live").hidden = false;
  let lastEpoch = null;
  try {
    const response = await api(base + "/events", { headers: { Accept: "text/event-stream" } });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parseSse(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (!message.data) continue;
        const data = JSON.parse(message.data);
        renderJob(data);
        if (data.epoch !== lastEpoch) {
          lastEpoch = data.epoch;
          renderMetrics(base).catch(showError);
        }
        if (message.event === "status") {
          $("job-live").hidden = true;
          await Promise.all([renderMetrics(base), renderHistory(base)]);
          renderReport(base, data);
          return;
        }
      }
    }
  } finally {
    $("job-live").hidden = true;
  }
}

function parseSse(block) {
  const message = {};
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    message[name] = message[name] ? message[name] + "\n" + value : value;
  }
  return message;
}

const HISTORY_PAGES = 10;

async function renderHistory(base) {
  const events = [];
  let cursor = null;
  for (let i = 0; i < HISTORY_PAGES; i++) {
    const query = new URLSearchParams({ limit: "200" });
    if (cursor) query.set("cursor", cursor);
    const page = await json(`${base}/events?${query}`, { headers: { Accept: "application/json" } });
    events.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  const list = $("history");
  list.replaceChildren();
  // Checkpoints come every N steps: a run of them is one line.
  let run = [];
  const flush = () => {
    if (run.length === 0) return;
    const last = run[run.length - 1];
    const attempt = last.attempt ? ` (attempt ${last.attempt})` : "";
    const count = run.length > 1 ? `${run.length} checkpoints` : "checkpoint";
    list.append(el("li", `${when(last.created_at)} · ${count}${attempt}: last at step ${last.data.step}, epoch ${last.data.epoch}`));
    run = [];
  };
  for (const event of events) {
    if (event.kind === "checkpoint") { run.push(event); continue; }
    flush();
    const attempt = event.attempt ? ` (attempt ${event.attempt})` : "";
    const item = el("li", `${when(event.created_at)} · ${historyLine(event, attempt)}`);
    // The soft labels' cache key is for the service, not the reader: kept as a tooltip.
    if (event.kind === "soft_labels" && event.data && event.data.key) item.title = "cache key " + event.data.key;
    list.append(item);
  }
  flush();
  if (cursor) list.append(el("li", "… more in GET " + base + "/events"));
}

function historyLine(event, attempt) {
  const data = event.data || {};
  if (event.kind === "soft_labels") return `soft labels computed and saved for reuse${attempt}`;
  const details = event.kind === "stage" ? String(data.stage).replace("_", " ")
    : Object.entries(data).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k} ${v}`).join(", ");
  return `${event.kind}${attempt}${details ? ": " + details : ""}`;
}

// --- curves ----------------------------------------------------------------------------------

async function renderMetrics(base) {
  const rows = (await json(base + "/metrics")).items;
  // A resumed attempt repeats the epoch it resumed in: plot the latest attempt's row.
  const byEpoch = new Map();
  for (const row of rows) byEpoch.set(row.epoch, row);
  const epochs = [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  const series = (key) => epochs.filter((r) => r[key] !== null).map((r) => [r.epoch, r[key]]);
  lineChart($("loss-chart"), [
    { name: "train loss", color: "#1f6feb", points: series("train_loss") },
    { name: "soft (KD) loss", color: "#8250df", points: series("soft_loss"), dash: "5 4" },
    { name: "hard (label) loss", color: "#bc4c00", points: series("hard_loss") },
  ], { format: (v) => fmt(v, 3) });
  lineChart($("agreement-chart"), [
    { name: "top-1 agreement", color: "#1a7f37", points: series("eval_agreement") },
  ], { format: (v) => Math.round(100 * v) + " %", min: 0, max: 1 });
}

// A round step near span / count: 1, 2 or 5 times a power of ten.
function niceStep(span, count) {
  const raw = span / count, power = 10 ** Math.floor(Math.log10(raw));
  const unit = [1, 2, 5, 10].find((m) => m * power >= raw * (1 - 1e-9));
  return unit * power;
}

function lineChart(container, allSeries, options) {
  const series = allSeries.filter((s) => s.points.length > 0);
  container.replaceChildren();
  if (series.length === 0) {
    container.append(el("div", "No finished epoch yet.", "empty"));
    return;
  }
  const W = 460, H = 250, left = 62, right = 12, top = 12, bottom = 58;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = options.min ?? Math.min(...ys), y1 = options.max ?? Math.max(...ys);
  if (options.min === undefined) y0 = Math.min(y0, 0);
  if (y1 - y0 < 1e-12) y1 = y0 + 1;
  // Grid lines at round values: the axis ends at the first round value at or above the data.
  const yStep = niceStep(y1 - y0, 5);
  y0 = Math.floor(y0 / yStep + 1e-9) * yStep;
  y1 = Math.ceil(y1 / yStep - 1e-9) * yStep;
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (H - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": series.map((s) => s.name).join(", ") });
  const ticks = Math.round((y1 - y0) / yStep);
  for (let i = 0; i <= ticks; i++) {
    const y = Number((y0 + i * yStep).toPrecision(12));  // no 0.30000000000000004
    chart.append(svg("line", { x1: left, x2: W - right, y1: sy(y), y2: sy(y), stroke: "#d8dee4" }));
    chart.append(svg("text", { x: left - 6, y: sy(y) + 4, "text-anchor": "end", "font-size": 11, fill: "#5c6670", class: "y-tick" }, options.format(y)));
  }
  // Epochs at whole round steps (1, 2, 5, 10, ...), the first epoch always labelled.
  const xStep = Math.max(1, niceStep(x1 - x0, 8));
  const xTicks = [x0];
  for (let x = Math.floor(x0 / xStep + 1) * xStep; x <= x1; x += xStep) xTicks.push(x);
  for (const x of xTicks) {
    chart.append(svg("text", { x: sx(x), y: H - bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#5c6670", class: "x-tick" }, x));
  }
  chart.append(svg("text", { x: (left + W - right) / 2, y: H - bottom + 32, "text-anchor": "middle", "font-size": 11, fill: "#5c6670" }, "epoch"));
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    chart.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || "none", class: "series", "data-name": s.name }));
    for (const p of s.points) chart.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.color }));
    const lx = left + i * 130;
    chart.append(svg("rect", { x: lx, y: H - 16, width: 12, height: 4, fill: s.color }));
    chart.append(svg("text", { x: lx + 16, y: H - 11, "font-size": 11, fill: "#1d232a" }, s.name));
  });
  container.append(chart);
}

// --- the report ------------------------------------------------------------------------------

async function renderReport(base, job) {
  if (job.status !== "succeeded") return;
  const report = await json(base + "/report");
  const t = report.teacher, s = report.student;
  const rows = [
    ["Parameters", fmt(t.parameters), fmt(s.parameters)],
    ["Size at fp32", mb(t.size_bytes_fp32), mb(s.size_bytes_fp32)],
    ["Size at fp16", mb(t.size_bytes_fp16), mb(s.size_bytes_fp16)],
    ["Latency, batch of 1", fmt(t.latency_ms_batch1, 3) + " ms", fmt(s.latency_ms_batch1, 3) + " ms"],
    ["Throughput", fmt(t.throughput_per_s, 0) + " /s", fmt(s.throughput_per_s, 0) + " /s"],
    ["Accuracy (eval labels)", pct(report.teacher_accuracy), pct(report.student_accuracy)],
    ["Agreement with the teacher (top-1)", "–", pct(report.agreement_top1)],
    ["KL(teacher ‖ student), T = 1", "–", fmt(report.kl_divergence, 4)],
    ["Compression (parameters)", "1×", report.compression_ratio ? fmt(report.compression_ratio, 1) + "× smaller" : "–"],
    ["Speedup (throughput)", "1×", fmt(report.speedup, 2) + "×"],
  ];
  const body = document.querySelector("#report-table tbody");
  body.replaceChildren();
  for (const [name, teacher, student] of rows) {
    const row = el("tr");
    row.append(el("td", name), el("td", teacher), el("td", student));
    body.append(row);
  }
  $("report-notes").textContent = `${fmt(report.eval_samples)} eval samples on ${report.device}; ` +
    `soft labels ${report.soft_labels}; ` +
    Object.entries(report.timings_s || {}).map(([k, v]) => `${k.replace("_", " ")} ${fmt(v, 2)} s`).join(", ");
  renderBaseline(report);
  renderCandidates(base, job, report);
  renderVariants(base, report);
  renderDownloads(base, job);
  $("report").hidden = false;
}

// With `baseline: true`: the same student trained on the hard labels alone, and the gain.
function renderBaseline(report) {
  const b = report.baseline, gain = report.distillation_gain;
  $("baseline").hidden = !b;
  if (!b) return;
  const signed = (v, text) => (v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + text);
  const points = (v) => signed(v, (100 * v).toFixed(2) + " points");
  const rows = [
    ["Accuracy (eval labels)", pct(b.student_accuracy), pct(report.student_accuracy), points(gain && gain.student_accuracy)],
    ["Agreement with the teacher (top-1)", pct(b.agreement_top1), pct(report.agreement_top1), points(gain && gain.agreement_top1)],
    ["KL(teacher ‖ student), T = 1 (lower is closer)", fmt(b.kl_divergence, 4), fmt(report.kl_divergence, 4), signed(gain && gain.kl_divergence, fmt(gain && gain.kl_divergence, 4))],
  ];
  const body = document.querySelector("#baseline-table tbody");
  body.replaceChildren();
  for (const cells of rows) {
    const row = el("tr");
    for (const text of cells) row.append(el("td", text));
    body.append(row);
  }
}

// A sweep: every candidate, the chosen one and the Pareto front marked, each downloadable.
function renderCandidates(base, job, report) {
  const candidates = report.candidates || [];
  $("candidates").hidden = candidates.length === 0;
  const body = document.querySelector("#candidates-table tbody");
  body.replaceChildren();
  const format = (job.student_formats || [])[0];
  for (const c of candidates) {
    const chosen = c.index === report.chosen;
    const row = el("tr", null, chosen ? "chosen" : "");
    row.dataset.index = String(c.index);
    row.dataset.pareto = String(Boolean(c.pareto));
    row.append(
      el("td", (c.pareto ? "◆ " : "") + c.index),
      el("td", fmt(c.temperature)),
      el("td", fmt(c.alpha)),
      el("td", fmt(c.size_ratio)),
      el("td", fmt(c.parameters)),
      el("td", fmt(c.latency_ms_batch1, 3) + " ms"),
      el("td", pct(c.agreement_top1)),
      el("td", pct(c.student_accuracy)),
      el("td", fmt(c.kl_divergence, 4)),
    );
    const cell = el("td");
    if (chosen) cell.append(el("strong", "chosen "));
    if (format) {
      const button = el("button", "Download " + format.replace("_", " "));
      button.dataset.candidate = String(c.index);
      button.addEventListener("click", () => download(base, format, button, c.index).catch(showError));
      cell.append(button);
    }
    row.append(cell);
    body.append(row);
  }
}

// Every downloadable file measured: bytes, speed, and what quantizing cost in agreement.
function renderVariants(base, report) {
  const variants = report.variants || [];
  $("variants").hidden = variants.length === 0;
  const body = document.querySelector("#variants-table tbody");
  body.replaceChildren();
  for (const v of variants) {
    const row = el("tr", null, v.within_margin === false ? "flagged" : "");
    row.dataset.format = v.format;
    const lost = v.agreement_loss === null || v.agreement_loss === undefined
      ? "–" : (100 * v.agreement_loss).toFixed(2) + " points";
    row.append(
      el("td", v.format.replace("_", " ")),
      el("td", mb(v.size_bytes)),
      el("td", fmt(v.latency_ms_batch1, 3) + " ms"),
      el("td", fmt(v.throughput_per_s, 0) + " /s at " + (v.throughput_batch || "?")),
      el("td", pct(v.agreement_top1)),
      el("td", pct(v.student_accuracy)),
      el("td", lost),
      el("td", v.within_margin === false ? "past the margin" : ""),
    );
    const cell = row.lastChild;
    const button = el("button", "Download");
    button.dataset.format = v.format;
    button.addEventListener("click", () => download(base, v.format, button).catch(showError));
    cell.append(button);
    body.append(row);
  }
}

function renderDownloads(base, job) {
  const box = $("downloads");
  box.replaceChildren();
  for (const format of job.student_formats || []) {
    const button = el("button", "Download " + format.replace("_", " "));
    button.dataset.format = format;
    button.addEventListener("click", () => download(base, format, button).catch(showError));
    box.append(button);
  }
}

// A plain link cannot carry the key: fetch the file, then hand it over as a blob URL.
async function download(base, format, button, candidate) {
  button.disabled = true;
  try {
    const which = candidate === undefined ? "" : `&candidate=${candidate}`;
    const response = await api(`${base}/student?format=${encodeURIComponent(format)}${which}`);
    const disposition = response.headers.get("content-disposition") || "";
    const match = /filename="?([^";]+)"?/.exec(disposition);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a");
    link.href = url;
    link.download = match ? match[1] : `student.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  withKey(jobId() ? showJob : () => listJobs(null));
});
