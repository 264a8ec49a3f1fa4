// Work orders (repair requests): list, detail and the report form, on one page sized for a
// phone. The token is the dashboard's (this tab's sessionStorage, sent as a Bearer header);
// photos are <img> links, which send the session cookie from POST /api/session instead.
// Which buttons show follows the caller's permissions (GET /api/me) and the order's state
// and owner; the gateway decides again on every request (gateway/workorders.py).
"use strict";

(() => {
  const OPEN = ["new", "taken", "in_progress", "waiting", "reopened"];
  const zone = document.body.dataset.timezone;
  const photoMax = Number(document.body.dataset.photoMaxBytes);
  let me = null;
  let people = [];

  // common.js; the page's words: gateway/workorders_api.py WORK_ORDER_STRINGS
  const { $, el, say, token, t, known, lang } = window.warden;
  const can = (permission) => Boolean(me && me.permissions.includes(permission));
  // Rooms by name where the site gives one: the report form's list holds id -> label.
  const ROOMS = new Map([...document.querySelectorAll("#rooms option")].map((o) => [o.value, o.textContent || o.value]));
  const room = (id) => ROOMS.get(id) || id;
  // Ids the API keeps (states, steps, categories, priorities) shown in words: "in_progress" -> t("in progress");
  // an id the table lacks (a site's own category) shows as it is.
  const word = (id) => {
    const text = String(id).replace(/_/g, " ");
    return known(text) ? t(text) : String(id);
  };
  // An action's path ("hand-over", "notes") as the history's step word ("hand over", "note").
  const actionWord = (action) => word(action === "notes" ? "note" : action.replace(/-/g, " "));

  function localTime(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(lang, { timeZone: zone, weekday: "short", day: "2-digit", month: "short",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(new Date(iso));
  }

  const api = window.warden.makeApi((hadToken) => showLogin(t(hadToken ? "The gateway refused this token." : "Sign in with an API token.")));

  const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });

  // ------------------------------------------------------------------ sign in

  function showLogin(text) {
    $("#login").hidden = false;
    $("#who").hidden = true;
    $("#views").hidden = true;
    for (const id of ["#list-view", "#new-view", "#detail-view"]) $(id).hidden = true;
    if (text) say(text);
  }

  window.warden.bindSession(api, start);  // start: declared below (hoisted)

  // ------------------------------------------------------------------ views

  function show(view) {
    for (const name of ["list", "new", "detail"]) $(`#${name}-view`).hidden = name !== view;
    $("#tab-list").classList.toggle("current", view === "list");
    $("#tab-new").classList.toggle("current", view === "new");
  }

  async function route() {
    const hash = location.hash.slice(1);
    say("");
    try {
      if (hash === "new") { show("new"); return; }
      if (/^\d+$/.test(hash)) { await loadDetail(Number(hash)); return; }
      await loadList();
    } catch (error) {
      if (error.message !== "unauthorized") say(error.message);
    }
  }

  function stateTag(order) {
    return el("span", { class: `wo-state wo-state-${order.state}` }, word(order.state));
  }

  function deadline(order) {
    if (!OPEN.includes(order.state)) return "";
    const untaken = order.state === "new" || order.state === "reopened";
    const due = untaken ? order.take_by : order.resolve_by;
    return t(untaken ? "take by {when}" : "done by {when}", { when: localTime(due) });
  }

  async function loadList() {
    show("list");
    const filter = $("#filter").value;
    const query = filter === "open" ? OPEN.map((s) => `state=${s}`).join("&") : filter === "mine" ? "mine=true" : "";
    const orders = await api(`/api/work-orders?${query}`);
    const now = Date.now();
    $("#orders").replaceChildren(...orders.map((o) => el("li", { dataset: { orderId: o.id, state: o.state } },
      el("a", { href: `#${o.id}` },
        el("div", { class: "line" }, el("strong", {}, `#${o.id} ${room(o.room)}`), stateTag(o)),
        el("div", {}, o.text),
        el("small", { class: OPEN.includes(o.state) && Date.parse(o.state === "new" ? o.take_by : o.resolve_by) < now ? "overdue" : "" },
          `${word(o.category)} · ${word(o.priority)} · ${o.owner ? t("owner {name}", { name: o.owner }) : t("nobody yet")}`
          + ` · ${deadline(o)}`)))));
    $("#no-orders").hidden = orders.length > 0;
    $("#order-count").textContent = orders.length ? `(${orders.length})` : "";
  }

  $("#filter").addEventListener("change", () => loadList().catch((error) => say(error.message)));

  // ------------------------------------------------------------------ report a fault

  $("#new-order").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("#new-photo").files[0];
    if (file && file.size > photoMax) { say(t("The photo is larger than {bytes} bytes.", { bytes: photoMax })); return; }
    const button = $("#report");
    button.disabled = true;
    try {
      const order = await post("/api/work-orders", {
        room: $("#new-room").value.trim(), text: $("#new-text").value.trim(),
        category: $("#new-category").value, priority: $("#new-priority").value,
        ...(document.body.dataset.site ? { site: document.body.dataset.site } : {}),  // a gateway of several sites (issue 21)
      });
      if (file) await upload(order.id, file);
      $("#new-order").reset();
      location.hash = `#${order.id}`;
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not report: {error}", { error: error.message }));
    } finally {
      button.disabled = false;
    }
  });

  function upload(id, file) {
    return api(`/api/work-orders/${id}/photos`, { method: "POST", body: file, headers: { "Content-Type": file.type } });
  }

  // ------------------------------------------------------------------ detail

  function actionsFor(order) {
    const mine = order.owner === me.name;
    const requester = order.requested_by === me.name;
    const forOthers = can("work_orders:assign");
    const worker = can("work_orders:work");
    const buttons = [];
    const step = (action, label) => buttons.push(el("button", { type: "button", class: `wo-${action}`,
      onclick: () => act(order.id, action) }, t(label)));
    if (worker && ["new", "reopened"].includes(order.state) && (!order.owner || mine)) step("take", "Take");
    if ((mine || forOthers) && ["taken", "waiting"].includes(order.state)) step("start", "Start work");
    if ((mine || forOthers) && ["taken", "in_progress"].includes(order.state)) step("wait", "Wait for parts");
    if ((mine || forOthers) && ["taken", "in_progress", "waiting"].includes(order.state)) step("done", "Done");
    if ((requester || forOthers) && ["done", "closed"].includes(order.state)) step("reopen", "Reopen");
    return buttons;
  }

  async function loadDetail(id) {
    const order = await api(`/api/work-orders/${id}`);
    show("detail");
    $("#detail-title").replaceChildren(`#${order.id} ${room(order.room)} `, stateTag(order));
    $("#detail-text").textContent = order.text;
    const facts = [
      ["Category", `${word(order.category)}, ${word(order.priority)}`],
      ["Reported", t("{when} by {who}", { when: localTime(order.created_at), who: order.requested_by })],
      ["Owner", order.owner || t("nobody yet")], ["Take by", localTime(order.take_by)], ["Done by", localTime(order.resolve_by)],
    ];
    if (order.escalation_level) facts.push(["Escalated", t("level {n}", { n: order.escalation_level })]);
    if (order.alert_id) facts.push(["From alert", `#${order.alert_id}`]);
    if (order.rating) facts.push(["Rating", `${order.rating}/5${order.rating_comment ? " - " + order.rating_comment : ""}`]);
    $("#detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, t(k)), el("dd", {}, v)]));
    $("#detail-actions").replaceChildren(...actionsFor(order));

    const open = OPEN.includes(order.state);
    const handOver = open && ((order.owner === me.name && can("work_orders:work")) || can("work_orders:assign"));
    $("#hand-over").hidden = !handOver;
    $("#hand-over").dataset.action = order.owner === me.name ? "hand-over" : "assign";
    $("#hand-over-button").textContent = t(order.owner === me.name ? "Hand over" : "Assign");
    if (handOver) {
      $("#hand-over-to").replaceChildren(...people.filter((p) => p.takes_work_orders && p.name !== order.owner)
        .map((p) => el("option", { value: p.name }, `${p.name} (${p.role})`)));
    }
    $("#closing").hidden = !(order.state === "done" && (order.requested_by === me.name || can("work_orders:assign")));
    $("#add-photo").hidden = !(open && (order.requested_by === me.name || order.owner === me.name));
    $("#detail-photos").replaceChildren(...order.photos.map((p) => el("img", { src: p.url, alt: t("photo {id}", { id: p.id }), loading: "lazy" })));
    $("#detail-history").replaceChildren(...order.history.map((h) => el("li", {},
      `${localTime(h.at)} ${h.who}: ${word(h.action)}`,
      h.details && h.details.to ? t(" to {who}", { who: h.details.to }) : "",
      h.details && h.details.rating ? ` (${h.details.rating}/5)` : "",
      h.note ? ` - ${h.note}` : "")));
    $("#detail-view").dataset.orderId = order.id;
  }

  const current = () => Number($("#detail-view").dataset.orderId);

  async function act(id, action, body) {
    try {
      await post(`/api/work-orders/${id}/${action}`, body);
      await loadDetail(id);
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not {action}: {error}", { action: actionWord(action), error: error.message }));
    }
  }

  $("#hand-over").addEventListener("submit", (event) => {
    event.preventDefault();
    act(current(), $("#hand-over").dataset.action, { to: $("#hand-over-to").value, note: $("#hand-over-note").value });
    $("#hand-over-note").value = "";
  });

  $("#closing").addEventListener("submit", (event) => {
    event.preventDefault();
    const rating = $("#rating").value;
    act(current(), "close", { rating: rating ? Number(rating) : null, comment: $("#rating-comment").value || null });
  });

  $("#add-note").addEventListener("submit", (event) => {
    event.preventDefault();
    const note = $("#note-text").value.trim();
    if (!note) return;
    $("#note-text").value = "";
    act(current(), "notes", { note });
  });

  $("#add-photo").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("#photo-file").files[0];
    if (!file) return;
    try {
      await upload(current(), file);
      await loadDetail(current());
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not upload: {error}", { error: error.message }));
    }
  });

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      me = await api("/api/me");
      if (!token() || !can("work_orders:read")) { showLogin(t("Sign in with an API token.")); return; }
      const site = document.body.dataset.site;  // a gateway of several sites (issue 21): the page of one of the token's
      if (site && me.sites && !me.sites.includes(site)) {
        location.replace(`/work-orders?site=${encodeURIComponent(me.sites[0])}${location.hash}`);
        return;
      }
      $("#login").hidden = true;
      $("#who").hidden = false;
      $("#who-name").textContent = `${me.name} (${me.role})`;
      $("#views").hidden = false;
      $("#tab-new").hidden = !can("work_orders:create");
      await api("/api/session", { method: "POST" });  // the cookie photos are fetched with
      people = await api("/api/people");
      await route();
    } catch (error) {
      if (error.message !== "unauthorized") say(t("Could not load: {error}", { error: error.message }));
    }
  }

  window.addEventListener("hashchange", () => { if (me) route(); });
  start();
})();
