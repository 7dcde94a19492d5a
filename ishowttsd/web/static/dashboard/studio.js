// The voice studio: record (MediaRecorder) or pick a file, let Whisper write the words, correct, save.
import { api, el, showError, setupLogin } from "./common.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORD_S = 15;
let take = null;        // the Blob/File to upload
let recorder = null;
let timer = null;

function busy(on) { $("busy").hidden = !on; $("save").disabled = on || !take; }

async function transcribe() {
  showError($("error"), ""); $("saved").hidden = true;
  const fd = new FormData();
  fd.append("file", take, take.name || "recording.webm");
  busy(true);
  $("ref-text").value = "";
  $("ref-text").placeholder = "Whisper is listening…";
  try {
    const r = await api("api/voices/transcribe", { method: "POST", body: fd });
    $("ref-text").value = r.ref_text;
    $("take-info").textContent = `${r.seconds} s kept (${r.speech_s} s of speech)` + (r.cut ? ", cut at a pause to 12 s" : "")
      + ". Check the words below: they must match what is said.";
  } catch (e) {
    showError($("error"), e.message);
    take = null;
  } finally {
    $("ref-text").placeholder = "Filled in by Whisper after recording; edit it if it is wrong";
    busy(false);
  }
}

function setTake(blob) {
  take = blob;
  const a = $("take");
  a.src = URL.createObjectURL(blob);
  a.hidden = false;
  transcribe();
}

async function record() {
  showError($("error"), "");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: true } });
  } catch (e) {
    showError($("error"), `The microphone is not available: ${e.message}. You can upload a file instead.`);
    return;
  }
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t)) || "";
  recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const parts = [];
  recorder.ondataavailable = (ev) => { if (ev.data.size) parts.push(ev.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    clearInterval(timer);
    $("record").hidden = false; $("stop-record").hidden = true;
    const blob = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
    blob.name = "recording.webm";
    setTake(blob);
  };
  const t0 = Date.now();
  timer = setInterval(() => {
    const s = (Date.now() - t0) / 1000;
    $("rec-time").textContent = `recording… ${s.toFixed(0)} s`;
    if (s >= MAX_RECORD_S) stopRecording();
  }, 250);
  recorder.start(250);
  $("record").hidden = true; $("stop-record").hidden = false;
}

function stopRecording() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  $("rec-time").textContent = "";
}

async function save(ev) {
  ev.preventDefault();
  showError($("error"), ""); $("saved").hidden = true;
  if (!take) { showError($("error"), "Record or choose a clip first."); return; }
  const fd = new FormData();
  fd.append("id", $("voice-id").value.trim());
  fd.append("ref_text", $("ref-text").value.trim());
  fd.append("language", $("language").value.trim());
  fd.append("file", take, take.name || "recording.webm");
  busy(true);
  try {
    const v = await api("api/voices", { method: "POST", body: fd });
    $("saved").textContent = `Saved “${v.id}” (${v.seconds} s).` + (v.usable ? " It is ready to use." : " It will be used once the F5 weights are installed.");
    $("saved").hidden = false;
    $("voice-form").reset(); $("take").hidden = true; $("take-info").textContent = ""; take = null;
    await list();
  } catch (e) {
    showError($("error"), e.message);
  } finally {
    busy(false);
  }
}

function voiceItem(v) {
  const li = el("li", { dataset: { voice: v.id } },
    el("div", {}, el("strong", { text: v.id }), " ",
      el("span", { class: "badge", text: v.engine }), " ",
      el("span", { class: "badge", text: v.source }), " ",
      v.default ? el("span", { class: "badge spoken", text: "default" }) : null, " ",
      v.usable ? null : el("span", { class: "badge warn", text: v.note }),
      v.clip_s != null ? el("span", { class: "muted small", text: ` ${v.clip_s} s clip` }) : null),
    v.ref_text ? el("p", { class: "ref", text: `“${v.ref_text}”` }) : null);
  const actions = el("div", { class: "controls" });
  const player = el("audio", { controls: "", hidden: "" });
  if (v.usable) {
    actions.append(el("button", { class: "small", text: "▶ Preview", dataset: { act: "preview" }, onclick: async (ev) => {
      const b = ev.currentTarget; b.disabled = true;
      try {
        const r = await api(`api/voices/${encodeURIComponent(v.id)}/preview`, { method: "POST", raw: true });
        player.src = URL.createObjectURL(await r.blob()); player.hidden = false; player.play().catch(() => {});
      } catch (e) { showError($("error"), e.message); } finally { b.disabled = false; }
    } }));
    if (!v.default) actions.append(el("button", { class: "small", text: "Make default", dataset: { act: "default" }, onclick: async () => {
      try { await api("api/voices/default", { method: "PUT", json: { voice: v.id } }); await list(); } catch (e) { showError($("error"), e.message); }
    } }));
  }
  if (v.source === "studio") {
    actions.append(el("button", { class: "small danger", text: "Delete", dataset: { act: "delete" }, onclick: async (ev) => {
      const b = ev.currentTarget;
      if (b.dataset.armed !== "1") { b.dataset.armed = "1"; b.textContent = "Really delete?"; return; }
      try { await api(`api/voices/${encodeURIComponent(v.id)}`, { method: "DELETE" }); await list(); } catch (e) { showError($("error"), e.message); }
    } }));
  }
  li.append(actions, player);
  return li;
}

async function list() {
  const r = await api("api/voices");
  $("needs-f5").textContent = r.note || "";
  $("needs-f5").hidden = !r.note;
  $("voices").replaceChildren(...r.voices.map(voiceItem));
}

function start() {
  $("record").addEventListener("click", record);
  $("stop-record").addEventListener("click", stopRecording);
  $("file").addEventListener("change", (ev) => { const f = ev.target.files[0]; if (f) setTake(f); });
  $("voice-form").addEventListener("submit", save);
  list().catch((e) => showError($("error"), e.message));
}

setupLogin(start);
