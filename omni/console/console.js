// The omni console: plain JavaScript over omni's public API, nothing else.
//
// Sign-in keeps the agent's API key in sessionStorage (this tab only) and sends it as
// Authorization: Bearer. Live updates come from the Server-Sent Events routes, opened with
// a short-lived token from GET /v1/events/token (EventSource cannot send headers); when a
// stream closes, it is reopened with a fresh token and the last event id, so nothing is
// missed. Everything is drawn with textContent: no customer text is ever parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "omni.key";
  const EVENTS_THAT_CHANGE_CONTEXT = [
    "fact", "cart", "profile", "identity", "conversation", "handoff", "merge", "unmerge",
  ];
  // What identity.js (merge preview, audit trail, undo) hangs on: called with each
  // message row drawn, and with each customer opened or refreshed.
  const hooks = { row: [], customer: [] };
  const state = {
    key: sessionStorage.getItem(KEY),
    me: null,
    cid: null,
    context: null,
    stream: null,
    lastId: null,
    cursor: null,
    rows: new Map(), // message id -> <li>
    messages: new Map(), // message id -> the message, to draw it again
    statuses: new Map(), // a status that arrived before its message
    inbox: null,
    inboxLastId: null,
    refresh: null,
  };

  // -- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Authorization: `Bearer ${state.key}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  async function eventsUrl(path, lastId) {
    const { token } = await api("/v1/events/token");
    const query = new URLSearchParams({ access_token: token });
    if (lastId) query.set("last_event_id", lastId);
    return `${path}?${query}`;
  }

  // -- small DOM helpers ----------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function badge(channel) {
    return el("span", { class: `badge ch-${channel}`, text: channel });
  }

  function money(minor, currency) {
    const amount = (minor || 0) / 100;
    try {
      return amount.toLocaleString(undefined, { style: "currency", currency: currency || "EUR" });
    } catch (_) {
      return `${amount.toFixed(2)} ${currency || ""}`.trim();
    }
  }

  // -- signing in -------------------------------------------------------------------------

  async function signIn(key) {
    state.key = key;
    const who = await api("/v1/events/token");
    state.me = who.name;
    sessionStorage.setItem(KEY, key);
    $("who").textContent = `Signed in as ${who.name} (${who.role})`;
    $("who").hidden = false;
    $("sign-out").hidden = false;
    $("sign-in").hidden = true;
    $("desk").hidden = false;
    $("q").focus();
    openInbox();
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    for (const stream of [state.stream, state.inbox]) if (stream) stream.close();
    location.reload();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await signIn($("key").value.trim());
    } catch (error) {
      state.key = null;
      $("sign-in-error").textContent =
        error.status === 401 ? "That key is not known." :
        error.status === 403 ? "That key cannot use the console: it needs the agent role." :
        `Could not sign in: ${error.message}`;
    }
  });
  $("sign-out").addEventListener("click", signOut);

  // -- finding a customer ---------------------------------------------------------------------

  function customerLabel(found) {
    const profile = found.profile || {};
    const identity = (found.identities || [])[0];
    return profile.name || profile.email || profile.phone ||
      (identity ? `${identity.channel}:${identity.external_id}` : found.id);
  }

  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    const status = $("search-status");
    const list = $("results");
    list.replaceChildren();
    status.textContent = "Searching…";
    try {
      const { customers } = await api(`/v1/customers?q=${encodeURIComponent(q)}`);
      status.textContent = customers.length ?
        `${customers.length} found` : "Nobody found: try a name, an e-mail, +phone or channel:id.";
      for (const found of customers) {
        const profile = found.profile || {};
        const detail = [profile.email, profile.phone, found.last_channel && `last on ${found.last_channel}`]
          .filter(Boolean).join(" · ");
        list.append(el("li", {},
          el("button", { type: "button", "data-customer": found.id, onclick: () => openCustomer(found.id) },
            customerLabel(found), el("span", { class: "sub", text: detail || found.id }))));
      }
    } catch (error) {
      status.textContent = `Search failed: ${error.message}`;
    }
  });

  // -- one customer -----------------------------------------------------------------------------

  async function openCustomer(cid) {
    if (state.stream) state.stream.close();
    Object.assign(state, { cid, stream: null, lastId: null, cursor: null, context: null });
    state.rows.clear();
    state.messages.clear();
    state.statuses.clear();
    $("timeline").replaceChildren();
    for (const button of document.querySelectorAll("[data-customer]")) {
      button.setAttribute("aria-current", button.dataset.customer === cid ? "true" : "false");
    }
    $("placeholder").hidden = true;
    $("opened").hidden = false;
    // The stream opens first and messages are merged by id, so nothing that arrives
    // while the history loads is missed or shown twice.
    openStream();
    try {
      await Promise.all([loadContext(), loadHistory()]);
    } catch (error) {
      if (error.status === 308 && error.problem && error.problem.customer_id) {
        return openCustomer(error.problem.customer_id); // merged into another customer
      }
      $("live-state").textContent = `Could not open the customer: ${error.message}`;
      return;
    }
    $("customer-name").focus();
  }

  async function loadContext() {
    const cid = state.cid;
    const context = await api(`/v1/customers/${cid}/context`);
    if (cid !== state.cid) return;
    const named = !state.context || state.context.customer.profile.name !== context.customer.profile.name;
    state.context = context;
    drawCustomer(context);
    for (const hook of hooks.customer) hook(context);
    if (named) for (const message of state.messages.values()) upsert(message);
  }

  async function loadHistory(before) {
    const cid = state.cid;
    const query = new URLSearchParams({ limit: "50" });
    if (before) query.set("before", before);
    const page = await api(`/v1/customers/${cid}/history?${query}`);
    if (cid !== state.cid) return;
    for (const message of page.messages) upsert(message);
    state.cursor = page.next_cursor;
    $("earlier").hidden = !page.next_cursor;
  }

  $("earlier").addEventListener("click", () => loadHistory(state.cursor));

  function drawCustomer(context) {
    const { customer, conversation, facts, cart } = context;
    const profile = customer.profile || {};
    $("customer-name").textContent = customerLabel(customer);
    $("customer-ids").textContent = [
      customer.id,
      ...customer.identities.map((i) => `${i.channel}:${i.external_id}${i.verified ? " ✓" : ""}`),
    ].join(" · ");
    drawHolder(conversation);
    drawChannels(customer);
    drawFacts(facts);
    drawCart(cart);
    drawProfile(profile, conversation);
  }

  function drawHolder(conversation) {
    const who = conversation.assignee || { kind: "bot" };
    const mine = who.kind === "agent" && who.id === state.me;
    $("holder").textContent =
      who.kind === "bot" ? "The bot answers" :
      who.id ? `Held by ${who.id}${who.reply_due ? ` · reply due ${when(who.reply_due)}` : ""}` :
      "Waiting for an agent";
    const take = $("take");
    take.textContent = mine ? "Hand back to the bot" : "Take over";
    take.dataset.to = mine ? "bot" : "agent";
  }

  function drawChannels(customer) {
    const select = $("channel");
    const current = customer.last_channel;
    const channels = [...new Set(customer.identities.map((i) => i.channel))];
    select.replaceChildren(el("option", {
      value: "", text: current ? `current channel (${current})` : "current channel",
    }));
    for (const channel of channels) select.append(el("option", { value: channel, text: channel }));
  }

  function drawFacts(facts) {
    const list = $("facts");
    list.replaceChildren();
    const names = Object.keys(facts || {});
    if (!names.length) list.append(el("dt", { text: "—" }), el("dd", { text: "nothing yet" }));
    for (const name of names.sort()) {
      const fact = facts[name];
      const value = typeof fact.value === "string" ? fact.value : JSON.stringify(fact.value);
      const source = fact.source && fact.source.channel ? ` (${fact.source.channel})` : "";
      list.append(el("dt", { text: name }), el("dd", { text: `${value}${source}` }));
    }
  }

  function drawCart(cart) {
    const box = $("cart");
    box.replaceChildren();
    if (!cart || !cart.items.length) {
      box.append(el("p", { class: "help", text: `Empty · stage ${cart ? cart.stage : "browsing"}` }));
      return;
    }
    const rows = cart.items.map((item) => el("tr", {},
      el("td", { text: item.name || item.sku }),
      el("td", { class: "num", text: String(item.quantity) }),
      el("td", { class: "num", text: money(item.unit_price * item.quantity, item.currency) })));
    box.append(
      el("table", { class: "cart-table" },
        el("caption", { class: "help", text: `Stage: ${cart.stage}${cart.order_id ? ` · order ${cart.order_id}` : ""}` }),
        el("thead", {}, el("tr", {},
          el("th", { scope: "col", text: "Item" }),
          el("th", { scope: "col", class: "num", text: "Qty" }),
          el("th", { scope: "col", class: "num", text: "Total" }))),
        el("tbody", {}, ...rows)),
      el("p", { text: `Subtotal ${money(cart.totals.subtotal, cart.currency)}` }));
  }

  function drawProfile(profile, conversation) {
    const list = $("profile");
    list.replaceChildren();
    const rows = [
      ["Name", profile.name],
      ["E-mail", profile.email && `${profile.email}${profile.email_verified ? " ✓" : ""}`],
      ["Phone", profile.phone && `${profile.phone}${profile.phone_verified ? " ✓" : ""}`],
      ["Locale", profile.locale],
      ["Conversation", `${conversation.status}${conversation.channels.length ? ` · ${conversation.channels.join(", ")}` : ""}`],
    ];
    for (const [name, value] of rows) {
      if (value) list.append(el("dt", { text: name }), el("dd", { text: value }));
    }
  }

  // -- the timeline -------------------------------------------------------------------------------

  function statusNode(status) {
    if (!status) return null;
    const text = status.reason ? `${status.state}: ${status.reason}` : status.state;
    return el("span", { class: `status ${status.state}`, "data-status": status.state, text });
  }

  function attachmentNode(attachment) {
    const url = attachment.url;
    if (attachment.type === "image" && url && /^(https:|data:image\/)/.test(url)) {
      return el("img", { src: url, alt: attachment.name || "image from the customer", loading: "lazy" });
    }
    if (attachment.type === "location" && attachment.latitude !== undefined) {
      return el("span", { class: "attachment", text: `📍 ${attachment.latitude}, ${attachment.longitude}` });
    }
    if (attachment.product) {
      return el("span", { class: "attachment", text: `🛍 ${attachment.product.name || attachment.product.id}` });
    }
    const label = `${attachment.type}${attachment.name ? `: ${attachment.name}` : ""}`;
    if (url && /^https?:/.test(url)) {
      return el("a", { class: "attachment", href: url, rel: "noopener noreferrer", target: "_blank", text: label });
    }
    return el("span", { class: "attachment", text: label });
  }

  function messageNode(message) {
    const kind = message.channel === "system" || message.author.kind === "system" ? "system" : message.direction;
    const customerName = message.author.kind === "customer" && state.context ?
      state.context.customer.profile.name : null;
    const author = message.author.name || customerName || message.author.id || message.author.kind;
    const row = el("li", {
      class: `msg ${kind}${message.deleted_at ? " deleted" : ""}`,
      "data-id": message.id,
      "data-channel": message.channel,
    });
    row.append(el("div", { class: "meta" },
      badge(message.channel),
      el("span", { class: "author", text: `${author} (${message.author.kind})` }),
      el("time", { datetime: message.received_at, text: when(message.received_at) }),
      statusNode(state.statuses.get(message.id) || message.status)));
    if (message.voice) {
      const voice = message.voice;
      if (voice.transcript) {
        const confidence = voice.confidence !== undefined ? ` (${Math.round(voice.confidence * 100)}%)` : "";
        row.append(el("p", { class: "transcript" }, el("b", { text: "Transcript: " }), `“${voice.transcript}”${confidence}`));
      }
      if (voice.digits) row.append(el("p", { class: "transcript", text: `Keyed: ${voice.digits}` }));
    }
    if (message.text && !(message.voice && message.voice.transcript === message.text)) {
      row.append(el("p", { class: "text", text: message.text }));
    }
    const picked = message.quick_reply || message.postback;
    if (picked) row.append(el("p", { class: "text", text: `▸ ${picked.title || picked.payload}` }));
    for (const attachment of message.attachments || []) row.append(attachmentNode(attachment));
    if (message.reaction) row.append(el("span", { class: "attachment", text: `Reaction: ${message.reaction}` }));
    for (const hook of hooks.row) hook(message, row);
    return row;
  }

  function upsert(message) {
    if (message.customer_id && message.customer_id !== state.cid) return;
    state.messages.set(message.id, message);
    const node = messageNode(message);
    const old = state.rows.get(message.id);
    state.rows.set(message.id, node);
    if (old) {
      old.replaceWith(node);
      return;
    }
    // In time order, whatever order the history and the stream deliver them in.
    const timeline = $("timeline");
    const key = `${message.received_at}|${message.id}`;
    const after = [...timeline.children].find((row) => {
      const time = row.querySelector("time");
      return `${time ? time.getAttribute("datetime") : ""}|${row.dataset.id}` > key;
    });
    timeline.insertBefore(node, after || null);
    if (!after) node.scrollIntoView({ block: "nearest" });
  }

  function setStatus(update) {
    state.statuses.set(update.id, update);
    const row = state.rows.get(update.id);
    if (!row) return;
    const meta = row.querySelector(".meta");
    const old = meta.querySelector(".status");
    const fresh = statusNode(update);
    if (old) old.replaceWith(fresh);
    else meta.append(fresh);
  }

  // -- live -------------------------------------------------------------------------------------

  async function openStream() {
    const cid = state.cid;
    let url;
    try {
      url = await eventsUrl(`/v1/customers/${cid}/events`, state.lastId);
    } catch (error) {
      $("live-state").textContent = `Live updates unavailable: ${error.message}`;
      return;
    }
    if (cid !== state.cid) return;
    const stream = new EventSource(url);
    state.stream = stream;
    const seen = (event) => { if (event.lastEventId) state.lastId = event.lastEventId; };
    stream.onopen = () => { $("live-state").textContent = "Live: new messages appear as they arrive."; };
    stream.addEventListener("message", (event) => {
      seen(event);
      upsert(JSON.parse(event.data).data);
    });
    stream.addEventListener("message.status", (event) => {
      seen(event);
      setStatus(JSON.parse(event.data).data);
    });
    for (const type of EVENTS_THAT_CHANGE_CONTEXT) {
      stream.addEventListener(type, (event) => {
        seen(event);
        // An undone merge takes messages away from this timeline: draw it afresh.
        if (type === "unmerge") openCustomer(state.cid);
        else scheduleRefresh(type === "cart" || type === "merge");
      });
    }
    stream.addEventListener("reset", () => scheduleRefresh(true));
    stream.onerror = () => {
      if (stream.readyState !== EventSource.CLOSED || state.stream !== stream) {
        $("live-state").textContent = "Reconnecting…";
        return;
      }
      // Closed for good (e.g. its token expired): reopen after the last event seen.
      $("live-state").textContent = "Reconnecting…";
      setTimeout(() => { if (state.stream === stream) openStream(); }, 2000);
    };
  }

  function scheduleRefresh(history) {
    clearTimeout(state.refresh);
    state.refresh = setTimeout(async () => {
      try {
        await loadContext();
        if (history) await loadHistory();
      } catch (error) {
        if (error.status === 308 && error.problem && error.problem.customer_id) {
          openCustomer(error.problem.customer_id); // merged into another: follow it
        }
        // Anything else: the next event or a reload tries again.
      }
    }, 150);
  }

  async function openInbox() {
    // Who waits now (GET /v1/conversations), oldest on top; events then keep it live.
    try {
      const { conversations } = await api("/v1/conversations?status=waiting&limit=20");
      for (const c of conversations.reverse()) {
        const said = c.last_message ? c.last_message.text || "…" : "…";
        noteInbox(c.customer.id, c.customer.name || c.customer.id,
          `waiting since ${when(c.waiting_since)} · ${c.channel || "?"}: ${said}`, true);
      }
    } catch (_) {
      // The events below still fill it.
    }
    let url;
    try {
      url = await eventsUrl("/v1/events", state.inboxLastId);
    } catch (_) {
      return;
    }
    const stream = new EventSource(url);
    state.inbox = stream;
    stream.addEventListener("message", (event) => {
      if (event.lastEventId) state.inboxLastId = event.lastEventId;
      const { customer_id: cid, data } = JSON.parse(event.data);
      if (data.direction === "inbound") noteInbox(cid, data.author.name || data.author.id || cid, `${data.channel}: ${data.text || (data.voice && data.voice.transcript) || "…"}`);
    });
    stream.addEventListener("handoff", (event) => {
      if (event.lastEventId) state.inboxLastId = event.lastEventId;
      const { customer_id: cid, data } = JSON.parse(event.data);
      if (data.to === "queue") noteInbox(cid, cid, "waiting for an agent", true);
    });
    stream.onerror = () => {
      if (stream.readyState === EventSource.CLOSED) setTimeout(openInbox, 2000);
    };
  }

  function noteInbox(cid, who, what, waiting = false) {
    const list = $("inbox");
    const old = list.querySelector(`[data-customer="${CSS.escape(cid)}"]`);
    if (old) old.closest("li").remove();
    list.prepend(el("li", {},
      el("button", { type: "button", "data-customer": cid, onclick: () => openCustomer(cid) },
        who, el("span", { class: waiting ? "sub waiting" : "sub", text: what }))));
    while (list.children.length > 20) list.lastChild.remove();
  }

  // -- acting ------------------------------------------------------------------------------------

  $("take").addEventListener("click", async () => {
    const button = $("take");
    button.disabled = true;
    try {
      const to = button.dataset.to;
      const conversation = await api(`/v1/customers/${state.cid}/handoff`, {
        method: "POST", body: to === "agent" ? { to, agent_id: state.me } : { to },
      });
      drawHolder(conversation);
    } catch (error) {
      $("holder").textContent = `Could not hand over: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });

  $("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("reply");
    const text = box.value.trim();
    if (!text) return;
    const error = $("reply-error");
    error.textContent = "";
    const body = { text, client_message_id: crypto.randomUUID() };
    if ($("channel").value) body.channel = $("channel").value;
    try {
      const message = await api(`/v1/customers/${state.cid}/messages`, { method: "POST", body });
      upsert(message);
      box.value = "";
      box.focus();
    } catch (failure) {
      error.textContent = `Not sent: ${failure.message}`;
    }
  });

  // The customer's chat shows "typing" while the agent writes (POST …/typing, live only).
  let typingFor = null;
  let typingIdle = 0;
  function typing(what) {
    clearTimeout(typingIdle);
    const tell = (cid, value) =>
      api(`/v1/customers/${cid}/typing`, { method: "POST", body: { state: value } }).catch(() => {});
    if (typingFor && (what === "stop" || typingFor !== state.cid)) {
      tell(typingFor, "stop");
      typingFor = null;
    }
    if (what === "start" && state.cid) {
      if (typingFor !== state.cid) tell(state.cid, "start");
      typingFor = state.cid;
      typingIdle = setTimeout(() => typing("stop"), 4000);
    }
  }
  $("reply").addEventListener("input", () => typing($("reply").value.trim() ? "start" : "stop"));
  $("reply-form").addEventListener("submit", () => typing("stop"));

  $("reply").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("reply-form").requestSubmit();
    }
  });

  // The pieces identity.js builds on (it loads after this script).
  window.omniConsole = { api, el, when, state, hooks, openCustomer, ApiError,
    refresh: () => scheduleRefresh(true) };

  // -- start ---------------------------------------------------------------------------------------

  if (state.key) {
    signIn(state.key).catch(() => {
      sessionStorage.removeItem(KEY);
      state.key = null;
    });
  }
})();
