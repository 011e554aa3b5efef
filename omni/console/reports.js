// The console's Reports view: GET /v1/reports/service by day, drawn as plain SVG bar
// charts (no library, no build step). Each chart is an image with a name for screen
// readers and carries its figures in a table beside it, so nothing is only visual.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const DAY_MS = 86400000;
  // [title, how to read the figure from a group, unit]
  const CHARTS = [
    ["Conversations", (g) => g.conversations, ""],
    ["Resolved", (g) => g.resolved, ""],
    ["First response, median", (g) => g.first_response.median_s, "s"],
    ["First response, p90", (g) => g.first_response.p90_s, "s"],
    ["Resolution time, median", (g) => g.resolution.median_s, "s"],
    ["First-contact resolution", (g) => pct(g.first_contact_resolution.rate), "%"],
    ["CSAT average", (g) => g.csat.average, "/5"],
    ["CES average", (g) => g.ces.average, "/7"],
    ["NPS", (g) => g.nps.score, ""],
    ["Repeated questions prevented", (g) => g.repeated_questions.prevented, ""],
    ["Repeated questions let through", (g) => g.repeated_questions.let_through, ""],
    ["Channel switches", (g) => g.channel_switches, ""],
    ["Carts placed on another channel", (g) => g.carts.started_elsewhere, ""],
    ["Continued across channels without repeating", (g) => g.cross_channel.without_repeated_question, ""],
    ["Returning customers", (g) => g.returning_customers, ""],
  ];

  function pct(rate) {
    return rate === null || rate === undefined ? null : Math.round(rate * 1000) / 10;
  }

  function shown(value, unit) {
    return value === null || value === undefined ? "–" : `${value}${unit}`;
  }

  function day(offset) {
    return new Date(Date.now() - offset * DAY_MS).toISOString().slice(0, 10);
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attributes = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  async function load(query) {
    const key = sessionStorage.getItem("omni.key");
    const response = await fetch(`/v1/reports/service?${query}`, {
      headers: { Authorization: `Bearer ${key}` },
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && body.detail) || `HTTP ${response.status}`);
    return body;
  }

  function totals(report) {
    const t = report.totals;
    const items = [
      ["Conversations", t.conversations, ""],
      ["Resolved", t.resolved, ""],
      ["First response, median", t.first_response.median_s, " s"],
      ["First response, p90", t.first_response.p90_s, " s"],
      ["Resolution time, median", t.resolution.median_s, " s"],
      ["First-contact resolution", pct(t.first_contact_resolution.rate), " %"],
      ["CSAT average", t.csat.average, " / 5"],
      ["CSAT response rate", pct(t.csat.response_rate), " %"],
      ["CES average", t.ces.average, " / 7"],
      ["NPS", t.nps.score, ""],
      ["Promoters · passives · detractors",
        `${t.nps.promoters} · ${t.nps.passives} · ${t.nps.detractors}`, ""],
      ["Repeated questions prevented", t.repeated_questions.prevented, ""],
      ["Repeated questions let through", t.repeated_questions.let_through, ""],
      ["Channel switches", t.channel_switches, ""],
      ["Carts placed on another channel", t.carts.started_elsewhere, ""],
      ["Continued across channels without repeating", t.cross_channel.without_repeated_question, ""],
      ["Returning customers", t.returning_customers, ""],
    ];
    $("report-totals").replaceChildren(
      ...items.map(([name, value, unit]) =>
        el("div", { "data-figure": name }, el("dt", { text: name }),
          el("dd", { text: shown(value, unit) }))),
    );
  }

  function chart(index, title, read, unit, groups) {
    const values = groups.map(read);
    const numbers = values.filter((v) => typeof v === "number");
    const top = Math.max(1, ...numbers);
    const width = 320, height = 120, left = 28, bottom = 18;
    const step = (width - left) / Math.max(1, groups.length);
    const id = `chart-${index}`;
    const described = numbers.length
      ? `${title} by day, ${groups[0].key} to ${groups[groups.length - 1].key}; highest ${top}${unit}`
      : `${title} by day: no figures in this range`;
    const image = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-labelledby": `${id}-title`, "data-chart": title });
    const name = svg("title", { id: `${id}-title` });
    name.textContent = described;
    image.append(name);
    image.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width,
      y2: height - bottom }));
    const label = (x, y, text, anchor = "start") => {
      const node = svg("text", { x, y, "text-anchor": anchor });
      node.textContent = text;
      image.append(node);
    };
    label(left - 4, 10, `${top}`, "end");
    label(left - 4, height - bottom, "0", "end");
    groups.forEach((group, i) => {
      const value = values[i];
      const barHeight = typeof value === "number" ? (value / top) * (height - bottom - 8) : 0;
      const bar = svg("rect", { class: "bar", x: left + i * step + 1,
        y: height - bottom - barHeight, width: Math.max(1, step - 2), height: barHeight,
        "data-day": group.key, "data-value": value === null ? "" : value });
      const tip = svg("title");
      tip.textContent = `${group.key}: ${shown(value, unit)}`;
      bar.append(tip);
      image.append(bar);
    });
    label(left, height - 4, groups.length ? groups[0].key : "");
    label(width, height - 4, groups.length ? groups[groups.length - 1].key : "", "end");
    const table = el("table", { class: "visually-hidden" },
      el("caption", { text: `${title} by day` }),
      el("tr", {}, el("th", { text: "Day", scope: "col" }), el("th", { text: title, scope: "col" })),
      ...groups.map((g, i) => el("tr", {}, el("th", { text: g.key, scope: "row" }),
        el("td", { text: shown(values[i], unit) }))));
    return el("figure", { "aria-labelledby": `${id}-caption` },
      el("figcaption", { id: `${id}-caption`, text: title }), image, table);
  }

  async function show() {
    const query = new URLSearchParams({ from: $("report-from").value, to: $("report-to").value,
      group_by: "day" });
    if ($("report-channel").value) query.set("channel", $("report-channel").value);
    $("report-error").textContent = "";
    $("report-status").textContent = "Loading the report…";
    try {
      const report = await load(query);
      totals(report);
      $("report-charts").replaceChildren(
        ...CHARTS.map(([title, read, unit], i) => chart(i, title, read, unit, report.groups)));
      $("report-status").textContent =
        `Report for ${report.from} to ${report.to}${report.channel ? ` on ${report.channel}` : ""}`;
    } catch (error) {
      $("report-status").textContent = "";
      $("report-error").textContent = error.message;
    }
  }

  function toggle() {
    const open = $("reports").hidden;
    $("reports").hidden = !open;
    $("desk").hidden = open;
    $("view-reports").setAttribute("aria-expanded", String(open));
    $("view-reports").textContent = open ? "Conversations" : "Reports";
    if (open) {
      $("reports-title").focus();
      show();
    }
  }

  $("report-from").value = day(29);
  $("report-to").value = day(0);
  $("view-reports").addEventListener("click", toggle);
  $("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    show();
  });
  // The button shows once an agent is signed in (console.js shows Sign out then).
  $("view-reports").hidden = $("sign-out").hidden;
  new MutationObserver(() => {
    $("view-reports").hidden = $("sign-out").hidden;
  }).observe($("sign-out"), { attributes: true, attributeFilter: ["hidden"] });
})();
