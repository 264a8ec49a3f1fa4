// The dashboard: fetches alerts, rounds and devices with the token kept in this tab's
// sessionStorage (sent as a Bearer header), and follows alert changes over server-sent
// events. EventSource cannot send a header, so signing in also asks the gateway for an
// HttpOnly session cookie that only the stream and the report links accept (docs/api.md).
"use strict";

(() => {
  const body = document.body;
  const zone = body.dataset.timezone;
  const tonight = body.dataset.tonight;
  const alerts = new Map();
  let me = null;
  let stream = null;
  let roundsTimer = null;
  let refresher = null;
  // Issue 21: the site every view shows (`?site=`) when the token sees several; null: the
  // token's one site (the API defaults to it), or the overview of all its sites.
  let scope = null;
  let overview = false;
  const siteNames = new Map();  // id -> name, to say whose alert it is in the overview

  const { $, el, svg, say, token, t, lang } = window.warden;  // common.js: shared with the work-order page
  const can = (permission) => Boolean(me && me.permissions.includes(permission));

  function localTime(iso, withDay = true) {
    if (!iso) return "";
    const options = { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (withDay) options.weekday = "short";
    return new Intl.DateTimeFormat(lang, options).format(new Date(iso));
  }

  // A time with its date (the history reaches back past today): "17 Nov 19:30", "11月17日 19:30".
  function localDateTime(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(lang, { timeZone: zone, day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23" }).format(new Date(iso));
  }

  // The site's UTC offset at `utcMs`, in ms (Intl knows the zone; Date only the browser's).
  function zoneOffset(utcMs) {
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric",
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
      .formatToParts(new Date(utcMs)).map((part) => [part.type, part.value]));
    return Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second) - utcMs;
  }

  // 00:00 at the site on `day` ("YYYY-MM-DD", plus `addDays`), as a UTC ISO time for the API's since/until.
  function siteMidnight(day, addDays = 0) {
    const [y, m, d] = day.split("-").map(Number);
    const wall = Date.UTC(y, m - 1, d + addDays);
    return new Date(wall - zoneOffset(wall - zoneOffset(wall))).toISOString();
  }

  // Last seen in words (issue 19): "just now", "25 min ago", "3 h 20 min ago", "12 h ago", "3 days ago", localised.
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return t("never");
    if (seconds < 60) return t("just now");
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return t("{n} min ago", { n: minutes });
    const hours = Math.floor(minutes / 60);
    if (hours >= 48) return t("{n} days ago", { n: Math.floor(hours / 24) });
    return hours < 10 && minutes % 60 ? t("{h} h {m} min ago", { h: hours, m: minutes % 60 }) : t("{h} h ago", { h: hours });
  }

  const number = (value, digits = 1) => new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(value);

  // A heartbeat counter that holds a unix time (last_seen=1794981300.2) reads as words, not digits.
  function counterText(key, value, checkedAt) {
    const words = key.replaceAll("_", " ");
    if (typeof value === "number" && value > 1e9 && value < 1e11) return `${words} ${ago(checkedAt / 1000 - value)}`;
    return `${words}: ${value}`;
  }

  const named = (name, id) => (name && name !== id ? `${name} (${id})` : id);

  /** `path` for the site shown: with `site=` when the token sees several sites. */
  function scoped(path) {
    if (!scope) return path;
    return `${path}${path.includes("?") ? "&" : "?"}site=${encodeURIComponent(scope)}`;
  }

  const money = (value, currency) => new Intl.NumberFormat(lang, { style: "currency", currency }).format(value);

  const api = window.warden.makeApi((hadToken) => showLogin(hadToken ? t("The gateway refused this token.") : t("Sign in with an API token.")));

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

  window.warden.bindSession(api, start);  // start: declared below (hoisted)

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
      actions.append(el("a", { class: "work-order", href: `/work-orders#${alert.work_order_id}` }, t("Work order #{id}", { id: alert.work_order_id })));
    } else if (can("work_orders:create")) {
      actions.append(el("button", { type: "button", class: "to-work-order", onclick: () => toWorkOrder(alert.id) }, t("Work order")));
    }
    const owner = (alert.acknowledged_by ? t(" by {who}", { who: alert.acknowledged_by }) : "") + (alert.assigned_to ? ` · for ${alert.assigned_to}` : "");
    return el("tr", { dataset: { alertId: alert.id, state: alert.state } },
      el("td", { class: `sev-${alert.severity}` }, t(alert.severity)),
      el("td", {}, el("div", { class: "message" }, alert.text || alert.message),
        el("small", {}, `${overview && siteNames.has(alert.site) ? `${siteNames.get(alert.site)} · ` : ""}${alert.rule} · ${alert.subject}`)),
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
    if (scope && alert.site && alert.site !== scope) return;  // the stream carries every site the token sees
    if (alert.work_order_id === undefined) alert.work_order_id = alerts.get(alert.id)?.work_order_id;  // the stream omits it
    if (alert.state === "resolved") alerts.delete(alert.id);
    else if (alert.text === undefined) {  // from the stream: the API words it in this reader's locale
      api(`/api/alerts/${alert.id}`).then(upsert).catch(() => {});
      return;
    } else alerts.set(alert.id, alert);
    renderAlerts(alert.id);
  }

  async function loadAlerts() {
    const list = await api(scoped("/api/alerts?state=open&state=acknowledged&limit=500"));
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
    const rounds = await api(scoped(`/api/patrols/rounds?night=${encodeURIComponent(tonight)}`));
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
    const devices = await api(scoped("/api/devices"));
    const trends = devices.length ? await loadTrends(Date.parse(devices[0].checked_at)).catch(() => new Map()) : new Map();
    $("#devices tbody").replaceChildren(...devices.map((d) => el("tr", { dataset: { device: d.id } },
      el("td", {}, named(d.name, d.id) + (d.agent ? t(" (agent)") : "")),
      el("td", { title: d.room }, d.room_name || d.room),
      el("td", { class: `status-${d.status}` }, t(d.status), linkDown(d)),
      el("td", { class: "last-seen", title: localTime(d.last_seen), dataset: { label: t("last seen") } }, ago(d.last_seen_seconds_ago)),
      el("td", { class: "trend" }, sparkline(trends.get(d.id))),
      el("td", { class: "counters" }, Object.entries(d.counters || {}).slice(0, 4)
        .map(([k, v]) => counterText(k, v, Date.parse(d.checked_at))).join(" · ")))));
  }

  // A device of a cut-off campus (issue 21): its silence is the campus link's, not its own.
  function linkDown(d) {
    if (d.link !== "down") return "";
    return el("span", { class: "link-down", title: localDateTime(d.link_down_since) },
      t("campus link down since {time}", { time: localTime(d.link_down_since) }));
  }

  const HOUR = 3600 * 1000;
  const TREND_HOURS = 24;

  // Each device's hourly means over the last 24 h on the gateway's clock (one /api/statistics call),
  // of one quantity: power if it has it, else its first series that is not a register.
  async function loadTrends(now) {
    const last = Math.floor(now / HOUR) * HOUR;  // the hour under way is the last slot
    const since = new Date(last - (TREND_HOURS - 1) * HOUR).toISOString();
    const until = new Date(last + HOUR).toISOString();
    const rows = await api(scoped(`/api/statistics?since=${encodeURIComponent(since)}&until=${encodeURIComponent(until)}`));
    const bySeries = new Map();
    for (const row of rows) {
      if (row.cumulative || row.mean === null) continue;
      const key = `${row.device}|${row.quantity}|${row.channel || ""}`;
      if (!bySeries.has(key)) bySeries.set(key, { device: row.device, quantity: row.quantity, unit: row.unit, points: [] });
      bySeries.get(key).points.push({ slot: Math.round((Date.parse(row.hour) - (last - (TREND_HOURS - 1) * HOUR)) / HOUR), value: row.mean });
    }
    const trends = new Map();
    for (const series of bySeries.values()) {
      const kept = trends.get(series.device);
      if (!kept || (series.quantity === "power" && kept.quantity !== "power")) trends.set(series.device, series);
    }
    return trends;
  }

  // An inline SVG line of the hourly means (x: the 24 hour slots, y: min..max), and the latest value.
  function sparkline(series) {
    if (!series || !series.points.length) return el("span", { class: "none" }, t("no data"));
    const width = 96, height = 24;
    const values = series.points.map((p) => p.value);
    const lo = Math.min(...values), hi = Math.max(...values);
    const x = (slot) => (slot / (TREND_HOURS - 1)) * (width - 4) + 2;
    const y = (value) => (hi === lo ? height / 2 : height - 2 - ((value - lo) / (hi - lo)) * (height - 4));
    const chart = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "data-points": series.points.length, "aria-label": t("{quantity}, hourly mean: {low} to {high} {unit}",
        { quantity: series.quantity, low: number(lo), high: number(hi), unit: series.unit }) });
    chart.append(svg("polyline", { points: series.points.map((p) => `${x(p.slot).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ") }));
    const end = series.points[series.points.length - 1];
    chart.append(svg("circle", { cx: x(end.slot).toFixed(1), cy: y(end.value).toFixed(1), r: 2 }));
    return el("span", { class: "spark-wrap", title: chart.getAttribute("aria-label") }, chart,
      el("small", { class: "spark-max" }, `${t("max")} ${number(hi)} ${series.unit}`));
  }

  // ------------------------------------------------------------------ alert history

  function historyQuery() {
    const form = new FormData($("#history-filters"));
    const query = new URLSearchParams({ limit: "200" });
    for (const key of ["rule", "room", "severity", "state"]) if (form.get(key)) query.set(key, form.get(key));
    if (form.get("since")) query.set("since", siteMidnight(form.get("since")));
    if (form.get("until")) query.set("until", siteMidnight(form.get("until"), 1));  // the whole of the last day
    return query;
  }

  async function loadHistory() {
    const list = await api(scoped(`/api/alerts?${historyQuery()}`));
    $("#history tbody").replaceChildren(...list.map((alert) => el("tr", { dataset: { alertId: alert.id, state: alert.state } },
      el("td", { class: `sev-${alert.severity}` }, t(alert.severity)),
      el("td", {}, el("div", { class: "message" }, alert.text || alert.message),
        alert.end_text && alert.end_text !== alert.text ? el("div", { class: "ending" }, alert.end_text) : "",
        el("small", {}, `${alert.rule} · ${alert.subject}`)),
      el("td", { class: "opened" }, localDateTime(alert.opened_at)),
      el("td", { class: `state state-${alert.state}` }, t(alert.state)))));
    $("#no-history").hidden = list.length > 0;
    $("#history-count").textContent = `(${list.length})`;
  }

  $("#history-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadHistory().catch((error) => { if (error.message !== "unauthorized") say(error.message); });
  });
  $("#history-filters").addEventListener("reset", () => setTimeout(() => loadHistory().catch(() => {}), 0));  // after the fields clear

  // ------------------------------------------------------------------ energy, report archive

  async function loadEnergy() {
    const spans = await api(scoped("/api/energy/waste"));
    const rows = new Map();
    for (const [key, span] of Object.entries(spans)) {
      for (const b of span.by_building) {
        if (!rows.has(b.building)) rows.set(b.building, { name: b.name, id: b.building });
        rows.get(b.building)[key] = b;
      }
    }
    const cell = (b, currency, key) => el("td", { class: key }, b ? `${number(b.kwh, 2)} kWh · ${money(b.cost, currency)}` : "–");
    const total = (key) => ({ kwh: spans[key].total_kwh, cost: spans[key].total_cost });
    const body = [...rows.values()].map((row) => el("tr", { dataset: { building: row.id } },
      el("td", {}, named(row.name, row.id) || t("(no building)")),
      cell(row.today, spans.today.currency, "today"), cell(row.week, spans.week.currency, "week")));
    if (rows.size) {
      body.push(el("tr", { class: "total", dataset: { building: "" } }, el("td", {}, t("Total")),
        cell(total("today"), spans.today.currency, "today"), cell(total("week"), spans.week.currency, "week")));
    }
    $("#energy tbody").replaceChildren(...body);
    $("#no-energy").hidden = rows.size > 0;
  }

  async function loadArchive() {
    const reports = await api(scoped("/api/reports/archive"));
    const kinds = { daily: t("daily report"), monthly: t("monthly report") };
    $("#archive").replaceChildren(...reports.map((r) => el("li", { dataset: { kind: r.kind, label: r.label } },
      el("a", { class: "report-link", href: scoped(`/api/reports/archive/${encodeURIComponent(r.kind)}/${encodeURIComponent(r.label)}`),
        target: "_blank", rel: "noopener" }, `${kinds[r.kind] || r.kind} ${r.label}`),
      el("small", {}, ` ${t("made {when}", { when: localDateTime(r.made_at) })}`))));
    $("#no-archive").hidden = reports.length > 0;
  }

  // ------------------------------------------------------------------ sites (issue 21)

  // The picker (only for a token that sees several sites) and the view it asks for: a site
  // (`?site=`: the page reloads, its names and zone are that site's) or the overview of all.
  // False: the page reloads for the token's one site.
  function pickSite(sites) {
    const asked = new URLSearchParams(location.search).get("site");
    if (sites.length === 1) {
      if (sites[0].id !== body.dataset.site) { location.replace(`/?site=${encodeURIComponent(sites[0].id)}`); return false; }
      return true;
    }
    for (const site of sites) siteNames.set(site.id, site.name);
    scope = sites.some((site) => site.id === asked) ? asked : null;
    overview = scope === null;
    const picker = $("#site-picker");
    picker.replaceChildren(el("option", { value: "" }, t("All sites")),
      ...sites.map((site) => el("option", { value: site.id }, site.name)));
    picker.value = scope || "";
    picker.onchange = () => { location.search = picker.value ? `?site=${encodeURIComponent(picker.value)}` : ""; };
    $("#site-picker-label").hidden = sites.length < 2;
    return true;
  }

  async function loadOverview() {
    const rows = await api("/api/overview");
    $("#overview tbody").replaceChildren(...rows.map((row) => {
      const a = row.open_alerts, p = row.patrols, w = row.waste_today;
      const severities = ["critical", "warning", "info"].filter((s) => a[s]).map((s) => `${t(s)} ${a[s]}`).join(" · ");
      return el("tr", { dataset: { site: row.id } },
        el("td", { class: "site" }, el("a", { href: `/?site=${encodeURIComponent(row.id)}` }, row.name)),
        el("td", { class: "alerts", dataset: { label: t("Open alerts") } }, `${a.total}${severities ? ` (${severities})` : ""}`),
        el("td", { class: "waste", dataset: { label: t("Energy wasted today") } }, `${number(w.kwh, 2)} kWh · ${money(w.cost, w.currency)}`),
        el("td", { class: "patrols", dataset: { label: t("Patrols last night") } }, p.checkpoints_due
          ? t("{on_time} of {due} checkpoints on time", { on_time: p.checkpoints_on_time, due: p.checkpoints_due }) : "–"),
        el("td", { class: "silent", dataset: { label: t("Silent devices") }, title: row.silent_devices.devices.join(", ") },
          String(row.silent_devices.count)));
    }));
  }

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      me = await api("/api/me");
      showWho();
      if (!token() && !me.permissions.length) { showLogin(t("Sign in with an API token.")); return; }
      if (!token()) $("#login").hidden = false;  // public read: sign in only to act
      if (token()) await api("/api/session", { method: "POST" });
      if (!pickSite(await api("/api/sites"))) return;
      if (overview) {  // every site the token sees: one row each, and their open alerts
        $("#overview-section").hidden = !can("reports:read");
        $("#alerts-section").hidden = !can("alerts:own");
        $("#work-orders-link").hidden = !can("work_orders:read");
        for (const id of ["#patrols-section", "#devices-section", "#reports-section", "#history-section", "#energy-section",
          "#archive-section"]) $(id).hidden = true;
        await Promise.all([can("reports:read") ? loadOverview() : null, can("alerts:own") ? loadAlerts().then(openStream) : null]);
        clearInterval(refresher);
        refresher = setInterval(() => { if (can("reports:read")) loadOverview().catch(() => {}); }, 30000);
        return;
      }
      $("#alerts-section").hidden = !can("alerts:own");
      $("#work-orders-link").hidden = !can("work_orders:read");
      $("#devices-section").hidden = !can("devices:read");
      $("#reports-section").hidden = !can("reports:read");
      $("#history-section").hidden = !can("alerts:own");
      $("#energy-section").hidden = !can("reports:read");
      $("#archive-section").hidden = !can("reports:read");
      const loads = [];
      if (can("alerts:own")) loads.push(loadAlerts().then(openStream), loadHistory());  // a guard: its post's alerts (issue 18)
      if (can("patrols:own")) loads.push(loadRounds());
      if (can("devices:read")) loads.push(loadDevices());
      if (can("reports:read")) loads.push(loadEnergy(), loadArchive());
      await Promise.all(loads);
      clearInterval(refresher);
      refresher = setInterval(() => {
        if (can("patrols:own")) loadRounds().catch(() => {});
        if (can("devices:read")) loadDevices().catch(() => {});
        if (can("reports:read")) loadEnergy().catch(() => {});
      }, 30000);
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not load the dashboard: {error}", { error: error.message }));
    }
  }

  start();
})();
