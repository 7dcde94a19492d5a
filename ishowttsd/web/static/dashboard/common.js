// Shared by the dashboard and the studio: the token (session storage), API calls, small DOM helpers.
// Text from chat or from the daemon only ever goes into the page through textContent.
const KEY = "ishowtts-token";

export const token = () => sessionStorage.getItem(KEY);

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

export async function api(path, { method = "GET", json, body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  let r;
  try {
    r = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, "The gateway did not answer (is ishowtts-web running?).", "network");
  }
  if (r.status === 401) { showLogin("The token was not accepted; log in again."); throw new ApiError(401, "Not logged in.", "invalid_api_key"); }
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`, code = null;
    try { const e = (await r.json()).error; msg = e.message || msg; code = e.code; } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, msg, code);
  }
  return raw ? r : r.json();
}

export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

export function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

export function ago(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

let onLogin = null;

export function showLogin(message) {
  sessionStorage.removeItem(KEY);
  document.getElementById("app").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-card").hidden = false;
  showError(document.getElementById("login-error"), message || "");
}

// Wire the login form; ``start`` runs once a token works (checked against /api/status).
export function setupLogin(start) {
  onLogin = start;
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
    await tryStart();
  });
  document.getElementById("logout").addEventListener("click", () => { showLogin(""); location.reload(); });
  if (token()) tryStart(); else showLogin("");
}

async function tryStart() {
  try {
    await api("api/status");
  } catch (e) {
    if (e.status !== 401) showError(document.getElementById("login-error"), e.message);
    if (e.status === 401 || e.status === 0) { if (e.status === 0) document.getElementById("login-card").hidden = false; return; }
  }
  document.getElementById("login-card").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("logout").hidden = false;
  onLogin();
}
