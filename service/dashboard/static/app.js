// PerfectQueue dashboard: plain JavaScript, no build step. Every value from the API is put into the
// page as text (never as HTML). The API key lives in this tab's sessionStorage only.
"use strict";

const KEY = "perfectqueue.apiKey";
const REFRESH_MS = 3000;
const STATES = ["waiting", "leased", "scheduled", "finished", "dead", "cancelled"];

const ui = {
  paused: false,
  timer: null,
  refresh: null, // the current page's data loader
  route: "",
  optional: undefined, // the operator calls this service's API offers beyond the dashboard's own
  cursors: [], // the queue page's cursor stack: [null, c1, c2, ...]
};

// -- DOM helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  return el;
}

const $ = (selector) => document.querySelector(selector);

function setMain(...children) {
  $("#main").replaceChildren(...children.filter((child) => child !== null && child !== undefined));
}

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.code, data.detail || data.title);
  return data;
}

const enc = encodeURIComponent;
const queuePath = (queue) => `/v1/queues/${enc(queue)}`;

async function detectOptional() {
  // Cancel and requeue are newer than some services: offer them only where /openapi.json has them.
  if (ui.optional !== undefined) return ui.optional;
  const found = new Set();
  try {
    const doc = await (await fetch("/openapi.json", { cache: "no-store" })).json();
    for (const name of ["cancel", "requeue"]) {
      if (doc.paths?.[`/v1/queues/{queue}/${name}`]?.post) found.add(name);
    }
  } catch (err) {
    // no description: only the dashboard's own actions
  }
  ui.optional = found;
  return found;
}

// -- formatting ----------------------------------------------------------------------------

function absolute(unix) {
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(".000Z", " UTC");
}

function relative(unix, now) {
  const delta = unix - now;
  const span = Math.abs(delta);
  if (span === 0) return "now";
  let text;
  if (span < 60) text = `${span}s`;
  else if (span < 3600) text = `${Math.round(span / 60)}m`;
  else if (span < 86400) text = `${(span / 3600).toFixed(1)}h`;
  else text = `${(span / 86400).toFixed(1)}d`;
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

// The API's instants are RFC 3339 strings (null where they do not apply): unix seconds here.
function unixOf(instant) {
  return instant === null || instant === undefined ? null : Math.round(Date.parse(instant) / 1000);
}

function when(unix, now) {
  if (unix === null || unix === undefined) return h("span", { class: "muted", text: "—" });
  return h("span", { title: absolute(unix), text: now ? relative(unix, now) : absolute(unix) });
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "none waiting";
  return seconds > 0 ? relative(0, seconds).replace(" ago", "") : "0s";
}

const stateChip = (state) => h("span", { class: `state ${state}`, "data-state": state, text: state });
const number = (n) => Number(n).toLocaleString("en-US");

// -- login ---------------------------------------------------------------------------------

function showLogin(message) {
  stopTimer();
  $("#logout").hidden = true;
  $("#pause").hidden = true;
  $("#crumbs").replaceChildren();
  const input = h("input", {
    id: "key", type: "password", autocomplete: "off", placeholder: "pq_…", "aria-label": "API key",
  });
  const form = h(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        sessionStorage.setItem(KEY, key);
        render();
      },
    },
    h("label", { for: "key", text: "API key with the admin scope" }),
    input,
    h("button", { class: "primary", type: "submit", text: "Sign in" }),
    h("p", {
      class: "muted",
      text: "The key is kept in this browser tab's session only and sent with each API call.",
    }),
  );
  setMain(
    h(
      "section",
      { class: "login panel", id: "login" },
      h("h1", { text: "Sign in" }),
      message ? h("div", { class: "notice error", role: "alert", text: message }) : null,
      form,
    ),
  );
  input.focus();
}

function failed(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    const had = sessionStorage.getItem(KEY);
    sessionStorage.removeItem(KEY);
    if (err.status === 403) showLogin("That key does not have the admin scope.");
    else showLogin(had ? "That key was not accepted." : "");
    return true;
  }
  return false;
}

function notice(kind, text) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", text });
}

// -- refresh -------------------------------------------------------------------------------

function stopTimer() {
  if (ui.timer) clearTimeout(ui.timer);
  ui.timer = null;
}

function schedule() {
  stopTimer();
  if (!ui.paused && ui.refresh) ui.timer = setTimeout(tick, REFRESH_MS);
}

async function tick(first) {
  const route = ui.route;
  try {
    await ui.refresh();
    if (route !== ui.route) return;
    $("#refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (failed(err)) return;
    if (first) $("#main").prepend(notice("error", err.message));
    $("#refreshed").textContent = `refresh failed: ${err.message}`;
  }
  if (route === ui.route) schedule();
}

function togglePause() {
  ui.paused = !ui.paused;
  $("#pause").textContent = ui.paused ? "Resume updates" : "Pause updates";
  $("#pause").setAttribute("aria-pressed", String(ui.paused));
  if (ui.paused) stopTimer();
  else if (ui.refresh) tick();
}

// -- the chart -----------------------------------------------------------------------------

// A round number at or above n (1, 2 or 5 times a power of ten): the chart's top.
function niceTop(n) {
  const power = 10 ** Math.floor(Math.log10(Math.max(1, n)));
  return [1, 2, 5, 10].map((k) => k * power).find((k) => k >= n);
}

function chartText(x, y, text, anchor) {
  const el = svg("text", { x, y, "text-anchor": anchor, class: "axis" });
  el.textContent = text;
  return el;
}

function chart(throughput) {
  const [left, right, top, bottom] = [34, 6, 20, 16];
  const [width, height] = [320, 112];
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const all = throughput.submitted.concat(throughput.finished);
  const ceiling = niceTop(Math.max(...all));
  const box = svg("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Submitted and finished tasks per minute over the last hour (axis up to ${ceiling} per minute)`,
  });
  const y = (v) => top + plotH - (v / ceiling) * plotH;
  const x = (i, n) => left + (i * plotW) / (n - 1);
  box.append(chartText(2, 9, "tasks/min", "start"));
  for (const v of [0, ceiling / 2, ceiling]) {
    box.append(svg("line", { class: "grid", x1: left, y1: y(v), x2: width - right, y2: y(v) }));
    box.append(chartText(left - 4, y(v) + 3, number(v), "end"));
  }
  for (const minutes of [60, 45, 30, 15, 0]) {
    const at = left + plotW * (1 - minutes / 60);
    const anchor = minutes === 60 ? "start" : minutes === 0 ? "end" : "middle";
    box.append(chartText(at, height - 3, minutes ? `−${minutes} min` : "now", anchor));
  }
  for (const [series, name] of [[throughput.submitted, "submitted"], [throughput.finished, "finished"]]) {
    const points = series.map((v, i) => `${x(i, series.length).toFixed(1)},${y(v).toFixed(1)}`);
    box.append(svg("polyline", { class: name, points: points.join(" ") }));
  }
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const last = (xs) => xs[xs.length - 1];
  return h(
    "div",
    { class: "throughput" },
    box,
    h(
      "div",
      { class: "legend" },
      h("span", {}, h("i", { class: "s" }), `submitted ${number(sum(throughput.submitted))}/h (${number(last(throughput.submitted))} this minute)`),
      h("span", {}, h("i", { class: "f" }), `finished ${number(sum(throughput.finished))}/h (${number(last(throughput.finished))} this minute)`),
      h("span", { text: `peak ${number(Math.max(...all))}/min` }),
    ),
  );
}

// What an operator should notice: each a line above the counts, with data-warning naming it. When
// (how long a task waits, an acquisition waits for the lock) is the queue's setting, in the overview.
function warnings(queue) {
  const found = [];
  const trouble = queue.trouble || {};
  const limits = queue.warnings || {};
  if (queue.paused) found.push(["paused", "Paused: polls get no task; submits are still accepted."]);
  if (limits.stall_after && queue.oldest_waiting_age >= limits.stall_after && queue.leased === 0) {
    found.push(["stalled", `Tasks have waited ${age(queue.oldest_waiting_age)} and no worker holds any: are the workers running?`]);
  }
  if (queue.dead_last_hour > 0) {
    const link = h("a", { href: `#/queues/${enc(queue.name)}?state=dead`, text: "see the dead tasks" });
    found.push(["dead", [`${number(queue.dead_last_hour)} task(s) went dead in the last hour: `, link]]);
  }
  const minutes = Math.round((trouble.window || 0) / 60);
  if (trouble.database_errors > 0) {
    found.push(["errors", `${number(trouble.database_errors)} database error(s) in the last ${minutes} min (on the replica that answered).`]);
  }
  if (limits.lock_wait && trouble.lock_wait_max >= limits.lock_wait) {
    found.push(["lock", `Acquisitions waited up to ${trouble.lock_wait_max.toFixed(1)} s for the table's lock in the last ${minutes} min.`]);
  }
  if (!found.length) return null;
  return h("ul", { class: "warnings" }, found.map(([kind, text]) => h("li", { class: "warning", "data-warning": kind }, text)));
}

function stats(counts) {
  const queue = counts;
  const stat = (name, label) => {
    const capped = (queue.capped || []).includes(name);
    const title = capped ? "Counting stops here to keep the page fast: there are at least this many." : null;
    const bad = name === "dead" && queue.dead > 0;
    return h(
      "div",
      { class: `stat${bad ? " bad" : ""}`, "data-stat": name, title },
      h("b", { text: `${number(queue[name])}${capped ? "+" : ""}` }),
      h("span", { text: label }),
    );
  };
  return h(
    "div",
    {},
    warnings(queue),
    h("div", { class: "stats" }, STATES.map((name) => stat(name, name))),
    h("p", { class: "meta", "data-stat": "oldest", text: `Oldest waiting: ${age(queue.oldest_waiting_age)}` }),
    chart(queue.throughput),
  );
}

// -- pages ---------------------------------------------------------------------------------

async function overviewPage() {
  crumbs();
  const holder = h("div", { class: "cards", id: "queues" });
  setMain(h("h1", { text: "Queues" }), holder);
  return async () => {
    const overview = await api("GET", "/v1/overview");
    const cards = overview.queues.map((queue) =>
      h(
        "section",
        { class: "card panel queue-card", "data-queue": queue.name },
        h("h2", {}, h("a", { href: `#/queues/${enc(queue.name)}`, text: queue.name })),
        stats(queue),
      ),
    );
    holder.replaceChildren(...(cards.length ? cards : [h("p", { class: "muted", text: "This key administers no queue." })]));
  };
}

function filtersOf(query) {
  const filters = {};
  for (const name of ["state", "type", "user", "prefix", "sort"]) {
    const value = query.get(name);
    if (value) filters[name] = value;
  }
  return filters;
}

function filterForm(queue, filters) {
  const field = (name, label, input) => h("label", {}, label, input);
  const select = h(
    "select",
    { name: "state", id: "filter-state" },
    h("option", { value: "", text: "any" }),
    STATES.map((s) => h("option", { value: s, selected: filters.state === s, text: s })),
  );
  const text = (name) => h("input", { name, id: `filter-${name}`, value: filters[name] || "", autocomplete: "off" });
  return h(
    "form",
    {
      class: "filters",
      id: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const params = new URLSearchParams();
        for (const [name, value] of new FormData(event.target)) if (value) params.set(name, String(value));
        const query = params.toString();
        location.hash = `#/queues/${enc(queue)}${query ? `?${query}` : ""}`;
      },
    },
    field("state", "Status", select),
    field("type", "Type", text("type")),
    field("user", "User", text("user")),
    field("prefix", "Id prefix", text("prefix")),
    field("sort", "Sort by", h(
      "select",
      { name: "sort", id: "filter-sort" },
      h("option", { value: "", text: "default" }),
      h("option", { value: "due", selected: filters.sort === "due", text: "due time, longest waiting first" }),
      h("option", { value: "id", selected: filters.sort === "id", text: "id" }),
    )),
    h("button", { type: "submit", text: "Filter" }),
    h("a", { href: `#/queues/${enc(queue)}`, text: "clear" }),
  );
}

function usersTable(users) {
  if (!users.length) return h("p", { class: "muted", text: "No user has tasks leased or scheduled." });
  const rows = users.map((u) => {
    const held = u.leased + u.scheduled;
    const meter = h("span", { class: `meter${u.max_running !== null && held >= u.max_running ? " full" : ""}` });
    const bar = h("i");
    bar.style.width = `${u.max_running ? Math.min(100, (100 * held) / u.max_running) : 0}%`;
    meter.append(bar);
    return h(
      "tr",
      { "data-user": u.user },
      h("td", { class: "id", text: u.user }),
      h("td", {}, meter, `${held} / ${u.max_running === null ? "∞" : u.max_running}`),
      h("td", { text: number(u.leased) }),
      h("td", { text: number(u.scheduled) }),
    );
  });
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { id: "users" },
      h("thead", {}, h("tr", {}, ["User", "Held / max_running", "Leased", "Scheduled"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows),
    ),
  );
}

// The API's status, with "running" split as the dashboard shows it: held by a worker (leased) or
// nobody's, due later (scheduled: run_at, retry_wait).
function withState(task) {
  const split = task.leased ? "leased" : "scheduled";
  return { ...task, state: task.status === "running" ? split : task.status };
}

// A dashboard state as the task listing's filters: status, and whether a worker holds the task;
// by default with a state or user in due-time order, which stays on an index however rare the
// tasks are, else in id order.
function listingParams(filters) {
  const { state, sort, ...rest } = filters;
  const params = new URLSearchParams({ ...rest, limit: "50" });
  const order = sort || (state || rest.user ? "due" : "id");
  if (order === "due") params.set("order", "due");
  if (state === "leased" || state === "scheduled") {
    params.set("status", "running");
    params.set("leased", String(state === "leased"));
  } else if (state) {
    params.set("status", state);
  }
  return params;
}

function dueLabel(state) {
  const labels = { waiting: "deliverable since", leased: "lease expires", scheduled: "runs at" };
  return labels[state] || "retained until";
}

// The time the Due column shows: when nobody's task is due, when a lease ends, when an ended
// task's row goes.
function dueTime(task) {
  if (task.state === "leased") return unixOf(task.lease_expires_at);
  if (task.state === "waiting" || task.state === "scheduled") return unixOf(task.due_at);
  return unixOf(task.expires_at);
}

function tasksTable(queue, page, now) {
  const rows = page.tasks.map(withState).map((task) =>
    h(
      "tr",
      { "data-id": task.id },
      h("td", { class: "id mono" }, h("a", { href: `#/queues/${enc(queue)}/tasks/${enc(task.id)}`, text: task.id })),
      h("td", { text: task.type }),
      h("td", { text: task.user ?? "—" }),
      h("td", {}, stateChip(task.state), task.holder === "ruby" ? h("span", { class: "muted holder", text: " by Ruby" }) : null),
      h("td", {}, when(unixOf(task.created_at), now)),
      h("td", { class: "age" }, task.created_at ? age(now - unixOf(task.created_at)) : "—"),
      h("td", {}, h("span", { class: "muted", text: `${dueLabel(task.state)} ` }), when(dueTime(task), now)),
    ),
  );
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { id: "tasks" },
      h("thead", {}, h("tr", {}, ["Id", "Type", "User", "Status", "Submitted", "Age", "Due"].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No task on this page." }))),
    ),
  );
}

async function queuePage(queue, query) {
  crumbs(h("span", {}, h("a", { href: `#/queues/${enc(queue)}`, text: queue })));
  const filters = filtersOf(query);
  ui.cursors = [null];
  const summary = h("div", { id: "summary", class: "panel" });
  const control = h("div", { id: "queue-control", class: "actions" });
  const flash = h("div", { id: "flash" });
  const users = h("div", { id: "users-holder" });
  const tasks = h("div", { id: "tasks-holder" });
  const pager = h("div", { class: "pager" });
  setMain(
    h("h1", { text: `Queue ${queue}` }),
    flash,
    control,
    summary,
    h("h2", { text: "Users (fair scheduling)" }),
    users,
    h("h2", { text: "Tasks" }),
    filterForm(queue, filters),
    bulkBar(queue, filters, flash),
    tasks,
    pager,
  );
  const move = (cursors) => {
    ui.cursors = cursors;
    tick();
  };
  return async () => {
    const cursor = ui.cursors[ui.cursors.length - 1];
    const params = listingParams(filters);
    if (cursor) params.set("cursor", cursor);
    const [overview, loads, page] = await Promise.all([
      api("GET", `/v1/overview?queue=${enc(queue)}`),
      api("GET", `${queuePath(queue)}/users`),
      api("GET", `${queuePath(queue)}/tasks?${params}`),
    ]);
    const info = overview.queues.find((q) => q.name === queue);
    summary.replaceChildren(info ? stats(info) : notice("error", "This key does not administer this queue."));
    control.replaceChildren(info ? pauseButton(queue, info.paused, flash) : "");
    users.replaceChildren(usersTable(loads.users));
    tasks.replaceChildren(tasksTable(queue, page, overview.now));
    const pageNo = ui.cursors.length;
    pager.replaceChildren(
      h("button", { type: "button", id: "first-page", disabled: pageNo === 1, onclick: () => move([null]), text: "First" }),
      h("button", { type: "button", id: "prev-page", disabled: pageNo === 1, onclick: () => move(ui.cursors.slice(0, -1)), text: "← Previous" }),
      h("span", { class: "muted", text: `page ${pageNo}${page.next_cursor && page.tasks.length < 50 ? " (a bounded read: more may follow)" : ""}` }),
      h("button", { type: "button", id: "next-page", disabled: !page.next_cursor, onclick: () => move([...ui.cursors, page.next_cursor]), text: "Next →" }),
    );
  };
}

// With a dead or waiting filter: requeue or cancel every task it selects (after a confirmation),
// a request of up to 1,000 tasks at a time until the selection is done.
function bulkBar(queue, filters, flash) {
  const action = { dead: "requeue", waiting: "cancel" }[filters.state];
  if (!action) return null;
  const of = [
    filters.type ? `of type ${filters.type}` : "",
    filters.user ? `of user ${filters.user}` : "",
    filters.prefix ? `with ids starting ${filters.prefix}` : "",
  ].filter(Boolean).join(", ");
  const label = `${action === "requeue" ? "Requeue every dead task" : "Cancel every waiting task"}${of ? ` ${of}` : ""}`;
  const effect = action === "requeue" ? "Each becomes waiting again, its attempts reset." : "Each ends cancelled and is never delivered.";
  const run = async () => {
    const body = { action, status: filters.state };
    for (const name of ["type", "user", "prefix"]) if (filters[name]) body[name] = filters[name];
    let [done, refused] = [0, 0];
    try {
      for (let round = 0; round < 100; round++) {
        const answer = await api("POST", `${queuePath(queue)}/bulk`, body);
        done += answer.successful.length;
        refused += answer.failed.length;
        if (!answer.next_cursor) break;
        body.cursor = answer.next_cursor;
      }
      flash.replaceChildren(notice("ok", `${label}: ${number(done)} done, ${number(refused)} refused (changed meanwhile).`));
    } catch (err) {
      if (failed(err)) return;
      flash.replaceChildren(notice("error", `${label} stopped after ${number(done)}: ${err.message}`));
    }
    tick();
  };
  return h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "bulk", text: label, onclick: () => confirmThen(`${label}? ${effect}`, run) }));
}

// Pause or resume a queue (every replica follows within a second), after a confirmation.
function pauseButton(queue, paused, flash) {
  const [label, path, question, done] = paused
    ? ["Resume queue", "resume", `Resume queue ${queue}? Workers get its tasks again.`, "Queue resumed."]
    : ["Pause queue", "pause", `Pause queue ${queue}? Polls get no task until it is resumed; submits are still accepted and leased tasks run on.`, "Queue paused."];
  const run = async () => {
    try {
      await api("POST", `${queuePath(queue)}/${path}`);
      flash.replaceChildren(notice("ok", done));
    } catch (err) {
      if (failed(err)) return;
      flash.replaceChildren(notice("error", `${label} failed: ${err.message}`));
    }
    tick();
  };
  return h("button", { type: "button", class: paused ? "primary" : "danger", id: `queue-${path}`, text: label, onclick: () => confirmThen(question, run) });
}

function confirmThen(text, action) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  const ok = $("#confirm-ok");
  const cancel = $("#confirm-cancel");
  const close = () => {
    ok.onclick = null;
    cancel.onclick = null;
    dialog.close();
  };
  ok.onclick = () => {
    close();
    action();
  };
  cancel.onclick = close;
  dialog.showModal();
}

async function taskPage(queue, id) {
  crumbs(
    h("span", {}, h("a", { href: `#/queues/${enc(queue)}`, text: queue })),
    h("span", { class: "mono", text: id }),
  );
  const flash = h("div", { id: "flash" });
  const body = h("div", { id: "task" });
  setMain(h("h1", { class: "mono", text: id }), flash, body);
  const optional = await detectOptional();
  const act = (label, path, question, done, extra = {}) =>
    h("button", {
      type: "button",
      class: "danger",
      id: extra.force ? `${path}-force` : path,
      text: label,
      onclick: () =>
        confirmThen(question, async () => {
          try {
            await api("POST", `${queuePath(queue)}/${path}`, { id, ...extra });
            flash.replaceChildren(notice("ok", done));
          } catch (err) {
            if (failed(err)) return;
            flash.replaceChildren(notice("error", `${label} failed: ${err.message}`));
          }
          tick();
        }),
    });
  return async () => {
    const [task, now] = await Promise.all([
      api("GET", `${queuePath(queue)}/tasks/${enc(id)}`).then(withState),
      api("GET", `/v1/overview?queue=${enc(queue)}`).then((o) => o.now),
    ]);
    const field = (label, value) => [h("dt", { text: label }), h("dd", {}, value)];
    const stamp = (unix, id) => (unix === null ? "—" : h("span", { id }, absolute(unix), h("span", { class: "muted", text: ` (${relative(unix, now)})` })));
    const live = ["waiting", "leased", "scheduled"].includes(task.state);
    const dead = task.state === "dead";
    body.replaceChildren(
      h(
        "section",
        { class: "panel" },
        h(
          "dl",
          { class: "fields" },
          field("Id", h("span", { class: "mono", id: "task-id", text: task.id })),
          field("Type", task.type),
          field("User", task.user ?? "—"),
          field("Status", h("span", { id: "task-state" }, stateChip(task.state))),
          field("Submitted", stamp(unixOf(task.created_at))),
          live ? null : field("Ended", stamp(unixOf(task.finished_at), "task-ended")),
          field(dueLabel(task.state)[0].toUpperCase() + dueLabel(task.state).slice(1), stamp(dueTime(task), "task-due")),
          field("max_running", task.max_running ?? "—"),
          field("Leased", h("span", { id: "task-holder", text: holderText(task) })),
          task.attempts !== undefined ? field("Attempts", `${task.attempts}${task.max_attempts ? ` of ${task.max_attempts}` : ""}`) : null,
          task.last_error ? field("Last error", h("span", { class: "mono", text: task.last_error })) : null,
          task.cancel_requested ? field("Cancel requested", "yes: its worker is asked to stop") : null,
          field("Stored", task.compression ? `${task.compression}-compressed (shown decompressed)` : "as JSON"),
        ),
        h(
          "div",
          { class: "actions" },
          live || dead ? act("Force finish", "force-finish", `Finish task ${task.id} now, whoever holds it? It will never run again.`, "Task finished.") : null,
          live ? act("Retry now", "force-release", `Make task ${task.id} deliverable now? A worker holding it loses its lease.`, "Task released: deliverable now.") : null,
          live && optional.has("cancel") && task.holder !== "ruby" ? act("Cancel", "cancel", `Cancel task ${task.id}? A worker holding it is asked to stop.`, "Cancelled (or cancel requested from its worker).") : null,
          live && optional.has("cancel") && task.holder === "ruby"
            ? act("Force cancel", "cancel", `Task ${task.id} is held by a Ruby PerfectQueue process, which never sees a cancel request. End it cancelled now? That process's next heartbeat or finish fails.`, "Cancelled.", { force: true })
            : null,
          dead && optional.has("requeue") ? act("Requeue", "requeue", `Make dead task ${task.id} waiting again, its attempts reset?`, "Task requeued.") : null,
          live || dead ? null : h("span", { class: "muted", text: `${task.state[0].toUpperCase()}${task.state.slice(1)}: no action applies.` }),
        ),
      ),
      h("h2", { text: "Data" }),
      h("pre", { class: "data", id: "task-data", text: JSON.stringify(task.data, null, 2) }),
    );
  };
}

function holderText(task) {
  if (task.holder === "ruby") return "yes (a Ruby PerfectQueue process holds it: it does not see cancel requests)";
  return task.leased ? "yes (a worker holds it)" : "no";
}

function crumbs(...items) {
  $("#crumbs").replaceChildren(...items);
}

// -- routing -------------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(search || "");
  if (parts[0] === "queues" && parts.length === 2) return () => queuePage(parts[1], query);
  if (parts[0] === "queues" && parts[2] === "tasks" && parts.length >= 4) {
    return () => taskPage(parts[1], parts.slice(3).join("/"));
  }
  return () => overviewPage();
}

async function render() {
  stopTimer();
  ui.route = location.hash;
  ui.refresh = null;
  $("#logout").hidden = !sessionStorage.getItem(KEY);
  $("#pause").hidden = false;
  try {
    ui.refresh = await parseRoute()();
    await tick(true);
  } catch (err) {
    if (!failed(err)) setMain(notice("error", err.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#pause").addEventListener("click", togglePause);
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  window.addEventListener("hashchange", render);
  render();
});
