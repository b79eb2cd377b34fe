/** A project's settings panel: the rules "Allow always" remembered (settings.allowed_tools,
 * each with Remove) and whether the project's approvals come to the phone. Changes go out
 * as project_settings; what it shows always comes from the store's ProjectState, so a
 * change made on another device shows here too. */

import { h, replace } from "../dom.mjs";

/**
 * @param {{store: import("../store.mjs").Store, connection: any, projectId: string}} deps
 * @returns {{el: HTMLElement, toggle: () => boolean, update: () => void}}
 *   `toggle` opens or closes the panel and says whether it is open now; `update` redraws
 *   it from the store (call it on every "projects" event and connection state change)
 */
export function settingsPanel({ store, connection, projectId }) {
  let busy = false;
  let error = "";
  let drawnRules = null;

  const approvals = h("input#settings-approvals", { type: "checkbox", name: "approvals" });
  approvals.addEventListener("change", () =>
    save({ approvals: approvals.checked ? "phone" : "off" }),
  );
  const rulesList = h("ul.rule-list");
  const empty = h("p.muted.small.rules-empty", null, "No remembered rules: every tool that needs permission asks.");
  const errorLine = h("p.error-text", { role: "alert", hidden: true });
  const el = h(
    "section#settings-panel.settings-panel",
    { "aria-labelledby": "settings-title", hidden: true },
    h("h2#settings-title", null, "Project settings"),
    h(
      "label.check",
      { for: "settings-approvals" },
      approvals,
      h("span", null, "Approvals from the phone"),
    ),
    h("p.muted.small.hint", null, "Off: a tool that needs permission is denied without asking."),
    h("h3.rules-title", null, "Allowed without asking"),
    rulesList,
    empty,
    errorLine,
  );

  function settings() {
    return store.projects.get(projectId)?.settings || {};
  }

  function rules() {
    const list = settings().allowed_tools;
    return Array.isArray(list) ? list.map(String) : [];
  }

  /** Send new settings; the reply (a project_state) reaches the store through sync. */
  async function save(data) {
    busy = true;
    error = "";
    update();
    try {
      await connection.request("project_settings", data, {
        projectId,
        replyTypes: ["project_state"],
      });
    } catch (e) {
      error = `Could not save the settings: ${e.code}: ${e.message}`;
    } finally {
      busy = false;
      update();
    }
  }

  function update() {
    if (el.hidden) return;
    const disabled = busy || connection.state !== "connected";
    const current = rules();
    // The checkbox shows what is stored once no change is on its way (a refused change
    // springs back); while one is, it keeps what the user chose.
    if (!busy) approvals.checked = settings().approvals !== "off";
    approvals.disabled = disabled;
    const key = JSON.stringify(current);
    if (key !== drawnRules) {
      drawnRules = key;
      replace(
        rulesList,
        current.map((rule) =>
          h(
            "li.rule",
            null,
            h("code.rule-text", null, rule),
            h(
              "button.secondary.remove",
              {
                type: "button",
                "aria-label": `Remove ${rule}`,
                onClick: () => save({ allowed_tools: rules().filter((r) => r !== rule) }),
              },
              "Remove",
            ),
          ),
        ),
      );
    }
    for (const b of rulesList.querySelectorAll("button")) b.disabled = disabled;
    empty.hidden = current.length > 0;
    errorLine.textContent = error;
    errorLine.hidden = !error;
  }

  function toggle() {
    el.hidden = !el.hidden;
    if (!el.hidden) {
      error = "";
      drawnRules = null;
      update();
    }
    return !el.hidden;
  }

  return { el, toggle, update };
}
