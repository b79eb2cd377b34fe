/** The approval sheet: one open permission prompt at a time (oldest first) with its
 * preview and the answers the kind allows: Allow / Allow always / Deny (+ Reason) for
 * a tool, choices for AskUserQuestion, approve / reject for ExitPlanMode. */

import { h, replace } from "./dom.mjs";
import { markdown } from "./render/markdown.mjs";
import { toolBody } from "./render/tool.mjs";

/**
 * @param {{store: import("./store.mjs").Store, connection: any, projectId: string}} deps
 * @returns {{el: HTMLElement, show: (id?: string) => void, update: () => void}}
 */
export function approvalSheet({ store, connection, projectId }) {
  const el = h("section.sheet", {
    role: "dialog",
    "aria-labelledby": "sheet-title",
    "aria-live": "polite",
    hidden: true,
  });
  let currentId = null;
  let dismissed = new Set();
  let busy = false;
  let error = "";
  let drawn = ""; // what the sheet shows now: redrawn only when that changes


  function pending() {
    return store.pendingList(projectId);
  }

  /**
   * Show the prompt that should be on top. The sheet is redrawn only when what it shows
   * changes (another prompt, another count, an error): every project_state for the
   * project calls this, and a redraw would wipe a half-typed reason and the focus.
   * @param {boolean} [force] redraw even so (an error to show, a choice to reset)
   */
  function update(force = false) {
    const open = pending();
    if (currentId && !open.some((p) => p.permission_id === currentId)) {
      currentId = null;
      error = "";
    }
    if (!currentId) {
      const next = open.find((p) => !dismissed.has(p.permission_id));
      currentId = next ? next.permission_id : null;
      busy = false;
    }
    const request = open.find((p) => p.permission_id === currentId);
    if (!request) {
      el.hidden = true;
      el.replaceChildren();
      drawn = "";
      return;
    }
    const key = `${request.permission_id} ${open.length} ${open.indexOf(request)}`;
    if (!force && key === drawn && !el.hidden) return;
    const fresh = !drawn.startsWith(`${request.permission_id} `);
    drawn = key;
    el.hidden = false;
    draw(request, open);
    // A new prompt takes the focus (screen readers announce the sheet's title).
    // Not when the user is typing elsewhere (the composer): that would take their keys.
    const active = document.activeElement;
    const idle = !active || active === document.body || el.contains(active);
    if (fresh && idle) el.querySelector("#sheet-title")?.focus({ preventScroll: true });
  }

  function draw(request, open) {
    const index = open.indexOf(request);
    const kind = request.kind || "tool";
    const what =
      kind === "question" ? "Claude asks" : kind === "plan" ? "approve the plan?" : request.display_name || request.tool_name || "tool";
    const title = `Permission: ${what}`;
    const reason = h("input#deny-reason", { type: "text", name: "reason", autocomplete: "off", placeholder: "Optional: tell Claude why" });
    const choices = kind === "question" ? questionChoices(request.input) : null;

    const answer = (behavior, extra = {}) => async () => {
      if (busy) return;
      busy = true;
      error = "";
      for (const b of el.querySelectorAll("button.answer")) b.disabled = true;
      const data = { permission_id: request.permission_id, behavior, ...extra };
      if (behavior === "deny" && reason.value.trim()) data.message = reason.value.trim();
      try {
        const reply = await connection.request("permission_response", data, { projectId });
        if (reply.data?.status === "already_resolved") {
          store.pendingMap(projectId).delete(request.permission_id);
          store.emit("permissions", { projectId });
        }
      } catch (e) {
        busy = false;
        error = e.message || "Could not send the answer.";
        if (e.code === "PERMISSION_NOT_FOUND") {
          store.pendingMap(projectId).delete(request.permission_id);
          store.emit("permissions", { projectId });
        }
        update(true);
      }
    };

    const allowExtra = () => (choices ? { answers: choices.answers() } : {});
    const body =
      kind === "plan"
        ? h("div", null, h("div.plan", null, markdown(String(request.input?.plan ?? ""))), h("p.muted.small", null, "Allow approves the plan; Deny rejects it (the reason tells Claude what to change)."))
        : kind === "question"
          ? h("div", null, choices.el, h("p.muted.small", null, "Allow sends the chosen answers."))
          : toolBody(String(request.tool_name || ""), request.input || {}, request);

    replace(
      el,
      h(
        "header.sheet-head",
        null,
        h("h2#sheet-title", { tabindex: "-1" }, title),
        open.length > 1 ? h("span.muted", null, `${index + 1} of ${open.length}`) : null,
        h(
          "button.link.small",
          {
            type: "button",
            onClick: () => {
              dismissed.add(request.permission_id);
              currentId = null;
              update(true);
            },
          },
          "Later",
        ),
      ),
      h(
        "div.sheet-body",
        null,
        request.description && ![request.preview?.path, request.preview?.description, request.input?.description].includes(request.description)
          ? h("p", null, request.description)
          : null,
        request.decision_reason ? h("p.muted", null, String(request.decision_reason)) : null,
        request.blocked_path ? h("p.note", null, `Outside the allowed paths: ${request.blocked_path}`) : null,
        request.preview?.outside_project ? h("p.note", null, "This file is outside the project.") : null,
        request.preview?.truncated ? h("p.note", null, "Preview cut: the change is larger.") : null,
        body,
      ),
      error ? h("p.error-text", { role: "alert" }, error) : null,
      h("div.reason", null, h("label", { for: "deny-reason" }, "Reason"), reason),
      h(
        "div.sheet-actions",
        null,
        h("button.answer.danger", { type: "button", onClick: answer("deny") }, "Deny"),
        kind === "tool"
          ? h("button.answer.secondary", { type: "button", onClick: answer("allow", { remember: true }) }, "Allow always")
          : null,
        h("button.answer.primary", { type: "button", onClick: () => answer("allow", allowExtra())() }, "Allow"),
      ),
    );
    if (busy) for (const b of el.querySelectorAll("button.answer")) b.disabled = true;
  }

  /** @param {string} [id] open this prompt (else the oldest), even if "Later" was chosen */
  function show(id) {
    const open = pending();
    const target = open.find((p) => p.permission_id === id) || open[0];
    if (!target) return;
    dismissed.delete(target.permission_id);
    currentId = target.permission_id;
    update(true);
    el.scrollIntoView({ block: "nearest" });
  }

  return { el, show, update };
}

/**
 * Choices for AskUserQuestion's questions: radios (checkboxes when multiSelect).
 * @param {object} input {questions: [{question, header, options: [{label, description}], multiSelect}]}
 * @returns {{el: HTMLElement, answers: () => Object<string, string>}}
 */
function questionChoices(input) {
  const questions = Array.isArray(input?.questions) ? input.questions : [];
  const groups = questions.map((q, qi) => {
    const type = q.multiSelect ? "checkbox" : "radio";
    const options = Array.isArray(q.options) ? q.options : [];
    const inputs = options.map((opt, oi) => {
      const id = `q${qi}-o${oi}`;
      const box = h(`input#${id}`, { type, name: `q${qi}`, value: String(opt?.label ?? opt) });
      if (oi === 0 && type === "radio") box.checked = true;
      return { box, row: h("label.choice", { for: id }, box, h("span", null, String(opt?.label ?? opt)), opt?.description ? h("small.muted", null, ` ${opt.description}`) : null) };
    });
    return {
      question: String(q.question ?? ""),
      inputs,
      el: h("fieldset.question", null, h("legend", null, q.header ? `${q.header}: ${q.question}` : String(q.question ?? "")), inputs.map((i) => i.row)),
    };
  });
  return {
    el: h("div.questions", null, groups.map((g) => g.el)),
    answers() {
      const out = {};
      for (const g of groups) {
        const chosen = g.inputs.filter((i) => i.box.checked).map((i) => i.box.value);
        if (chosen.length) out[g.question] = chosen.join(", ");
      }
      return out;
    },
  };
}
