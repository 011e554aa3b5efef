/* omni chat widget: one tag on the brand's page,
 *   <script src="https://omni.example.com/widget.js" async></script>
 * finds omni's origin from its own src and speaks the web channel's routes there
 * (POST /channels/web/sessions, /messages, /link; GET /messages; the /ws socket).
 * No build step, no framework, no global but `window.omni`; it lives in a Shadow DOM.
 * Everything anyone writes is put on the page as text (Text nodes), never as HTML.
 * Options: data-omni-* attributes or omni.configure() (README "Chat widget"). */
(() => {
  "use strict";
  const queued = window.omni;
  if (queued && queued.version) return; // loaded twice on one page
  const tag = document.currentScript || document.querySelector('script[src*="/widget.js"]');
  if (!tag) return;
  const BASE = new URL(tag.src, location.href).origin;
  const API = BASE + "/channels/web";
  const KEY = "omni:" + BASE;
  const TEXT_MAX = 4096; // omni.model.TEXT_MAX: the documented limit of a message
  const PAGE = 50;
  const RENEW_MS = 7 * 86400e3; // renew a session token that has less than this left
  const say = (level, text) => console[level]("omni widget: " + text);

  const S = {
    title: "Chat with us",
    greeting: "Hi! How can we help?",
    open: "Open chat",
    unread: "{n} unread",
    close: "Close chat",
    messages: "Messages",
    input: "Write a message",
    send: "Send",
    you: "You",
    team: "Team",
    bot: "Assistant",
    typing: "{who} is typing…",
    sending: "Sending…",
    waiting: "Waiting for the connection…",
    sent: "Sent",
    delivered: "Delivered",
    failed: "Not sent: {why}",
    offline: "You are offline. What you write is sent when the connection is back.",
    tooLong: "A message can be at most {max} characters; this one has {n}.",
    quick: "Suggested replies",
    via: "on {channel}",
    attachment: "Attachment",
    image: "Image",
  };
  const config = { color: "#4338ca", position: "right", lang: "", user: "", hash: "", traits: null };
  const fmt = (text, values) => text.replace(/\{(\w+)\}/g, (m, k) => (k in values ? values[k] : m));

  // -- the session, kept on the host page's origin across reloads and tabs --------------

  const load = () => {
    try {
      return JSON.parse(localStorage.getItem(KEY) || "{}") || {};
    } catch (e) {
      return {};
    }
  };
  let store = load();
  let outbox = Array.isArray(store.pending) ? store.pending : [];
  const save = () => {
    if (!store.token) return; // nothing is kept for a page omni has not let in
    store.pending = outbox;
    try {
      localStorage.setItem(KEY, JSON.stringify(store));
    } catch (e) {
      /* private mode: the session lasts as long as the page */
    }
  };
  const adopt = (view) => {
    store = Object.assign({}, store, {
      token: view.token,
      visitor: view.visitor_id,
      user: view.user_id || "",
      expires: view.expires_at,
    });
    save();
  };

  class Offline extends Error {}

  async function call(method, path, body, auth = true) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && store.token) headers.Authorization = "Bearer " + store.token;
    let response;
    try {
      response = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      throw new Offline(String(error));
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.detail || data.title || "HTTP " + response.status);
      error.status = response.status;
      error.field = data.field;
      throw error;
    }
    return data;
  }

  // A refused Origin and an unreachable omni both fail fetch() the same way; a no-cors
  // request (no CORS needed) tells them apart.
  const reachable = () =>
    fetch(BASE + "/healthz", { mode: "no-cors", cache: "no-store" }).then(() => true, () => false);

  async function session() {
    const left = store.token ? Date.parse(store.expires) - Date.now() : 0;
    if (left > RENEW_MS) return;
    if (left > 0) {
      try {
        return adopt(await call("POST", "/sessions", { type: "renew" }));
      } catch (error) {
        if (error instanceof Offline) throw error;
      }
    }
    store = {};
    adopt(await call("POST", "/sessions", {}, false));
  }

  async function upgrade() {
    const body = { type: "identify", identifier: config.user, identifier_hash: config.hash };
    if (config.traits) body.traits = config.traits;
    let view;
    try {
      view = await call("POST", "/sessions", Object.assign({ anonymous_id: store.visitor }, body));
    } catch (error) {
      if (error.status !== 401 || error.field === "identifier_hash") throw error;
      view = await call("POST", "/sessions", body, false); // our token lapsed: log in afresh
    }
    adopt(view);
  }

  async function takeLink() {
    const url = new URL(location.href);
    const token = url.searchParams.get("omni_link");
    if (!token) return;
    try {
      await call("POST", "/link", { token });
    } catch (error) {
      if (error instanceof Offline) throw error;
      say("warn", "the link in this page's address was not accepted: " + error.message);
    }
    url.searchParams.delete("omni_link");
    history.replaceState(history.state, "", url.toString());
  }

  // -- the conversation ------------------------------------------------------------------

  let byId = new Map();
  let byClient = new Map();
  let entries = [];
  let lastId = null;
  let unread = 0;
  let online = true;
  let dead = false;
  let booted = false;
  let isOpen = false;
  let ready;
  let resolveReady;
  ready = new Promise((resolve) => (resolveReady = resolve));

  function receive(view, quiet) {
    if (!view || typeof view.id !== "string") return;
    lastId = view.id;
    if (byId.has(view.id)) return;
    const mine = view.from === "customer";
    let entry = mine && view.client_msg_id ? byClient.get(view.client_msg_id) : null;
    if (entry) {
      entry.id = view.id;
      byId.set(view.id, entry);
      if (entry.state === "sending" || entry.state === "waiting") state(entry, "sent");
      settle(view.client_msg_id);
      return;
    }
    entry = { id: view.id, client: view.client_msg_id, mine, view };
    byId.set(view.id, entry);
    if (entry.client) byClient.set(entry.client, entry);
    draw(entry);
    if (mine) {
      state(entry, "sent");
      settle(entry.client);
    } else {
      typing(false, view.from);
      delivered();
      if (!quiet) {
        if (isOpen && document.visibilityState === "visible") markRead();
        else badge(unread + 1);
      }
    }
    quickReplies();
  }

  // A reply or a typing answer shows the team has what the visitor sent before it.
  function delivered() {
    entries.forEach((e) => e.mine && e.state === "sent" && state(e, "delivered"));
  }

  function settle(clientId) {
    const before = outbox.length;
    outbox = outbox.filter((item) => item.client_msg_id !== clientId);
    if (outbox.length !== before) save();
  }

  function newId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return "w-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function submit(text, quickReply) {
    const length = Array.from(text).length;
    if (length > TEXT_MAX) {
      problem(fmt(S.tooLong, { max: TEXT_MAX, n: length }));
      return false;
    }
    if (!text.trim() && !quickReply) return false;
    const item = { client_msg_id: newId(), text };
    if (quickReply) item.quick_reply = quickReply;
    outbox.push(item);
    save();
    const entry = { client: item.client_msg_id, mine: true, view: { from: "customer", text } };
    byClient.set(entry.client, entry);
    draw(entry);
    state(entry, online ? "sending" : "waiting");
    quickReplies();
    typingStop();
    flush();
    return true;
  }

  let flushing = false;
  async function flush() {
    if (flushing || dead || !store.token) return;
    flushing = true;
    let restarted = false;
    try {
      while (outbox.length) {
        const item = outbox[0];
        const entry = byClient.get(item.client_msg_id);
        try {
          const ack = await call("POST", "/messages", item);
          if (entry && !entry.id) {
            entry.id = ack.id;
            byId.set(ack.id, entry);
          }
          if (entry && entry.state !== "delivered") state(entry, "sent");
          if (wsOpen) offline(false);
        } catch (error) {
          if (error instanceof Offline || error.status >= 500 || error.status === 429) {
            outbox.forEach((i) => byClient.has(i.client_msg_id) && state(byClient.get(i.client_msg_id), "waiting"));
            if (error instanceof Offline) offline(true);
            later(flush);
            return;
          }
          if (error.status === 401 && !restarted) {
            restarted = true;
            try {
              await restart();
            } catch (e) {
              later(flush);
              return;
            }
            continue;
          }
          if (entry) state(entry, "failed", error.message); // refused for good: say why
        }
        settle(item.client_msg_id);
      }
    } finally {
      flushing = false;
    }
  }

  // The session's customer changed (login, link, another tab) or the page loaded: show
  // the session's history afresh, then go live from its last message.
  async function refresh() {
    const page = await call("GET", "/messages?limit=" + PAGE);
    byId = new Map();
    byClient = new Map();
    entries = [];
    list.replaceChildren();
    lastId = null;
    page.messages.forEach((view) => receive(view, true));
    lastId = page.next_after || lastId;
    drawPending();
    const seen = store.readUpTo || "";
    badge(isOpen ? 0 : entries.filter((e) => !e.mine && e.id && e.id > seen).length);
    if (isOpen) markRead();
    quickReplies();
    reconnect();
  }

  // What the visitor wrote that omni has not acknowledged yet (kept across reloads).
  function drawPending() {
    outbox.forEach((item) => {
      if (byClient.has(item.client_msg_id)) return;
      const entry = { client: item.client_msg_id, mine: true, view: { from: "customer", text: item.text } };
      byClient.set(entry.client, entry);
      draw(entry);
      state(entry, online ? "sending" : "waiting");
    });
  }

  async function restart() {
    store = {};
    if (config.user && config.hash) await upgrade();
    else await session();
    await refresh();
  }

  // -- the live socket ------------------------------------------------------------------

  let ws = null;
  let wsOpen = false;
  let backoff = 400;
  const timers = new Map();

  // Retry `fn` after a growing pause (one pending retry per function).
  function later(fn) {
    clearTimeout(timers.get(fn));
    timers.set(fn, setTimeout(fn, backoff));
    backoff = Math.min(backoff * 2, 4000);
  }

  function frame(data) {
    if (ws && wsOpen) ws.send(JSON.stringify(data));
  }

  function reconnect() {
    const old = ws;
    ws = null;
    wsOpen = false;
    if (old) old.close(1000);
    connect();
  }

  function connect() {
    if (dead || ws || !store.token) return;
    clearTimeout(timers.get(connect));
    const url = BASE.replace(/^http/, "ws") + "/channels/web/ws?token=" + encodeURIComponent(store.token);
    const socket = new WebSocket(url);
    let opened = false;
    ws = socket;
    socket.onopen = () => {
      opened = true;
      wsOpen = true;
      backoff = 400;
      const hello = { type: "hello" };
      if (lastId) hello.resume_after = lastId;
      socket.send(JSON.stringify(hello));
      offline(false);
      flush();
    };
    socket.onmessage = (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (data.type === "message") receive(data, false);
      else if (data.type === "typing") typing(data.state === "start", data.from);
      else if (data.type === "error") say("warn", data.detail || data.title);
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      ws = null;
      wsOpen = false;
      if (dead) return;
      if (event.code === 4401) {
        restart().catch(() => later(connect));
        return;
      }
      if (!opened) offline(true); // could not reach omni: say so until it is back
      later(connect);
    };
  }

  // -- the page: a launcher and a panel in a Shadow DOM -----------------------------------

  let host, root, box, launcher, count, panel, heading, closer, banner, scroller, greeting;
  let list, quick, typer, form, input, sender, error;

  function h(name, attrs, ...children) {
    const el = document.createElement(name);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
    }
    el.append(...children); // strings become Text nodes: never parsed as HTML
    return el;
  }

  function icon(d) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
    return svg;
  }

  const CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z";
  const SEND = "M3 20.5 21.5 12 3 3.5v6.6L15 12 3 13.9z";
  const CLOSE = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4z";
  const FILE = "M6 2h8l6 6v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zm7 1.5V9h5.5z";

  const STYLE = `
:host{all:initial}
*{box-sizing:border-box}
.root{--accent:#4338ca;--ink:#fff;--accent-text:#4338ca;position:fixed;bottom:20px;right:20px;z-index:2147483000;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;text-align:left}
.root.left{right:auto;left:20px}
[hidden]{display:none!important}
.launcher{all:unset;box-sizing:border-box;position:relative;width:60px;height:60px;border-radius:50%;cursor:pointer;
background:var(--accent);color:var(--ink);display:grid;place-items:center;box-shadow:0 6px 20px rgba(0,0,0,.22);transition:transform .15s}
.launcher:hover{transform:scale(1.06)}
.launcher svg{width:28px;height:28px;fill:currentColor}
.count{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#c4161c;
color:#fff;font:700 12px/22px system-ui,sans-serif;text-align:center;border:2px solid #fff}
:focus-visible{outline:3px solid #0969da;outline-offset:2px}
.panel{width:min(380px,calc(100vw - 24px));height:min(600px,calc(100vh - 40px));background:#fff;border-radius:18px;
box-shadow:0 12px 48px rgba(0,0,0,.25);display:flex;flex-direction:column;overflow:hidden}
header{background:var(--accent);color:var(--ink);padding:16px 14px 16px 20px;display:flex;align-items:center;gap:8px}
h2{margin:0;flex:1;font-size:17px;font-weight:650;line-height:1.3}
.close{all:unset;width:36px;height:36px;border-radius:50%;display:grid;place-items:center;cursor:pointer;color:var(--ink)}
.close:hover{background:rgba(255,255,255,.18)}
.close svg{width:22px;height:22px;fill:currentColor}
.banner{margin:0;padding:8px 16px;background:#fff4d6;color:#5c3b00;font-size:13px;border-bottom:1px solid #f0d9a0}
.log{flex:1;overflow-y:auto;padding:16px 14px 12px;background:#f7f8fa}
.greeting{margin:0 0 12px;padding:10px 14px;background:#fff;border:1px solid #e3e6ea;border-radius:14px;max-width:85%}
ol{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:10px}
li{display:flex;flex-direction:column;align-items:flex-start;max-width:85%}
li.mine{align-self:flex-end;align-items:flex-end}
.who{font-size:12px;color:#57606a;margin:0 0 2px 4px}
.bubble{padding:9px 13px;border-radius:16px 16px 16px 4px;background:#fff;border:1px solid #e3e6ea;overflow-wrap:anywhere}
li.mine .bubble{background:var(--accent);color:var(--ink);border-color:transparent;border-radius:16px 16px 4px 16px}
.text{margin:0;white-space:pre-wrap}
.bubble img{display:block;max-width:100%;max-height:220px;border-radius:10px;margin-top:6px}
.file{display:flex;align-items:center;gap:6px;margin-top:6px;color:inherit;font-weight:600;text-decoration:underline}
.file svg{width:18px;height:18px;fill:currentColor;flex:none}
.meta{margin:2px 4px 0;font-size:12px;color:#57606a}
li.failed .meta{color:#b3261e}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.quick{display:flex;flex-wrap:wrap;gap:6px;padding:8px 14px 4px;background:#f7f8fa;justify-content:flex-end}
.chip{all:unset;cursor:pointer;padding:6px 12px;border-radius:16px;border:1.5px solid var(--accent-text);color:var(--accent-text);
background:#fff;font-size:14px;font-weight:600}
.chip:hover{background:#eef0ff}
.typing{margin:0;padding:4px 18px 6px;font-size:13px;color:#57606a;background:#f7f8fa;min-height:0}
form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;border-top:1px solid #e3e6ea;background:#fff}
textarea{all:unset;box-sizing:border-box;flex:1;min-height:40px;max-height:120px;overflow-y:auto;white-space:pre-wrap;
overflow-wrap:anywhere;padding:9px 14px;border:1px solid #c9d1d9;border-radius:20px;font:inherit;color:#1f2328;background:#fff}
textarea:focus-visible{outline:2px solid var(--accent-text);outline-offset:0;border-color:transparent}
textarea::placeholder{color:#6a737d}
.send{all:unset;width:40px;height:40px;border-radius:50%;background:var(--accent);color:var(--ink);display:grid;place-items:center;cursor:pointer;flex:none}
.send svg{width:20px;height:20px;fill:currentColor}
.error{margin:0;padding:0 14px 10px;font-size:13px;color:#b3261e;background:#fff}
@media (max-width:480px){.root.is-open{inset:0}.root.is-open .panel{width:100vw;height:100vh;border-radius:0}}
@media (prefers-reduced-motion:reduce){.launcher{transition:none}}`;

  function mount() {
    if (host) return;
    host = h("div", { "data-omni": "chat", "data-status": "connecting" });
    root = host.attachShadow({ mode: "open" });
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLE); // a constructed sheet also works under a strict style-src
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      root.append(h("style", {}, STYLE));
    }
    count = h("span", { class: "count", "aria-hidden": "true", hidden: true });
    launcher = h("button", { type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": "omni-panel", onclick: open }, icon(CHAT), count);
    heading = h("h2", { id: "omni-title" });
    closer = h("button", { type: "button", class: "close", onclick: () => close(true) }, icon(CLOSE));
    banner = h("p", { class: "banner", role: "status", hidden: true });
    greeting = h("p", { class: "greeting" });
    list = h("ol", {});
    scroller = h("div", { class: "log", role: "log", "aria-live": "polite", tabindex: "0" }, greeting, list);
    quick = h("div", { class: "quick", role: "group", hidden: true });
    typer = h("p", { class: "typing", role: "status" });
    input = h("textarea", { rows: "1", name: "message", oninput: typed, onkeydown: enter });
    sender = h("button", { type: "submit", class: "send" }, icon(SEND));
    form = h("form", { onsubmit: sent }, input, sender);
    error = h("p", { class: "error", role: "alert" });
    panel = h("section", { class: "panel", id: "omni-panel", role: "dialog", "aria-modal": "true", "aria-labelledby": "omni-title", hidden: true, onkeydown: trap },
      h("header", {}, heading, closer), banner, scroller, quick, typer, form, error);
    box = h("div", { class: "root" }, launcher, panel);
    root.append(box);
    document.body.append(host);
    apply();
    badge(unread);
    if (isOpen) open(); // omni.open() was called before the widget was ready
  }

  // Colour, position and words, from data-omni-* and omni.configure().
  function apply() {
    if (!host) return;
    box.classList.toggle("left", config.position === "left");
    box.style.setProperty("--accent", config.color);
    const rgb = colour(config.color);
    const white = contrast(rgb, [255, 255, 255]);
    box.style.setProperty("--ink", white >= contrast(rgb, [17, 17, 17]) ? "#fff" : "#111");
    box.style.setProperty("--accent-text", white >= 4.5 ? config.color : "#1f2328");
    if (config.lang) panel.setAttribute("lang", config.lang);
    heading.textContent = S.title;
    greeting.textContent = S.greeting;
    greeting.hidden = !S.greeting;
    closer.setAttribute("aria-label", S.close);
    scroller.setAttribute("aria-label", S.messages);
    quick.setAttribute("aria-label", S.quick);
    input.setAttribute("aria-label", S.input);
    input.setAttribute("placeholder", S.input);
    sender.setAttribute("aria-label", S.send);
    banner.textContent = S.offline;
    badge(unread);
  }

  function colour(value) {
    const probe = h("span", {});
    probe.style.color = value;
    root.append(probe);
    const parts = getComputedStyle(probe).color.match(/[\d.]+/g) || [67, 56, 202];
    probe.remove();
    return parts.slice(0, 3).map(Number);
  }
  function luminance(rgb) {
    const [r, g, b] = rgb.map((c) => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function contrast(a, b) {
    const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  }

  function safeUrl(url, image) {
    if (typeof url !== "string") return null;
    if (/^https?:\/\//i.test(url)) return url;
    if (image && /^data:image\/(png|jpe?g|gif|webp);base64,/i.test(url)) return url;
    return null; // javascript:, other data: and the rest are never linked
  }

  function fileName(url) {
    try {
      return decodeURIComponent(new URL(url).pathname.split("/").pop() || "");
    } catch (e) {
      return "";
    }
  }

  function attachment(a) {
    const url = safeUrl(a.url, a.type === "image");
    if (a.type === "image" && url) return h("img", { src: url, alt: a.name || S.image, loading: "lazy" });
    const label = a.name || (a.product && a.product.name) || (url && !url.startsWith("data:") ? fileName(url) : "") || S.attachment;
    if (url && !url.startsWith("data:")) {
      return h("a", { class: "file", href: url, target: "_blank", rel: "noopener noreferrer" }, icon(FILE), label);
    }
    if (typeof a.latitude === "number") return h("p", { class: "file" }, a.latitude + ", " + a.longitude);
    return h("p", { class: "file" }, label);
  }

  function draw(entry) {
    const view = entry.view;
    const who = entry.mine ? S.you : view.name || (view.from === "bot" ? S.bot : S.team);
    const bubble = h("div", { class: "bubble" });
    const text = view.text != null ? view.text : view.quick_reply ? view.quick_reply.title || view.quick_reply.payload : null;
    if (text != null) bubble.append(h("p", { class: "text" }, text));
    (view.attachments || []).forEach((a) => bubble.append(attachment(a)));
    entry.meta = h("p", { class: "meta" }, view.channel ? fmt(S.via, { channel: view.channel }) : "");
    entry.el = h("li", { class: entry.mine ? "mine" : "theirs" }, h("p", { class: entry.mine ? "sr" : "who" }, who), bubble, entry.meta);
    entries.push(entry);
    const near = atBottom();
    list.append(entry.el);
    if (near || entry.mine) scroller.scrollTop = scroller.scrollHeight;
  }

  // Whatever grows at the bottom (a status, the typing line, the text box) keeps a reader
  // who was at the latest message there.
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  function stick(change) {
    const near = scroller && atBottom();
    change();
    if (near) scroller.scrollTop = scroller.scrollHeight;
  }

  function state(entry, name, why) {
    entry.state = name;
    if (!entry.meta) return;
    stick(() => {
      entry.el.classList.toggle("failed", name === "failed");
      entry.el.setAttribute("data-state", name);
      entry.meta.textContent = name === "failed" ? fmt(S.failed, { why: why || "" }) : S[name];
    });
  }

  function quickReplies() {
    if (quick) stick(chips);
  }
  function chips() {
    quick.replaceChildren();
    const last = entries[entries.length - 1];
    const options = (last && !last.mine && last.view.quick_replies) || [];
    options.forEach((o) => {
      const title = o.title || o.payload;
      const choice = { payload: o.payload };
      if (o.title) choice.title = o.title;
      quick.append(h("button", { type: "button", class: "chip", onclick: () => { submit(title, choice); input.focus(); } }, title));
    });
    quick.hidden = !options.length;
  }

  // Who is writing to the visitor: the bot and an agent each start and stop on their own.
  const typers = new Set();
  let typingTimer = 0;
  function typing(on, from) {
    clearTimeout(typingTimer);
    if (from === undefined) typers.clear();
    else if (on) typers.add(from === "bot" ? "bot" : "agent");
    else typers.delete(from === "bot" ? "bot" : "agent");
    if (!typer) return;
    const who = typers.has("agent") ? S.team : typers.has("bot") ? S.bot : "";
    stick(() => (typer.textContent = who ? fmt(S.typing, { who }) : ""));
    if (who) {
      delivered();
      typingTimer = setTimeout(() => typing(false), 30000); // a "stop" that never came
    }
  }

  let typingOn = false;
  let idle = 0;
  function typed() {
    stick(() => {
      input.style.height = "auto";
      input.style.height = Math.min(input.scrollHeight, 120) + "px";
    });
    problem("");
    if (!typingOn && input.value.trim()) {
      typingOn = true;
      frame({ type: "typing", state: "start" });
    }
    clearTimeout(idle);
    idle = setTimeout(typingStop, 3000);
  }
  function typingStop() {
    clearTimeout(idle);
    if (typingOn) frame({ type: "typing", state: "stop" });
    typingOn = false;
  }

  function enter(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) sent(event);
  }
  function sent(event) {
    event.preventDefault();
    if (submit(input.value)) {
      input.value = "";
      typed();
    }
  }

  function problem(text) {
    if (error && error.textContent !== text) stick(() => (error.textContent = text));
  }

  function badge(n) {
    unread = n;
    if (!launcher) return;
    count.textContent = n > 9 ? "9+" : String(n);
    count.hidden = n === 0;
    launcher.setAttribute("aria-label", n ? S.open + ", " + fmt(S.unread, { n }) : S.open);
  }

  function markRead() {
    badge(0);
    const last = entries.filter((e) => !e.mine && e.id).pop();
    if (!last || last.id === store.readUpTo) return;
    store.readUpTo = last.id;
    save();
    frame({ type: "read", up_to: last.id });
  }

  function offline(down) {
    online = !down;
    if (!host) return;
    host.setAttribute("data-status", down ? "offline" : "online");
    stick(() => (banner.hidden = !down));
  }

  function focusables() {
    return Array.from(panel.querySelectorAll("button,textarea,a[href],[tabindex]")).filter(
      (el) => el.tabIndex >= 0 && !el.closest("[hidden]")
    );
  }

  function trap(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      close(true);
      return;
    }
    if (event.key !== "Tab") return;
    const items = focusables();
    const first = items[0];
    const last = items[items.length - 1];
    const here = root.activeElement;
    if (event.shiftKey && (here === first || !panel.contains(here))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && here === last) {
      event.preventDefault();
      first.focus();
    }
  }

  function open() {
    isOpen = true;
    if (!host) return;
    panel.hidden = false;
    launcher.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    box.classList.add("is-open");
    scroller.scrollTop = scroller.scrollHeight;
    input.focus();
    markRead();
  }

  function close(refocus) {
    isOpen = false;
    if (!host) return;
    const inside = panel.contains(root.activeElement);
    panel.hidden = true;
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    box.classList.remove("is-open");
    typingStop();
    if (refocus || inside) launcher.focus();
  }

  function refuse() {
    dead = true;
    if (host) host.remove();
    host = null;
    say(
      "error",
      "omni at " + BASE + " refused this page's origin (" + location.origin + "): add it to [web] " +
        "allowed_origins in omni's configuration. The chat stays off and nothing is stored."
    );
  }

  // -- start -------------------------------------------------------------------------------

  async function boot() {
    if (dead) return;
    try {
      await session();
      if (config.user && config.hash && store.user !== config.user) {
        try {
          await upgrade();
        } catch (error) {
          if (error instanceof Offline || error.status !== 401) throw error;
          say("error", "the visitor's login was refused (" + error.message + "); they stay anonymous.");
          config.user = config.hash = "";
        }
      }
      await takeLink();
      mount();
      await refresh();
      booted = true;
      resolveReady();
    } catch (error) {
      if (error instanceof Offline) {
        if (await reachable()) return refuse();
        if (store.token) {
          mount();
          offline(true);
          drawPending();
        }
        later(boot);
      } else if (error.status === 404) {
        dead = true;
        say("error", "the web chat is not configured on " + BASE + " ([web] in omni's configuration).");
      } else {
        say("error", error.message);
        if (error.status === 401) store = {}; // a session omni no longer accepts: a new one
        later(boot);
      }
    }
  }

  function configure(options) {
    const o = options || {};
    if (typeof o.color === "string" && CSS.supports("color", o.color)) config.color = o.color;
    if (o.position === "left" || o.position === "right") config.position = o.position;
    if (typeof o.lang === "string") config.lang = o.lang;
    if (typeof o.title === "string") S.title = o.title;
    if (typeof o.greeting === "string") S.greeting = o.greeting;
    if (o.strings && typeof o.strings === "object") {
      for (const k of Object.keys(S)) if (typeof o.strings[k] === "string") S[k] = o.strings[k];
    }
    if (!host) return;
    apply();
    entries.forEach((e) => e.mine && e.state && state(e, e.state));
  }

  async function identify(who) {
    const o = who || {};
    if (!o.user || !o.hash) throw new Error("omni.identify needs {user, hash}");
    config.user = String(o.user);
    config.hash = String(o.hash);
    const traits = {};
    for (const k of ["name", "email", "phone", "locale"]) if (typeof o[k] === "string") traits[k] = o[k];
    config.traits = Object.keys(traits).length ? traits : null;
    await ready;
    try {
      await upgrade();
    } catch (error) {
      say("error", "identify was refused: " + error.message);
      throw error;
    }
    await refresh();
  }

  async function reset() {
    await ready;
    config.user = config.hash = "";
    store = {};
    outbox = [];
    try {
      localStorage.removeItem(KEY);
    } catch (e) {
      /* nothing kept */
    }
    await session();
    await refresh();
  }

  const data = tag.dataset;
  let strings = null;
  try {
    strings = data.omniStrings ? JSON.parse(data.omniStrings) : null;
  } catch (e) {
    say("warn", "data-omni-strings is not JSON; the default words are used.");
  }
  configure({
    color: data.omniColor,
    position: data.omniPosition,
    lang: data.omniLang,
    title: data.omniTitle,
    greeting: data.omniGreeting,
    strings,
  });
  if (data.omniUser && data.omniHash) {
    config.user = data.omniUser;
    config.hash = data.omniHash;
  }

  const api = Object.freeze({
    version: "1",
    configure,
    identify,
    reset,
    open: () => open(),
    close: () => close(false),
  });
  window.omni = api;
  if (Array.isArray(queued)) queued.forEach(([name, ...args]) => typeof api[name] === "function" && api[name](...args));

  addEventListener("storage", (event) => {
    if (event.key !== KEY || dead || !booted) return;
    const before = store;
    store = load();
    if (!store.token) return; // another tab reset: it starts its own
    if (store.visitor !== before.visitor || store.user !== before.user) refresh().catch(() => later(connect));
    else if (store.readUpTo !== before.readUpTo && isOpen === false) {
      const seen = store.readUpTo || "";
      badge(entries.filter((e) => !e.mine && e.id && e.id > seen).length);
    }
  });
  addEventListener("online", () => booted && !ws && connect());
  document.addEventListener("visibilitychange", () => isOpen && document.visibilityState === "visible" && markRead());

  if (document.body) boot();
  else document.addEventListener("DOMContentLoaded", boot);
})();
