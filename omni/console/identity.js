// The console's who-is-who pieces, over the public API: a merge previewed before it is
// confirmed (POST /v1/customers/{id}/merge with "dry_run": true, then without), the
// customer's audit trail (GET /v1/customers/{id}/audit), and an Undo on a merge's
// event on the timeline (POST /v1/merges/{merge_id}/undo). Drawn with textContent only.
"use strict";

(() => {
  const { api, el, when, state, hooks, refresh, openCustomer } = window.omniConsole;
  const $ = (id) => document.getElementById(id);
  const value = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const ids = (identities) => identities.map((i) => `${i.channel}:${i.external_id}`).join(", ") || "—";
  const cart = (c) => (c && c.items && c.items.length ? c.items.map((i) => `${i.quantity}× ${i.name}`).join(", ") : "—");

  // -- the merge preview -------------------------------------------------------------------------

  function previewTable(preview) {
    const { survivor, source, result } = preview;
    const head = el("tr", {},
      el("th", { scope: "col", text: "" }),
      el("th", { scope: "col", text: `This customer (${survivor.id})` }),
      el("th", { scope: "col", text: `Merged in (${source.id})` }),
      el("th", { scope: "col", text: "After the merge" }));
    const row = (name, a, b, after) => el("tr", {},
      el("th", { scope: "row", text: name }), el("td", { text: a }), el("td", { text: b }),
      el("td", { text: after }));
    const body = [
      row("Name", value(survivor.profile.name), value(source.profile.name), value(result.profile.name)),
      row("Identities", ids(survivor.identities), ids(source.identities), ids(result.identities)),
      row("Cart", cart(survivor.cart), cart(source.cart),
        `${cart(result.cart)}${result.cart_from ? ` (from ${result.cart_from === survivor.id ? "this customer" : "the one merged in"})` : ""}`),
      row("Conversation", value(survivor.conversation_id), value(source.conversation_id),
        value(result.conversation_id)),
    ];
    for (const fact of preview.facts) {
      const cells = [fact.survivor, fact.source].map((v, at) => el("td", {
        class: (fact.wins === (at ? "source" : "survivor")) ? "wins" : null, text: value(v),
      }));
      body.push(el("tr", { "data-fact": fact.name, class: fact.conflict ? "conflict" : null },
        el("th", { scope: "row", text: `Fact: ${fact.name}${fact.conflict ? " (conflict)" : ""}` }),
        ...cells, el("td", { text: value(fact.value) })));
    }
    return el("table", {}, el("caption", { class: "help", text: "Values that win are in bold." }),
      el("thead", {}, head), el("tbody", {}, ...body));
  }

  function showPreview(preview, reason) {
    const box = $("merge-preview");
    const confirm = el("button", { type: "button", text: "Confirm merge" });
    const cancel = el("button", { type: "button", class: "secondary", text: "Cancel" });
    cancel.addEventListener("click", () => { box.hidden = true; box.replaceChildren(); $("merge-source").focus(); });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      $("merge-error").textContent = "";
      try {
        const body = { source: preview.source.id };
        if (reason) body.reason = reason;
        const merged = await api(`/v1/customers/${preview.survivor.id}/merge`, { method: "POST", body });
        box.replaceChildren(el("p", { role: "status", text: `Merged ${merged.source} into this customer (merge ${merged.merge_id}).` }));
        $("merge-source").value = "";
        refresh();
      } catch (error) {
        confirm.disabled = false;
        $("merge-error").textContent = `Not merged: ${error.message}`;
      }
    });
    box.replaceChildren(
      el("h3", { class: "small", text: "Preview: nothing has changed yet" }),
      previewTable(preview),
      el("p", { class: "help", text: "Evidence:" }),
      el("ul", { class: "evidence" }, ...preview.evidence.map((e) => el("li", { text: e }))),
      el("div", { class: "row" }, confirm, cancel));
    box.hidden = false;
    confirm.focus();
  }

  $("merge-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("merge-error").textContent = "";
    const source = $("merge-source").value.trim();
    try {
      const preview = await api(`/v1/customers/${state.cid}/merge`, {
        method: "POST", body: { source, dry_run: true },
      });
      showPreview(preview, null);
    } catch (error) {
      $("merge-preview").hidden = true;
      $("merge-error").textContent = `No preview: ${error.message}`;
    }
  });

  // -- the audit trail --------------------------------------------------------------------------

  const ACTIONS = {
    join: "Joined on verified evidence", link_token: "Linked by a link token",
    link: "Identity linked", merge: "Merged", unmerge: "Merge undone",
  };

  async function loadAudit(cid) {
    const list = $("audit");
    try {
      const page = await api(`/v1/customers/${cid}/audit?limit=50`);
      if (cid !== state.cid) return;
      list.replaceChildren(...page.entries.map((entry) => {
        const who = entry.actor.kind === "key" ? `${entry.actor.name || "a key"} (${entry.actor.role})` :
          entry.actor.kind === "channel" ? `the ${entry.actor.name} channel` : "omni";
        const what = [
          entry.identity && `${entry.identity.channel}:${entry.identity.external_id || "…"}`,
          entry.other_customer_id && `with ${entry.other_customer_id}`,
          entry.merge_id,
        ].filter(Boolean).join(" · ");
        return el("li", { "data-action": entry.action },
          el("b", { text: ACTIONS[entry.action] || entry.action }), ` by ${who}, `,
          el("time", { datetime: entry.at, text: when(entry.at) }),
          what ? el("div", { class: "help", text: what }) : null,
          entry.evidence ? el("div", { text: `Evidence: ${entry.evidence}` }) : null,
          entry.request_id ? el("div", { class: "help", text: `Request ${entry.request_id}` }) : null);
      }));
      if (!page.entries.length) list.replaceChildren(el("li", { class: "help", text: "No identity changes yet." }));
    } catch (error) {
      list.replaceChildren(el("li", { class: "error", text: `Audit trail unavailable: ${error.message}` }));
    }
  }

  let shown = null; // the customer the merge form was last drawn for
  hooks.customer.push((context) => {
    if (context.customer.id !== shown) {
      shown = context.customer.id;
      $("merge-preview").hidden = true;
      $("merge-preview").replaceChildren();
      $("merge-error").textContent = "";
    }
    loadAudit(context.customer.id);
  });

  // -- Undo on a merge's event -----------------------------------------------------------------

  function undone(mergeId) {
    for (const message of state.messages.values()) {
      const meta = message.metadata || {};
      if (meta.kind === "unmerge" && meta.merge_id === mergeId) return true;
    }
    return false;
  }

  hooks.row.push((message, row) => {
    const meta = message.metadata || {};
    if (meta.kind !== "merge" || !meta.merge_id || undone(meta.merge_id)) return;
    const button = el("button", { type: "button", class: "secondary undo",
      "aria-label": `Undo merge ${meta.merge_id} of ${meta.merged_from}`, text: "Undo merge" });
    const said = el("span", { class: "help", role: "status" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const result = await api(`/v1/merges/${meta.merge_id}/undo`, { method: "POST" });
        said.textContent = `Undone: ${result.source} is a separate customer again.`;
        button.remove();
        openCustomer(state.cid); // messages went back to the other record: draw afresh
      } catch (error) {
        button.disabled = false;
        said.textContent = `Not undone: ${error.message}`;
      }
    });
    row.append(el("div", {}, button, " ", said));
  });
})();
