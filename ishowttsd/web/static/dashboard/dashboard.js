// The dashboard: state arrives over one WebSocket (/api/live); buttons call the control API.
import { api, el, showError, ago, setupLogin, token } from "./common.js";

const $ = (id) => document.getElementById(id);
let state = null;
let heard = { job: null, s: 0 };
let ws = null;
const PRIORITY = { important: "important", message: "message", text: "chat" };  // the daemon's names, for people

function wsUrl() {
  const u = new URL("api/live", location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

function connect() {
  ws = new WebSocket(wsUrl());
  ws.onopen = () => ws.send(JSON.stringify({ token: token() }));
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "state") { state = msg; $("link").classList.add("up"); render(); }
    else if (msg.type === "progress") { heard = { job: msg.job, s: msg.heard_s }; renderProgress(); }
    else if (msg.type === "down") { $("link").classList.remove("up"); showError($("error"), msg.message); }
    else if (msg.type === "error") { showError($("error"), msg.message); }
  };
  ws.onclose = (ev) => {
    $("link").classList.remove("up");
    if (ev.code === 4401) return;  // wrong token: the login form is shown by the API calls
    setTimeout(connect, 1000);
  };
}

async function act(fn) {
  try { showError($("error"), ""); await fn(); } catch (e) { showError($("error"), e.message); }
}

function lineItem(j, actions) {
  const li = $("line-tpl").content.firstElementChild.cloneNode(true);
  li.dataset.job = j.job;
  const prio = li.querySelector(".prio");
  prio.textContent = PRIORITY[j.priority] || j.priority; prio.classList.add(`prio-${j.priority}`);
  li.querySelector(".user").textContent = j.user || (j.source === "chat" ? "?" : j.source);
  li.querySelector(".line-text").textContent = j.text;
  const box = li.querySelector(".actions");
  for (const a of actions) box.append(a);
  return li;
}

function renderQueue(q) {
  const list = $("queue");
  list.replaceChildren(...q.jobs.map((j) => {
    const li = lineItem(j, [
      el("button", { class: "small", text: "Remove", title: "Remove this line", dataset: { act: "remove" },
        onclick: () => act(() => api(`api/queue/${encodeURIComponent(j.job)}`, { method: "DELETE" })) }),
      ...(j.user && j.source !== "control" ? [
        el("button", { class: "small", text: "Timeout", title: `Mute ${j.user} for 10 minutes`, dataset: { act: "timeout" },
          onclick: () => act(() => api("api/moderate/timeout", { method: "POST", json: { user: j.user, duration_s: 600 } })) }),
        el("button", { class: "small danger", text: "Ban", title: `Never read ${j.user} again (until restart)`, dataset: { act: "ban" },
          onclick: () => act(() => api("api/moderate/ban", { method: "POST", json: { user: j.user } })) }),
      ] : []),
    ]);
    li.querySelector(".wait").textContent = `waiting ${ago(j.waiting_s)}`;
    return li;
  }));
  $("queue-count").textContent = String(q.jobs.length);
  $("queue-empty").hidden = q.jobs.length > 0;
}

function renderHeld(lines) {
  $("held-card").hidden = lines.length === 0;
  $("held-count").textContent = String(lines.length);
  $("held").replaceChildren(...lines.map((j) => {
    const id = encodeURIComponent(j.job);
    const li = lineItem(j, [
      el("button", { class: "small", text: "Approve", dataset: { act: "approve" },
        onclick: () => act(() => api(`api/held/${id}/approve`, { method: "POST" })) }),
      el("button", { class: "small danger", text: "Reject", dataset: { act: "reject" },
        onclick: () => act(() => api(`api/held/${id}/reject`, { method: "POST" })) }),
    ]);
    const left = j.expires_in_s != null ? `, ${ago(j.expires_in_s)} left` : "";
    li.querySelector(".wait").textContent = `${j.hold || "held"}${left}`;
    return li;
  }));
}

function renderNow(q) {
  const cur = q.current;
  $("now-empty").hidden = !!cur;
  $("now-line").hidden = !cur;
  $("paused-badge").hidden = !q.paused;
  $("pause").hidden = q.paused;
  $("resume").hidden = !q.paused;
  if (!cur) return;
  $("now-line").dataset.job = cur.job;
  $("now-user").textContent = cur.user || cur.source;
  $("now-voice").textContent = cur.voice || (state.status.default_voice || "default voice");
  $("now-text").textContent = cur.text;
  renderProgress();
}

function renderProgress() {
  const cur = state && state.queue.current;
  let pct = 0;
  if (cur && heard.job === cur.job && cur.est_s > 0) pct = Math.min(99, (100 * heard.s) / cur.est_s);
  $("now-progress").style.width = `${pct}%`;
}

function renderHistory(lines) {
  $("history").replaceChildren(...lines.map((h) => {
    const li = lineItem(h, []);
    const badge = el("span", { class: `badge ${h.outcome}`, text: h.outcome });
    const meta = li.querySelector(".meta");
    meta.prepend(badge, " ");
    const why = h.reason && h.outcome !== "spoken" ? ` — ${h.reason}` : "";
    li.querySelector(".wait").textContent = `${ago(Math.max(0, Date.now() / 1000 - h.finished_at))} ago${why}`;
    li.dataset.outcome = h.outcome;
    return li;
  }));
}

function renderVoices(status) {
  // The voices come with the status only as the default; the list is fetched when it changes.
  const want = `${status.engine}|${status.default_voice}`;
  if (renderVoices.last === want) return;
  renderVoices.last = want;
  api("api/voices").then((v) => {
    $("voices").replaceChildren(...v.voices.map((x) => el("li", {},
      el("span", {}, el("strong", { text: x.id }), " ", el("span", { class: "muted small", text: `${x.engine}${x.usable ? "" : " — " + x.note}` })),
      x.default ? el("span", { class: "badge spoken", text: "default" })
        : x.usable ? el("button", { class: "small", text: "Make default",
            onclick: () => act(async () => { await api("api/voices/default", { method: "PUT", json: { voice: x.id } }); renderVoices.last = null; }) })
        : null)));
  }).catch((e) => showError($("error"), e.message));
}

const TELEMETRY = {
  gpu_freq_mhz: ["GPU clock", (v, t) => `${v} MHz` + (t.gpu_max_freq_mhz ? ` of ${t.gpu_max_freq_mhz}` : "")],
  gpu_temp_c: ["GPU temperature", (v) => `${v} °C`],
  power_mw: ["board power", (v) => `${(v / 1000).toFixed(1)} W`],
  nvpmodel: ["power mode", (v) => String(v)],
};

function renderHealth(s) {
  const wd = s.watchdog || {};
  const drift = wd.rtf_drift != null ? `, RTF ${wd.rtf_drift}× its warm-up pace` : "";
  const rows = [
    ["engine", `${s.engine}${s.ready ? " — warm" : " — warming up"}`],
    ["warm-up", s.warmup_s != null ? `${s.warmup_s} s` : "—"],
    ["watchdog", `${wd.phase || "—"}${wd.stalled ? " (stalled!)" : ""}${drift}${wd.trigger_reason ? ` — ${wd.trigger_reason}` : ""}`],
    ["last line RTF", s.last_job ? String(s.last_job.rtf) : "—"],
    ["lines spoken", String((s.jobs || {}).done ?? 0)],
    ["uptime", ago(s.uptime_s || 0)],
  ];
  const t = s.telemetry || {};
  for (const [k, [label, fmt]] of Object.entries(TELEMETRY)) {
    if (t[k] != null) rows.push([label, fmt(t[k], t)]);
  }
  if (!Object.keys(t).length) rows.push(["GPU telemetry", "none on this host (Jetson only)"]);
  $("health").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function renderRtf(points) {
  const svg = $("rtf");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  if (!points.length) return;
  const max = Math.max(0.05, ...points.map((p) => p.rtf)) * 1.15;
  const w = 300 / Math.max(points.length, 10);
  points.forEach((p, i) => {
    const h = (80 * p.rtf) / max;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", String(i * w + 1)); r.setAttribute("width", String(Math.max(1, w - 2)));
    r.setAttribute("y", String(80 - h)); r.setAttribute("height", String(h));
    r.setAttribute("fill", p.rtf < 1 ? "#3fb68b" : "#f06262");
    const title = document.createElementNS(ns, "title");
    title.textContent = `RTF ${p.rtf} (${p.audio_s} s of audio)`;
    r.append(title);
    svg.append(r);
  });
}

function render() {
  renderNow(state.queue);
  renderQueue(state.queue);
  renderHeld(state.held || []);
  renderHistory(state.history || []);
  renderHealth(state.status);
  renderRtf(state.rtf || []);
  renderVoices(state.status);
}

function start() {
  for (const b of document.querySelectorAll("[data-control]")) {
    b.addEventListener("click", () => act(() => api(`api/control/${b.dataset.control}`, { method: "POST" })));
  }
  connect();
}

setupLogin(start);
