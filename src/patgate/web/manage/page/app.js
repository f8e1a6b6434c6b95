// patgate token page. Talks to the management API with the session cookie
// (HttpOnly, set by POST api/v1/session) and the CSRF token in a header.
// Every change asks for the password again. Text from the server is only ever
// put in the page with textContent, never as HTML.
"use strict";

(() => {
  const API = "api/v1";
  const CSRF_HEADER = "X-Patgate-CSRF";
  const state = {
    csrf: null, me: null, tokens: [], choices: null, editing: null, mode: "create",
    // Whose tokens are listed: a login, or "" for everyone's (admins).
    owner: null, users: [], sort: { key: "created", dir: "desc" }, choicesOwner: null,
  };
  const DAY_MS = 86400000;
  const DEFAULT_EXPIRY_DAYS = 30;
  let pending = null; // the change waiting for the password
  let shownValue = null; // { id, value } while the value dialog is open

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function call(method, path, body) {
    // Always sent: it also tells the API not to answer 401 with a Basic
    // challenge, which would open the browser's own login dialog.
    const headers = { Accept: "application/json", [CSRF_HEADER]: state.csrf || "none" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    // Every change carries a JSON body, {} at least: the API refuses any
    // other (a cross-site form can send no JSON).
    if (body === undefined && method !== "GET") body = {};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, "network", "The gateway could not be reached. Try again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const code = (data && data.error) || "error";
      const message = (data && data.message) || `The request failed (HTTP ${response.status}).`;
      throw new ApiError(response.status, code, message);
    }
    return data;
  }

  // ---------------------------------------------------------------- helpers

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function setText(id, text) {
    const el = $(id);
    el.textContent = text || "";
    el.hidden = !text;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.includes("-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function dateInputValue(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  // [unit, its length, from what distance on it is used]: days up to two
  // months, so that the default expiry reads "in 30 days".
  const UNITS = [["year", 365 * DAY_MS, 365 * DAY_MS], ["month", 30 * DAY_MS, 60 * DAY_MS],
    ["day", DAY_MS, DAY_MS], ["hour", 3600000, 3600000], ["minute", 60000, 60000]];

  // "3 days ago", "in 30 days", "2 hours ago", "just now".
  function relativeTime(iso, now) {
    const diff = new Date(iso).getTime() - (now || Date.now());
    for (const [unit, ms, from] of UNITS) {
      if (Math.abs(diff) >= from) return RELATIVE.format(Math.round(diff / ms), unit);
    }
    return "just now";
  }

  // A relative time with the absolute one on hover (and for screen readers).
  function timeNode(iso) {
    return el("time", { dateTime: iso, title: `${formatTime(iso)} (${iso.replace("T", " ").replace("Z", " UTC")})`,
      text: relativeTime(iso) });
  }

  function describeToken(token) {
    return token.name ? `“${token.name}” (${token.id})` : `token ${token.id}`;
  }

  function expiryCell(token) {
    const cell = el("td", { class: "expires", "data-label": "Expires" });
    if (token.expiry === "never") {
      cell.textContent = "Never";
    } else if (token.expiry === "sliding") {
      cell.append(`${token.sliding_window} after last use`);
      if (token.expires_at) {
        cell.append(el("span", { class: "under" }, "until ", timeNode(token.expires_at)));
      }
    } else if (token.expires_at) {
      cell.append(timeNode(token.expires_at));
    }
    return cell;
  }

  function notice(text) {
    setText("notice", text);
  }

  function sessionEnded(message) {
    state.csrf = null;
    state.me = null;
    for (const id of ["token-dialog", "purge-dialog", "confirm-dialog", "value-dialog"]) {
      if ($(id).open) $(id).close();
    }
    showLogin(message || "Your session has ended. Log in again.");
  }

  function handleListError(err) {
    if (err.code === "unauthorized" || err.code === "csrf_failed") sessionEnded();
    else setText("list-error", err.message);
  }

  // ---------------------------------------------------------------- session

  function showLogin(message) {
    show("loading", false);
    show("tokens-view", false);
    show("who", false);
    show("login-view", true);
    setText("login-error", message || "");
    $("login-name").focus();
  }

  async function loggedIn(session) {
    state.csrf = session.csrf;
    state.me = session.user;
    state.owner = session.user.login;
    $("who-login").textContent = session.user.login;
    show("loading", false);
    show("login-view", false);
    show("who", true);
    show("tokens-view", true);
    show("people", Boolean(session.user.admin));
    setText("login-error", "");
    await Promise.all([loadPeople(), loadChoices(), refresh()]);
  }

  async function start() {
    try {
      await loggedIn(await call("GET", "/session"));
    } catch (err) {
      showLogin(err.code === "unauthorized" ? "" : err.message);
    }
  }

  async function logIn(event) {
    event.preventDefault();
    const login = $("login-name").value.trim();
    const password = $("login-password").value;
    if (!login || !password) {
      setText("login-error", "Enter your login and your password.");
      return;
    }
    $("login-submit").disabled = true;
    try {
      const session = await call("POST", "/session", { login, password });
      $("login-password").value = "";
      await loggedIn(session);
    } catch (err) {
      setText("login-error", err.status === 401 ? "Wrong login or password." : err.message);
    } finally {
      $("login-submit").disabled = false;
    }
  }

  async function logOut() {
    try {
      await call("DELETE", "/session");
    } finally {
      state.csrf = null;
      state.me = null;
      state.tokens = [];
      state.users = [];
      $("token-rows").replaceChildren();
      showLogin("You are logged out.");
    }
  }

  // ---------------------------------------------------------------- the list

  // The people an admin picks from; everyone else sees only their own.
  async function loadPeople() {
    if (!state.me || !state.me.admin) return;
    try {
      state.users = (await call("GET", "/users")).users;
    } catch (err) {
      state.users = [state.me];
      handleListError(err);
    }
    const options = state.users.map((user) => {
      let label = user.login;
      if (user.login === state.me.login) label += " (you)";
      if (user.admin && user.login !== state.me.login) label += " (admin)";
      if (user.disabled) label += " (disabled)";
      return el("option", { value: user.login, text: label });
    });
    options.push(el("option", { value: "", text: "Everyone" }));
    $("owner-picker").replaceChildren(...options);
    $("owner-picker").value = state.owner;
  }

  // Whose token a new one is: the picked person, or yourself for "Everyone".
  function newTokenOwner() {
    return state.owner || state.me.login;
  }

  async function pickOwner() {
    state.owner = $("owner-picker").value;
    notice("");
    state.tokens = [];
    render();
    await Promise.all([loadChoices(), refresh()]);
  }

  // What the form offers, grantable or not for ``owner`` (default: whose
  // tokens a new one is).
  async function loadChoices(owner) {
    owner = owner || newTokenOwner();
    const query = owner === state.me.login ? "" : "?owner=" + encodeURIComponent(owner);
    let choices;
    try {
      choices = await call("GET", "/scopes" + query);
    } catch (err) {
      choices = { held: ["*"], scope_sets: [], scopes: [] };
      handleListError(err);
    }
    state.choices = choices;
    state.choicesOwner = owner;
  }

  async function refresh() {
    setText("list-error", "");
    const owner = state.owner;
    try {
      const query = owner ? "?owner=" + encodeURIComponent(owner) : "";
      const data = await call("GET", "/tokens" + query);
      if (owner !== state.owner) return; // another person was picked meanwhile
      state.tokens = data.tokens;
      render();
    } catch (err) {
      handleListError(err);
    }
  }

  function listTitle() {
    if (state.owner === "") return "Everyone’s tokens";
    if (!state.me || state.owner === state.me.login) return "Your tokens";
    return `Tokens of ${state.owner}`;
  }

  const STATUS_ORDER = { active: 0, expired: 1, revoked: 2 };

  function sortValue(token, key) {
    const time = (iso, missing) => (iso ? new Date(iso).getTime() : missing);
    switch (key) {
      case "name": return (token.name || "\uffff").toLowerCase();
      case "owner": return token.owner;
      case "expires": return token.expiry === "never" ? Infinity : time(token.expires_at, Infinity);
      case "last_used": return time(token.last_used_at, -Infinity);
      case "status": return STATUS_ORDER[token.status] ?? 3;
      default: return time(token.created_at, 0);
    }
  }

  function sorted(tokens) {
    const { key, dir } = state.sort;
    const sign = dir === "asc" ? 1 : -1;
    return [...tokens].sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      if (x < y) return -sign;
      if (x > y) return sign;
      return (b.created_at || "").localeCompare(a.created_at || "");
    });
  }

  function matchesFilter(token) {
    const status = $("status-filter").value;
    if (status && token.status !== status) return false;
    const words = $("token-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    if (words.length === 0) return true;
    const text = [token.name, token.id, token.owner, token.project || "", token.status,
      ...token.scopes].join(" ").toLowerCase();
    return words.every((w) => text.includes(w));
  }

  function setSort(key, dir) {
    if (!dir) {
      const same = state.sort.key === key;
      dir = same ? (state.sort.dir === "asc" ? "desc" : "asc")
        : (key === "name" || key === "owner" || key === "expires" || key === "status" ? "asc" : "desc");
    }
    state.sort = { key, dir };
    const choice = `${key}:${dir}`;
    const known = [...$("sort-by").options].some((o) => o.value === choice);
    $("sort-by").value = known ? choice : "";
    render();
  }

  function render() {
    $("list-title").textContent = listTitle();
    const everyone = state.owner === "";
    $("token-table").classList.toggle("with-owner", everyone);
    for (const th of document.querySelectorAll("#token-table th[aria-sort]")) {
      const key = th.querySelector("button").getAttribute("data-sort");
      const sortedHere = key === state.sort.key;
      th.setAttribute("aria-sort", sortedHere ? (state.sort.dir === "asc" ? "ascending" : "descending") : "none");
    }
    const shown = sorted(state.tokens).filter(matchesFilter);
    $("token-rows").replaceChildren(...shown.map(renderRow));
    const any = state.tokens.length > 0;
    show("token-table", shown.length > 0);
    show("empty", !any);
    show("no-match", any && shown.length === 0);
    $("empty-title").textContent = everyone ? "Nobody has a token yet."
      : listTitle() === "Your tokens" ? "You have no tokens yet." : `${state.owner} has no tokens yet.`;
    $("list-count").textContent = any && shown.length < state.tokens.length
      ? `${shown.length} of ${state.tokens.length} shown` : "";
    $("select-all").checked = false;
    updateSelection();
  }

  function renderRow(token) {
    const active = token.status === "active";
    const expired = token.status === "expired";
    const scopes = el("td", { class: "scopes", "data-label": "Scopes" },
      ...token.scopes.map((s) => el("span", { class: "chip", text: s })));
    const actions = el("td", { class: "row-actions" });
    if (expired) {
      actions.append(el("button", { type: "button", class: "primary", text: "Renew", "data-action": "renew" }));
    } else {
      actions.append(
        el("button", { type: "button", text: "Edit", disabled: !active, "data-action": "edit" }),
        el("button", { type: "button", text: "Regenerate", disabled: !active, "data-action": "regenerate" }),
        el("button", { type: "button", text: "Rotate", disabled: !active || token.canary, "data-action": "rotate",
          title: "A new value; the old one works until the new one is first used" }));
    }
    actions.append(el("button", { type: "button", text: "Copy", "data-action": "copy" }));
    if (token.observe_until) {
      actions.append(el("button", { type: "button", text: "Suggest", "data-action": "suggest" }));
    }
    const name = el("td", { class: token.name ? "name" : "name unnamed", text: token.name || "(no description)" });
    if (token.canary) name.append(el("span", { class: "chip canary", text: "canary" }));
    if (token.project) name.append(el("span", { class: "under", text: `project ${token.project}` }));
    const lastUsed = el("td", { class: "last-used", "data-label": "Last used",
      title: lastIps(token) || (token.last_used_ip ? `from ${token.last_used_ip}, ${token.use_count} uses` : "") });
    if (token.last_used_at) lastUsed.append(timeNode(token.last_used_at));
    else lastUsed.textContent = "Never";
    const row = el("tr", { "data-id": token.id, class: active ? "" : "inactive" },
      el("td", { class: "check" },
        el("input", { type: "checkbox", class: "select", value: token.id,
          "aria-label": `Select ${describeToken(token)}` })),
      name,
      el("td", { class: "owner-col", "data-label": "Owner", text: token.owner }),
      el("td", { class: "mono token-id", "data-label": "ID", text: token.id }),
      scopes,
      expiryCell(token),
      lastUsed,
      el("td", { class: "created", "data-label": "Created" },
        token.created_at ? timeNode(token.created_at) : ""),
      el("td", { class: "status-cell" }, el("span", { class: `status ${token.status}`, text: token.status })),
      actions);
    return row;
  }

  function lastIps(token) {
    const seen = token.last_ips || [];
    if (seen.length === 0) return "";
    const lines = seen.map((s) => `${s.ip}: first ${formatTime(s.first_seen)}, last ${formatTime(s.last_seen)}`);
    return `${token.use_count} uses; recent addresses:\n${lines.join("\n")}`;
  }

  function selectedIds() {
    return [...document.querySelectorAll("#token-rows .select:checked")].map((box) => box.value);
  }

  function updateSelection() {
    const count = selectedIds().length;
    $("remove").disabled = count === 0;
    $("remove").textContent = count > 1 ? `Remove selected (${count})` : "Remove selected";
  }

  function tokenById(id) {
    return state.tokens.find((t) => t.id === id);
  }

  // ---------------------------------------------------------------- password

  function confirmChange(text, action) {
    return new Promise((resolve, reject) => {
      pending = { action, resolve, reject };
      $("confirm-text").textContent = text;
      $("confirm-password").value = "";
      setText("confirm-error", "");
      $("confirm-dialog").showModal();
      $("confirm-password").focus();
    });
  }

  async function confirmSubmit(event) {
    event.preventDefault();
    if (!pending) return;
    const password = $("confirm-password").value;
    if (!password) {
      setText("confirm-error", "Enter your password to confirm.");
      return;
    }
    $("confirm-ok").disabled = true;
    const current = pending;
    try {
      const result = await current.action(password);
      pending = null;
      $("confirm-password").value = "";
      $("confirm-dialog").close();
      current.resolve(result);
    } catch (err) {
      if (err.code === "invalid_credentials") {
        setText("confirm-error", "Wrong password. Try again.");
        $("confirm-password").select();
      } else if (err.code === "too_many_requests") {
        setText("confirm-error", err.message);
      } else if (err.code === "unauthorized" || err.code === "csrf_failed") {
        pending = null;
        sessionEnded();
      } else {
        pending = null;
        $("confirm-password").value = "";
        $("confirm-dialog").close();
        current.reject(err);
      }
    } finally {
      $("confirm-ok").disabled = false;
    }
  }

  function confirmCancel() {
    const current = pending;
    pending = null;
    $("confirm-password").value = "";
    if ($("confirm-dialog").open) $("confirm-dialog").close();
    if (current) current.resolve(null);
  }

  // ---------------------------------------------------------------- the form

  function scopeItems(tokenScopes) {
    const choices = state.choices || { held: ["*"], scope_sets: [], scopes: [] };
    const items = [{ scope: "*", about: "Everything you hold, now and later", grantable: true }];
    for (const set of choices.scope_sets) {
      items.push({ scope: set.name, about: `Scope set: ${set.scopes.join(", ")}`, grantable: set.grantable });
    }
    for (const entry of choices.scopes) {
      items.push({ scope: entry.scope, about: entry.used_by.join("; "), grantable: entry.grantable });
    }
    const known = new Set(items.map((item) => item.scope));
    for (const scope of [...choices.held, ...tokenScopes]) {
      if (!known.has(scope)) {
        known.add(scope);
        items.push({ scope, about: "A scope you hold", grantable: true });
      }
    }
    return items;
  }

  function renderScopes(checked) {
    const wanted = new Set(checked);
    const items = scopeItems(checked).map((item) => {
      const box = el("input", { type: "checkbox", value: item.scope,
        checked: wanted.has(item.scope), disabled: !item.grantable && !wanted.has(item.scope) });
      const about = item.grantable ? item.about : `${item.about} — you do not hold this`;
      return el("li", { class: item.grantable ? "" : "ungrantable", "data-search": `${item.scope} ${about}`.toLowerCase() },
        el("label", {}, box, el("span", { class: "scope-name", text: item.scope }),
          el("span", { class: "scope-about", text: about })));
    });
    $("scope-list").replaceChildren(...items);
    $("scope-search").value = "";
    $("only-checked").checked = false;
    filterScopes();
  }

  function filterScopes() {
    const words = $("scope-search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const onlyChecked = $("only-checked").checked;
    let visible = 0;
    for (const li of $("scope-list").children) {
      const box = li.querySelector("input");
      const text = li.getAttribute("data-search");
      const match = words.every((w) => text.includes(w)) && (!onlyChecked || box.checked);
      li.hidden = !match;
      if (match) visible += 1;
    }
    show("scope-none", visible === 0);
  }

  function checkedScopes() {
    return [...$("scope-list").querySelectorAll("input:checked")].map((box) => box.value);
  }

  function dateIn(days) {
    return dateInputValue(new Date(Date.now() + days * DAY_MS));
  }

  // "(in 30 days)": calendar days from today, whatever the time of day.
  function showDateDistance() {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec($("f-date").value);
    if (!match) {
      $("f-date-in").textContent = "";
      return;
    }
    const today = new Date();
    const days = Math.round((Date.UTC(+match[1], +match[2] - 1, +match[3]) -
      Date.UTC(today.getFullYear(), today.getMonth(), today.getDate())) / DAY_MS);
    $("f-date-in").textContent = `(${RELATIVE.format(days, "day")})`;
  }

  // mode: "create", "edit" (token given) or "renew" (token given: expiry only).
  async function openForm(token, mode) {
    const owner = token ? token.owner : newTokenOwner();
    // Everyone's list: someone else's token offers what its owner may grant.
    if (state.choicesOwner !== owner) await loadChoices(owner);
    state.mode = mode || (token ? "edit" : "create");
    state.editing = token || null;
    state.expiryTouched = false;
    const renew = state.mode === "renew";
    const titles = { create: "Generate a new token", edit: `Edit ${token ? describeToken(token) : ""}`,
      renew: `Renew ${token ? describeToken(token) : ""}` };
    $("token-dialog-title").textContent = titles[state.mode];
    $("token-submit").textContent = { create: "Generate", edit: "Save changes", renew: "Renew" }[state.mode];
    show("name-fields", !renew);
    show("scope-fields", !renew);
    show("renew-about", renew);
    const forOther = state.me && owner !== state.me.login;
    $("form-owner").textContent = forOther ? `For ${owner}.` : "";
    show("form-owner", forOther);
    $("f-name").value = token ? token.name : "";
    $("f-date").min = dateIn(1);
    $("f-date").value = dateIn(DEFAULT_EXPIRY_DAYS);
    $("f-window").value = "30";
    $("f-unit").value = "d";
    // A new token expires in 30 days unless told otherwise; a renewed one
    // too, or keeps its sliding window.
    let model = "hard";
    if (token) {
      if (state.mode === "edit") model = "never";
      if (state.mode === "edit" && token.expiry === "hard" && token.expires_at) {
        model = "hard";
        $("f-date").value = dateInputValue(new Date(token.expires_at));
      } else if (token.expiry === "sliding" && token.sliding_window) {
        model = "sliding";
        const match = /^(\d+)([smhdw])$/.exec(token.sliding_window);
        if (match && "mhd".includes(match[2])) {
          $("f-window").value = match[1];
          $("f-unit").value = match[2];
        }
      }
    }
    document.querySelector(`input[name="expiry"][value="${model}"]`).checked = true;
    showDateDistance();
    renderScopes(token && !renew ? token.scopes : []);
    $("f-canary").checked = false;
    show("canary-field", !token);
    setText("token-error", "");
    $("token-dialog").showModal();
    (renew ? document.querySelector('input[name="expiry"]:checked') : $("f-name")).focus();
  }

  function expiryBody() {
    const model = document.querySelector('input[name="expiry"]:checked').value;
    if (model === "hard") {
      const date = $("f-date").value;
      if (!date) throw new Error("Choose the expiry date.");
      return { expires_at: date };
    }
    if (model === "sliding") {
      const n = parseInt($("f-window").value, 10);
      if (!(n > 0)) throw new Error("Enter how long the token may go unused, e.g. 30 days.");
      return { sliding: `${n}${$("f-unit").value}` };
    }
    return { expires_at: null };
  }

  async function submitForm(event) {
    event.preventDefault();
    setText("token-error", "");
    const token = state.editing;
    let body;
    try {
      if (state.mode === "renew") {
        body = expiryBody();
      } else {
        body = { name: $("f-name").value.trim(), scopes: checkedScopes() };
        if (!token || state.expiryTouched) Object.assign(body, expiryBody());
        if (!token && body.expires_at === null) delete body.expires_at;
        if (!token && $("f-canary").checked) body.canary = true;
      }
    } catch (err) {
      setText("token-error", err.message);
      return;
    }
    try {
      if (state.mode === "renew") {
        const made = await confirmChange(
          `Renew ${describeToken(token)}? It gets a new value; the old one stops working.`,
          (password) => call("POST", `/tokens/${token.id}/renew`, { ...body, password }));
        if (!made) return;
        $("token-dialog").close();
        showValue(made, "Renewed");
      } else if (token) {
        const saved = await confirmChange(`Save the changes to ${describeToken(token)}?`,
          (password) => call("PATCH", `/tokens/${token.id}`, { ...body, password }));
        if (!saved) return;
        $("token-dialog").close();
        notice(`Saved ${describeToken(saved)}.`);
        await refresh();
      } else {
        const owner = newTokenOwner();
        if (owner !== state.me.login) body.owner = owner;
        const label = body.name ? `“${body.name}”` : "a token without a description";
        const whose = body.owner ? ` for ${owner}` : "";
        const created = await confirmChange(`Generate ${label}${whose}?`,
          (password) => call("POST", "/tokens", { ...body, password }));
        if (!created) return;
        $("token-dialog").close();
        showValue(created, "Generated");
      }
    } catch (err) {
      setText("token-error", err.message);
    }
  }

  // ---------------------------------------------------------------- actions

  async function rowAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const token = tokenById(button.closest("tr").getAttribute("data-id"));
    if (!token) return;
    const action = button.getAttribute("data-action");
    if (action === "edit" || action === "renew") {
      await openForm(token, action);
      return;
    }
    if (action === "suggest" || action === "apply-suggestion") {
      await suggestionAction(token, button, action);
      return;
    }
    setText("list-error", "");
    try {
      if (action === "regenerate") {
        const made = await confirmChange(
          `Regenerate ${describeToken(token)}? Its current value stops working at once; you get a new one.`,
          (password) => call("POST", `/tokens/${token.id}/regenerate`, { password }));
        if (made) showValue(made, "Regenerated");
      } else if (action === "rotate") {
        const made = await confirmChange(
          `Rotate ${describeToken(token)}? You get a new value; the current one keeps working until the new one is first used, then stops. Presented after that, it revokes the token.`,
          (password) => call("POST", `/tokens/${token.id}/regenerate`, { activate_on_use: true, password }));
        if (made) showValue(made, "Rotated");
      } else if (action === "copy") {
        const made = await confirmChange(
          `Make a copy of ${describeToken(token)}? The copy has the same settings, a new id and a new value.`,
          (password) => call("POST", `/tokens/${token.id}/copy`, { password }));
        if (made) showValue(made, "Copied");
      }
    } catch (err) {
      setText("list-error", err.message);
    }
  }

  // Observe, then suggest: the least scopes covering what the token did,
  // shown in a row under the token's; Apply narrows it (never widens).
  async function suggestionAction(token, button, action) {
    setText("list-error", "");
    try {
      if (action === "apply-suggestion") {
        const done = await confirmChange(
          `Narrow ${describeToken(token)} to its suggested scopes? It keeps only what it was seen using.`,
          (password) => call("POST", `/tokens/${token.id}/apply-suggestion`, { password }));
        if (done) await refresh();
        return;
      }
      const data = await call("GET", `/tokens/${token.id}/suggestion`);
      const row = button.closest("tr");
      const next = row.nextElementSibling;
      if (next && next.classList.contains("suggestion")) next.remove();
      row.after(renderSuggestion(token, data.suggestion));
    } catch (err) {
      setText("list-error", err.message);
    }
  }

  function renderSuggestion(token, found) {
    const cell = el("td", { colSpan: 10, class: "suggestion-cell" });
    if (found.covers.length === 0) {
      cell.append(el("span", { text: "Nothing observed yet: no suggestion." }));
    } else {
      cell.append(el("strong", { text: "Suggested scopes: " }),
        ...found.covers.map((c) => el("span", {
          class: "chip", text: c.scope,
          title: c.requests.map((r) => `${r.method} ${r.path} (${r.count}x)`).join("\n"),
        })),
        el("button", { type: "button", text: "Apply", "data-action": "apply-suggestion" }));
    }
    return el("tr", { class: "suggestion", "data-id": token.id }, cell);
  }

  async function removeSelected() {
    const ids = selectedIds();
    if (ids.length === 0) return;
    const names = ids.map((id) => describeToken(tokenById(id) || { id })).join(", ");
    const what = ids.length === 1 ? "this token" : `these ${ids.length} tokens`;
    setText("list-error", "");
    try {
      const done = await confirmChange(
        `Remove ${what}: ${names}? Anything using ${ids.length === 1 ? "it" : "them"} stops working at once. This cannot be undone.`,
        (password) => call("POST", "/tokens/remove", { ids, password }));
      if (!done) return;
      notice(`Removed ${done.removed.length === 1 ? "1 token" : `${done.removed.length} tokens`}.`);
      await refresh();
    } catch (err) {
      setText("list-error", err.message);
    }
  }

  // ---------------------------------------------------------------- purge

  function purgeWhose() {
    if (state.owner === "") return "everyone’s";
    if (state.owner === state.me.login) return "your";
    return `${state.owner}’s`;
  }

  function purgeRequest() {
    const days = parseInt($("purge-days").value || "0", 10);
    if (!(days >= 0)) throw new Error("Enter a number of days, 0 for any age.");
    const body = { revoked: $("purge-revoked").checked, expired: $("purge-expired").checked,
      older_than: days > 0 ? `${days}d` : null };
    if (!body.revoked && !body.expired) throw new Error("Choose revoked, expired or both.");
    if (state.owner) body.owner = state.owner;
    return body;
  }

  // What the list shows that the purge would take (the server decides).
  function countPurge() {
    let body;
    try {
      body = purgeRequest();
    } catch (err) {
      $("purge-count").textContent = "";
      return;
    }
    const limit = Date.now() - (body.older_than ? parseInt(body.older_than, 10) * DAY_MS : 0);
    const dead = state.tokens.filter((t) => {
      if (t.status === "revoked" && body.revoked) return new Date(t.updated_at).getTime() <= limit;
      if (t.status === "expired" && body.expired) return new Date(t.expires_at).getTime() <= limit;
      return false;
    }).length;
    $("purge-count").textContent = dead === 1 ? "1 token in the list matches." : `${dead} tokens in the list match.`;
  }

  function openPurge() {
    $("purge-about").textContent = `Removes ${purgeWhose()} revoked and expired tokens for good: ` +
      "they leave the list; the audit log keeps them. Active tokens are never purged.";
    setText("purge-error", "");
    countPurge();
    $("purge-dialog").showModal();
  }

  async function submitPurge(event) {
    event.preventDefault();
    let body;
    try {
      body = purgeRequest();
    } catch (err) {
      setText("purge-error", err.message);
      return;
    }
    try {
      const done = await confirmChange(`Purge ${purgeWhose()} dead tokens? This cannot be undone.`,
        (password) => call("POST", "/tokens/purge", { ...body, password }));
      if (!done) return;
      $("purge-dialog").close();
      const n = done.purged.length;
      notice(`Purged ${n === 1 ? "1 token" : `${n} tokens`}.`);
      await refresh();
    } catch (err) {
      setText("purge-error", err.message);
    }
  }

  async function revokeBefore() {
    setText("list-error", "");
    try {
      const done = await confirmChange(
        "Revoke every token you made until now? Anything using them stops working at once. Use this after a laptop or a secret was stolen.",
        (password) => call("POST", "/tokens/revoke-before", { before: "now", password }));
      if (!done) return;
      notice(`Revoked ${done.count === 1 ? "1 token" : `${done.count} tokens`}.`);
      await refresh();
    } catch (err) {
      setText("list-error", err.message);
    }
  }

  // ---------------------------------------------------------------- the value

  function showValue(record, verb) {
    shownValue = { id: record.id, value: record.token };
    $("token-value").value = record.token;
    $("value-about").textContent = `${verb} ${describeToken(record)}.`;
    $("copy-status").textContent = "";
    $("value-dialog").showModal();
    $("token-value").select();
  }

  async function copyValue() {
    if (!shownValue) return;
    try {
      await navigator.clipboard.writeText(shownValue.value);
    } catch (err) {
      $("token-value").select();
      // Not a secure context (plain http on a non-local host): the old API.
      if (!document.execCommand("copy")) {
        $("copy-status").textContent = "Copying failed: select the value and copy it yourself.";
        return;
      }
    }
    $("copy-status").textContent = "Copied to the clipboard.";
  }

  function downloadValue() {
    if (!shownValue) return;
    const blob = new Blob([shownValue.value + "\n"], { type: "text/plain" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `patgate-token-${shownValue.id}.txt` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    $("copy-status").textContent = "Downloaded.";
  }

  function forgetValue() {
    shownValue = null;
    $("token-value").value = "";
    $("copy-status").textContent = "";
  }

  function closeValue() {
    forgetValue();
    if ($("value-dialog").open) $("value-dialog").close();
  }

  function valueClosed() {
    // Also reached by Escape, which closes the dialog without closeValue().
    forgetValue();
    refresh();
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $("login-form").addEventListener("submit", logIn);
    $("logout").addEventListener("click", logOut);
    $("generate").addEventListener("click", () => openForm(null, "create"));
    $("refresh").addEventListener("click", async () => {
      notice("");
      await Promise.all([loadPeople(), loadChoices(), refresh()]);
    });
    $("owner-picker").addEventListener("change", pickOwner);
    $("token-filter").addEventListener("input", render);
    $("status-filter").addEventListener("change", render);
    $("sort-by").addEventListener("change", () => {
      const [key, dir] = $("sort-by").value.split(":");
      if (key) setSort(key, dir);
    });
    $("token-table").querySelector("thead").addEventListener("click", (event) => {
      const button = event.target.closest("button.sort");
      if (button) setSort(button.getAttribute("data-sort"));
    });
    $("f-date").addEventListener("input", showDateDistance);
    $("remove").addEventListener("click", removeSelected);
    $("purge").addEventListener("click", openPurge);
    $("purge-form").addEventListener("submit", submitPurge);
    $("purge-form").addEventListener("input", countPurge);
    $("purge-cancel").addEventListener("click", () => $("purge-dialog").close());
    $("revoke-before").addEventListener("click", revokeBefore);
    $("token-rows").addEventListener("click", rowAction);
    $("token-rows").addEventListener("change", updateSelection);
    $("select-all").addEventListener("change", () => {
      for (const box of document.querySelectorAll("#token-rows .select")) {
        box.checked = $("select-all").checked;
      }
      updateSelection();
    });
    $("token-form").addEventListener("submit", submitForm);
    $("token-cancel").addEventListener("click", () => $("token-dialog").close());
    $("expiry-fields").addEventListener("change", () => { state.expiryTouched = true; });
    $("expiry-fields").addEventListener("input", () => { state.expiryTouched = true; });
    $("scope-search").addEventListener("input", filterScopes);
    $("only-checked").addEventListener("change", filterScopes);
    $("scope-list").addEventListener("change", filterScopes);
    $("confirm-form").addEventListener("submit", confirmSubmit);
    $("confirm-cancel").addEventListener("click", confirmCancel);
    $("confirm-dialog").addEventListener("cancel", (event) => {
      event.preventDefault();
      confirmCancel();
    });
    $("copy-value").addEventListener("click", copyValue);
    $("download-value").addEventListener("click", downloadValue);
    $("value-done").addEventListener("click", closeValue);
    $("value-dialog").addEventListener("close", valueClosed);
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    start();
  });
})();
