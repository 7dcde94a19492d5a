// ishowtts overlay: the daemon's speech, live, with captions, for an OBS Browser Source.
//
// One WebSocket (/overlay/ws) brings binary PCM frames and JSON events, in the daemon's order.
// Audio goes to an AudioWorklet (worklet.js) in an AudioContext created at the daemon's sample
// rate: the browser resamples to the output device, and what the worklet renders is the daemon's
// samples. Captions appear when the worklet starts a job's audio and go when it ends, so they
// follow what is heard. Chat text only ever goes into textContent.

const params = new URLSearchParams(location.search);

function num(name, dflt, lo, hi) {
  const v = parseFloat(params.get(name));
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
}
function flag(name) {
  return ["1", "true", "yes", "on"].includes((params.get(name) || "").toLowerCase());
}

const cfg = {
  key: params.get("key") || "",
  volume: num("volume", 1, 0, 2),
  fontSize: params.get("font_size"),
  position: (params.get("position") || "bottom").toLowerCase(),
  fields: (params.get("fields") || "user,text").split(",").map((s) => s.trim()).filter(Boolean),
  maxLines: num("max_lines", 0, 0, 50),
  hideUser: flag("hide_user"),
  bufferMs: num("buffer_ms", 100, 0, 2000),
  holdMs: num("hold_ms", 0, 0, 30000),
  captions: params.get("captions") !== "0",
  capture: flag("capture"),
  debug: flag("debug"),
};
if (cfg.hideUser) cfg.fields = cfg.fields.filter((f) => f !== "user");

const root = document.documentElement;
if (cfg.fontSize) root.style.setProperty("--caption-font-size", /^\d+(\.\d+)?$/.test(cfg.fontSize) ? cfg.fontSize + "px" : cfg.fontSize);
if (cfg.maxLines > 0) root.style.setProperty("--caption-max-lines", String(Math.round(cfg.maxLines)));
else if (params.has("max_lines")) root.style.setProperty("--caption-max-lines", "none");

const box = document.getElementById("captions");
{
  const [v, h] = cfg.position.split(/[-_ ]/);
  const vert = ["top", "middle", "bottom"].includes(v) ? v : ["left", "right", "center"].includes(v) ? "bottom" : "bottom";
  const horiz = ["left", "center", "right"].includes(h) ? h : ["left", "right"].includes(v) ? v : "center";
  box.classList.add("v-" + vert, "h-" + horiz);
}
const status = document.getElementById("status");
if (cfg.debug) status.hidden = false;

// State the tests (and curious streamers, with ?debug=1) can read.
const state = {
  cfg,
  connected: false,
  daemon: null,
  rate: null,
  log: [],
  capture: [],
  captureStart: null,
  underruns: 0,
  frames: 0,
  sockets: 0,
};
window.__overlay = state;

function note(entry) {
  state.log.push(entry);
  if (state.log.length > 2000) state.log.splice(0, 1000);
}

function setStatus() {
  if (!cfg.debug) return;
  status.textContent = `${state.connected ? "ws up" : "ws down"} · daemon ${state.daemon === false ? "down" : "up"} · ${state.rate || "?"} Hz · underruns ${state.underruns}`;
}

// -- captions -----------------------------------------------------------------------------------
const lines = new Map(); // job -> {user, text, platform, channel} from its `started` event
const shown = new Map(); // job -> element

function showCaption(job) {
  if (!cfg.captions || shown.has(job)) return;
  const info = lines.get(job);
  if (!info || !info.text) return;
  const el = document.createElement("div");
  el.className = "caption entering";
  el.dataset.job = job;
  for (const f of cfg.fields) {
    const value = info[f];
    if (!value) continue;
    const span = document.createElement("span");
    span.className = f === "user" ? "user" : f === "text" ? "text" : "meta";
    span.textContent = String(value);
    el.appendChild(span);
  }
  if (!el.childElementCount) return;
  box.appendChild(el);
  shown.set(job, el);
  requestAnimationFrame(() => el.classList.remove("entering"));
  note({ type: "caption", job, wall: Date.now() });
}

function hideCaption(job, now) {
  const el = shown.get(job);
  lines.delete(job);
  if (!el) return;
  shown.delete(job);
  const go = () => {
    el.remove();
    note({ type: "uncaption", job, wall: Date.now() });
  };
  if (cfg.holdMs > 0 && !now) setTimeout(go, cfg.holdMs);
  else go();
}

// -- audio --------------------------------------------------------------------------------------
let ctx = null;
let node = null;
let audioReady = Promise.resolve();
const playing = new Set(); // jobs with audio buffered or playing
const seenJobs = new Set(); // jobs whose first frame has arrived

function onWorklet(m) {
  if (m.type === "capture") {
    if (state.captureStart === null) state.captureStart = m.start;
    state.capture.push(m.data);
    state.underruns = m.underruns;
    return;
  }
  note(m);
  if (m.type === "start") showCaption(m.job);
  else if (m.type === "end") {
    playing.delete(m.job);
    hideCaption(m.job, m.reason !== "final");
  }
  setStatus();
}

async function openAudio(rate) {
  if (ctx && ctx.sampleRate === rate) return;
  if (ctx) {
    await ctx.close();
    ctx = node = null;
  }
  const c = new AudioContext({ sampleRate: rate, latencyHint: "interactive" });
  await c.audioWorklet.addModule("overlay/static/worklet.js");
  node = new AudioWorkletNode(c, "ishowtts-player", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { prebuffer: Math.round((cfg.bufferMs / 1000) * rate), volume: cfg.volume, capture: cfg.capture },
  });
  node.port.onmessage = (e) => onWorklet(e.data);
  node.connect(c.destination);
  ctx = c;
  state.rate = rate;
  if (c.state !== "running") c.resume().catch(() => {});
  note({ type: "audio", rate, state: c.state, baseLatency: c.baseLatency, outputLatency: c.outputLatency || 0 });
  setStatus();
}

// A browser outside OBS may hold audio until the page is clicked.
addEventListener("pointerdown", () => ctx && ctx.resume());

function toFloat(bytes, offset, rate) {
  const s16 = new Int16Array(bytes, offset, (bytes.byteLength - offset) >> 1);
  let f = new Float32Array(s16.length);
  for (let i = 0; i < s16.length; i++) f[i] = s16[i] / 32768;
  if (ctx && rate !== ctx.sampleRate && f.length) f = resample(f, rate, ctx.sampleRate);
  return f;
}

function resample(x, from, to) {
  // linear: only when a job's rate differs from the running context (it is recreated when idle)
  const n = Math.max(1, Math.round((x.length * to) / from));
  const y = new Float32Array(n);
  const step = from / to;
  for (let i = 0; i < n; i++) {
    const p = i * step;
    const k = Math.floor(p);
    const a = x[Math.min(k, x.length - 1)];
    const b = x[Math.min(k + 1, x.length - 1)];
    y[i] = a + (b - a) * (p - k);
  }
  return y;
}

function drop(job, reason) {
  if (node) node.port.postMessage({ type: "drop", job, reason });
  if (job === null) {
    playing.clear();
    for (const j of [...shown.keys()]) hideCaption(j, true);
    lines.clear();
  } else {
    playing.delete(job);
    hideCaption(job, true);
  }
}

function onPcm(buf) {
  const dv = new DataView(buf);
  const hlen = dv.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, hlen)));
  const job = header.job;
  if (header.final && header.cancelled) {
    drop(job, "cancelled");
    return;
  }
  const rate = header.rate;
  if (!rate) {
    if (header.final && node) node.port.postMessage({ type: "pcm", job, data: new Float32Array(0), final: true });
    return;
  }
  if (!ctx || (ctx.sampleRate !== rate && playing.size === 0)) audioReady = audioReady.then(() => openAudio(rate));
  audioReady = audioReady.then(() => {
    const data = toFloat(buf, 4 + hlen, rate);
    state.frames++;
    if (header.final && !data.length && !playing.has(job)) return;
    if (!playing.has(job) && !seenJobs.has(job)) {
      seenJobs.add(job);
      note({ type: "first", job, wall: Date.now() });
    }
    playing.add(job);
    node.port.postMessage({ type: "pcm", job, data, final: !!header.final }, [data.buffer]);
  });
}

function onEvent(m) {
  if (m.type === "hello") {
    state.daemon = m.daemon;
    if (m.rate && !ctx) audioReady = audioReady.then(() => openAudio(m.rate));
  } else if (m.type === "link") {
    state.daemon = m.up;
    if (!m.up) drop(null, "daemon_lost"); // the daemon went away: its open jobs will never end
  } else if (m.type === "event") {
    const ev = m.event;
    if (ev.event === "started" && ev.job) {
      lines.set(ev.job, { user: ev.user, text: ev.text, platform: ev.platform, channel: ev.channel });
    } else if (ev.event === "cancelled" || ev.event === "error") {
      if (ev.job) drop(ev.job, ev.event);
    } else if (ev.event === "paused" || ev.event === "resumed") {
      if (node) node.port.postMessage({ type: "hold", on: ev.event === "paused" });
    }
    note({ type: "event", event: ev.event, job: ev.job, wall: Date.now() });
  }
  setStatus();
}

// -- connection ---------------------------------------------------------------------------------
let backoff = 250;
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const path = location.pathname.replace(/\/+$/, "") + "/ws";
  const ws = new WebSocket(`${proto}//${location.host}${path}?key=${encodeURIComponent(cfg.key)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    backoff = 250;
    state.connected = true;
    state.sockets++;
    note({ type: "open", wall: Date.now() });
    setStatus();
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") onEvent(JSON.parse(e.data));
    else onPcm(e.data);
  };
  ws.onclose = () => {
    state.connected = false;
    note({ type: "close", wall: Date.now() });
    setStatus();
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 3000);
  };
}

// Test hook (?capture=1): the rendered samples since the last call, as base64 s16le.
state.takeCapture = () => {
  const parts = state.capture.splice(0);
  const start = state.captureStart;
  let n = 0;
  for (const p of parts) n += p.length;
  state.captureStart = start === null ? null : start + n;
  const s16 = new Int16Array(n);
  let o = 0;
  for (const p of parts) for (let i = 0; i < p.length; i++) s16[o++] = Math.max(-32768, Math.min(32767, Math.round(p[i] * 32768)));
  const bytes = new Uint8Array(s16.buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return { start, rate: ctx ? ctx.sampleRate : null, b64: btoa(bin), underruns: state.underruns };
};
state.outputLatency = () => (ctx ? (ctx.baseLatency || 0) + (ctx.outputLatency || 0) : null);
state.audioState = () => (ctx ? ctx.state : null);

connect();
