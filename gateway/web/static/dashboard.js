// The dashboard: fetches alerts, rounds and devices with the token kept in this tab's
// sessionStorage (sent as a Bearer header), and follows alert changes over server-sent
// events. EventSource cannot send a header, so signing in also asks the gateway for an
// HttpOnly session cookie that only the stream and the report links accept (docs/api.md).
"use strict";

(() => {
  const TOKEN_KEY = "warden.token";
  const body = document.body;
  const zone = body.dataset.timezone;
  const tonight = body.dataset.tonight;
  const alerts = new Map();
  let me = null;
  let stream = null;
  let roundsTimer = null;
  let refresher = null;

  const $ = (selector) => document.querySelector(selector);
  // The page carries its words in the site's (or the reader's) locale: issue 19, docs/localisation.md.
  const STRINGS = JSON.parse(document.getElementById("strings")?.textContent || "{}");
  const t = (text, values = {}) => (STRINGS[text] || text).replace(/\{(\w+)\}/g, (_, key) => values[key] ?? "");
  const lang = document.documentElement.lang === "en" ? "en-GB" : document.documentElement.lang;
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const can = (permission) => Boolean(me && me.permissions.includes(permission));

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

  function localTime(iso, withDay = true) {
    if (!iso) return "";
    const options = { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (withDay) options.weekday = "short";
    return new Intl.DateTimeFormat(lang, options).format(new Date(iso));
  }

  // Last seen in words (issue 19): "just now", "25 min ago", "3 h 20 min ago", "12 h ago", "3 days ago".
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 60) return "just now";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.floor(minutes / 60);
    if (hours >= 48) return `${Math.floor(hours / 24)} days ago`;
    return hours < 10 && minutes % 60 ? `${hours} h ${minutes % 60} min ago` : `${hours} h ago`;
  }

  // A heartbeat counter that holds a unix time (last_seen=1794981300.2) reads as words, not digits.
  function counterText(key, value, checkedAt) {
    const words = key.replaceAll("_", " ");
    if (typeof value === "number" && value > 1e9 && value < 1e11) return `${words} ${ago(checkedAt / 1000 - value)}`;
    return `${words}: ${value}`;
  }

  const named = (name, id) => (name && name !== id ? `${name} (${id})` : id);

  function say(text) {
    const box = $("#message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
    if (response.status === 401) {
      showLogin(token() ? t("The gateway refused this token.") : t("Sign in with an API token."));
      throw new Error("unauthorized");
    }
    if (!response.ok) {
      const detail = (await response.json().catch(() => ({}))).detail || response.statusText;
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response.json();
  }

  // ------------------------------------------------------------------ sign in

  function showLogin(text) {
    $("#login").hidden = false;
    $("#who").hidden = true;
    if (text) say(text);
  }

  function showWho() {
    $("#login").hidden = Boolean(token());
    $("#who").hidden = !token();
    $("#who-name").textContent = me && me.name ? `${me.name} (${me.role})` : "";
  }

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
    location.reload();
  });

  // ------------------------------------------------------------------ alerts

  function alertRow(alert) {
    const actions = el("td", { class: "actions" });
    if (can("alerts:ack") && alert.state === "open") {  // a guard: its post's alerts (issue 18)
      actions.append(el("button", { type: "button", class: "ack", onclick: () => act(alert.id, "acknowledge") }, t("Acknowledge")));
    }
    if (can("alerts:write")) {
      actions.append(el("button", { type: "button", class: "resolve", onclick: () => act(alert.id, "resolve") }, t("Resolve")));
    }
    if (alert.work_order_id) {  // the repair request made from it (issue 18)
      actions.append(el("a", { class: "work-order", href: `/work-orders#${alert.work_order_id}` }, `Work order #${alert.work_order_id}`));
    } else if (can("work_orders:create")) {
      actions.append(el("button", { type: "button", class: "to-work-order", onclick: () => toWorkOrder(alert.id) }, "Work order"));
    }
    const owner = (alert.acknowledged_by ? t(" by {who}", { who: alert.acknowledged_by }) : "") + (alert.assigned_to ? ` · for ${alert.assigned_to}` : "");
    return el("tr", { dataset: { alertId: alert.id, state: alert.state } },
      el("td", { class: `sev-${alert.severity}` }, t(alert.severity)),
      el("td", {}, el("div", { class: "message" }, alert.text || alert.message), el("small", {}, `${alert.rule} · ${alert.subject}`)),
      el("td", {}, localTime(alert.opened_at)),
      el("td", { class: `state state-${alert.state}` }, t(alert.state) + owner),
      actions);
  }

  function renderAlerts(flashId) {
    const rows = [...alerts.values()].sort((a, b) => b.opened_at.localeCompare(a.opened_at) || b.id - a.id);
    const tbody = $("#alerts tbody");
    tbody.replaceChildren(...rows.map(alertRow));
    $("#no-alerts").hidden = rows.length > 0;
    $("#alert-count").textContent = rows.length ? `(${rows.length})` : "";
    if (flashId !== undefined) tbody.querySelector(`tr[data-alert-id="${flashId}"]`)?.classList.add("flash");
  }

  function upsert(alert) {
    if (alert.work_order_id === undefined) alert.work_order_id = alerts.get(alert.id)?.work_order_id;  // the stream omits it
    if (alert.state === "resolved") alerts.delete(alert.id);
    else if (alert.text === undefined) {  // from the stream: the API words it in this reader's locale
      api(`/api/alerts/${alert.id}`).then(upsert).catch(() => {});
      return;
    } else alerts.set(alert.id, alert);
    renderAlerts(alert.id);
  }

  async function loadAlerts() {
    const list = await api("/api/alerts?state=open&state=acknowledged&limit=500");
    alerts.clear();
    for (const alert of list) alerts.set(alert.id, alert);
    renderAlerts();
  }

  async function act(id, action) {
    let note = null;
    if (action === "resolve") {
      note = window.prompt(t("Resolve: what was done? (optional note)"), "");
      if (note === null) return;
    }
    try {
      upsert(await api(`/api/alerts/${id}/${action}`, { method: "POST", body: JSON.stringify({ note: note || null }) }));
      say("");
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not {action} alert {id}: {error}", { action: t(action), id, error: error.message }));
    }
  }

  async function toWorkOrder(id) {
    try {
      const order = await api(`/api/alerts/${id}/work-order`, { method: "POST", body: "{}" });
      location.href = `/work-orders#${order.id}`;
    } catch (error) {
      if (error.message !== "unauthorized") say(`Could not make a work order of alert ${id}: ${error.message}`);
    }
  }

  // ------------------------------------------------------------------ live stream

  function openStream() {
    if (stream) stream.close();
    const status = $("#stream-status");
    stream = new EventSource("/api/alerts/stream");
    stream.onopen = () => { status.textContent = t("live"); status.classList.add("live"); };
    stream.addEventListener("alert", (event) => {
      const change = JSON.parse(event.data);
      upsert(change.alert);
      if (change.alert.rule.startsWith("patrol_")) scheduleRounds();
    });
    stream.addEventListener("reset", () => loadAlerts());
    stream.onerror = () => {
      status.textContent = t("reconnecting");
      status.classList.remove("live");
      if (stream.readyState === EventSource.CLOSED) {  // refused (cookie expired, gateway restarted)
        setTimeout(async () => {
          if (token()) await api("/api/session", { method: "POST" }).catch(() => {});
          await loadAlerts().catch(() => {});
          openStream();
        }, 3000);
      }
    };
  }

  // ------------------------------------------------------------------ patrols, devices

  function scheduleRounds() {
    clearTimeout(roundsTimer);
    roundsTimer = setTimeout(() => loadRounds().catch(() => {}), 500);
  }

  async function loadRounds() {
    const rounds = await api(`/api/patrols/rounds?night=${encodeURIComponent(tonight)}`);
    $("#rounds").replaceChildren(...rounds.map((round) => el("div", { class: "round", dataset: { round: round.round } },
      el("div", { class: "title" }, `${named(round.route_name, round.route)} ${round.start}`, round.guard ? ` · ${round.guard}` : "",
        round.started ? "" : t(" · not started")),
      ...round.checkpoints.map((cp) => el("span", { class: `cp cp-${cp.state}`, title: `${cp.tag} · due ${localTime(cp.deadline, false)}` },
        `${cp.name || cp.tag} ${t(cp.state)}${cp.tapped_at ? " " + localTime(cp.tapped_at, false) : ""}`)))));
    const noRounds = $("#no-rounds");
    noRounds.hidden = rounds.length > 0;
    if (me.patrol_routes && me.patrol_routes.length === 0) {  // a guard no route names: say why, not "quiet night"
      noRounds.textContent = `No patrol route is assigned to guard ${me.guard || me.name}: an administrator sets ` +
        `guard: ${me.guard || "<guard id>"} on a route (rules.patrol.routes in gateway.yaml) or lists routes on this token.`;
    }
  }

  async function loadDevices() {
    const devices = await api("/api/devices");
    $("#devices tbody").replaceChildren(...devices.map((d) => el("tr", { dataset: { device: d.id } },
      el("td", {}, named(d.name, d.id) + (d.agent ? t(" (agent)") : "")),
      el("td", { title: d.room }, d.room_name || d.room),
      el("td", { class: `status-${d.status}` }, t(d.status)),
      el("td", { class: "last-seen", title: localTime(d.last_seen) }, ago(d.last_seen_seconds_ago)),
      el("td", { class: "counters" }, Object.entries(d.counters || {}).slice(0, 4)
        .map(([k, v]) => counterText(k, v, Date.parse(d.checked_at))).join(" · ")))));
  }

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      me = await api("/api/me");
      showWho();
      if (!token() && !me.permissions.length) { showLogin(t("Sign in with an API token.")); return; }
      if (!token()) $("#login").hidden = false;  // public read: sign in only to act
      if (token()) await api("/api/session", { method: "POST" });
      $("#alerts-section").hidden = !can("alerts:own");
      $("#work-orders-link").hidden = !can("work_orders:read");
      $("#devices-section").hidden = !can("devices:read");
      $("#reports-section").hidden = !can("reports:read");
      const loads = [];
      if (can("alerts:own")) loads.push(loadAlerts().then(openStream));  // a guard: its post's alerts (issue 18)
      if (can("patrols:own")) loads.push(loadRounds());
      if (can("devices:read")) loads.push(loadDevices());
      await Promise.all(loads);
      clearInterval(refresher);
      refresher = setInterval(() => {
        if (can("patrols:own")) loadRounds().catch(() => {});
        if (can("devices:read")) loadDevices().catch(() => {});
      }, 30000);
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not load the dashboard: {error}", { error: error.message }));
    }
  }

  start();
})();
