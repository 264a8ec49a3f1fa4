// What the dashboard and the work-order page share (one owner for each helper): building DOM
// nodes, the token in this tab's sessionStorage, the status line, and fetching the API with
// the token as a Bearer header. Loaded before each page's own script (both `defer`, so in order).
"use strict";

window.warden = (() => {
  const TOKEN_KEY = "warden.token";

  const $ = (selector) => document.querySelector(selector);
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // A page carries its words in the site's (or the reader's) locale, as a JSON table in
  // #strings (gateway/web/pages.py; docs/localisation.md), so no script needs a catalogue.
  const STRINGS = JSON.parse(document.getElementById("strings")?.textContent || "{}");
  /** `text` in the page's language, its {fields} filled from `values`. */
  const t = (text, values = {}) => (STRINGS[text] || text).replace(/\{(\w+)\}/g, (_, key) => values[key] ?? "");
  /** Whether the page's table has `text` (a word the page knows, not a site's own id). */
  const known = (text) => text in STRINGS;
  /** The page's language for Intl formats (English dates as in en-GB). */
  const lang = document.documentElement.lang === "en" ? "en-GB" : document.documentElement.lang;

  /** A new element: attributes (class, on<event>, dataset, others as attributes) and children (nodes or text). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
    return node;
  }

  /** An SVG element (sparklines): attributes only. */
  function svg(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  /** The status line (#message): shown with `text`, hidden without. */
  function say(text) {
    const box = $("#message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  /**
   * The header's sign-in form and sign-out button: a token entered is kept for this tab and
   * `start()` runs again; signing out ends the server session too, then the page reloads
   * without its fragment (the work-order page keeps its view there).
   */
  function bindSession(api, start) {
    $("#login").addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = $("#token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("#token").value = "";
      say("");
      await start();
    });
    $("#logout").addEventListener("click", async () => {
      await api("/api/session", { method: "DELETE" }).catch(() => {});
      sessionStorage.removeItem(TOKEN_KEY);
      if (location.hash) location.hash = "";
      location.reload();
    });
  }

  /**
   * A fetcher of the API for one page. `onUnauthorized(hadToken)` runs on a 401 (the page shows
   * its sign-in form); the call then throws Error("unauthorized"). Other errors throw the
   * gateway's one-line `detail`. A body is sent as JSON unless the caller names its type.
   */
  function makeApi(onUnauthorized) {
    return async function api(path, options = {}) {
      const headers = { ...(options.headers || {}) };
      if (token()) headers.Authorization = `Bearer ${token()}`;
      if (options.body && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
      const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
      if (response.status === 401) {
        onUnauthorized(Boolean(token()));
        throw new Error("unauthorized");
      }
      if (!response.ok) {
        const detail = (await response.json().catch(() => ({}))).detail || response.statusText;
        throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      }
      return response.json();
    };
  }

  return { $, el, svg, say, token, t, known, lang, bindSession, makeApi };
})();
