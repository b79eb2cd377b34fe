/** The projects screen: each project with its state and an approval badge, and a
 * form to add one by path. */

import { h, replace } from "../dom.mjs";
import { clock } from "../format.mjs";
import * as notifications from "../notify.mjs";

/**
 * @param {{store: import("../store.mjs").Store, connection: any,
 *   open: (id: string) => void}} deps
 * @returns {{el: HTMLElement, destroy: () => void}}
 */
export function projectsScreen({ store, connection, open }) {
  const list = h("ul.project-list", { "aria-label": "Projects" });
  const empty = h("p.muted.empty", null, "Loading projects…");
  const pathInput = h("input#project-path", {
    type: "text",
    name: "path",
    placeholder: "/home/me/code/app",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    inputmode: "url",
  });
  const createDir = h("input#project-mkdir", { type: "checkbox" });
  const formError = h("p.error-text", { role: "alert" });
  const submit = h("button.primary", { type: "submit" }, "Create project");
  const form = h(
    "form.create-form",
    {
      onSubmit: async (event) => {
        event.preventDefault();
        const path = pathInput.value.trim();
        formError.textContent = "";
        if (!path) {
          formError.textContent = "Enter the project's absolute path.";
          return;
        }
        submit.disabled = true;
        try {
          const reply = await connection.request(
            "project_create",
            { path, create: createDir.checked },
            { replyTypes: ["project_state"] },
          );
          store.putProject(reply.data);
          pathInput.value = "";
          open(reply.data.id);
        } catch (error) {
          formError.textContent = error.message || "Could not create the project.";
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("label", { for: "project-path" }, "Project path"),
    h("div.row", null, pathInput, submit),
    h("label.check", { for: "project-mkdir" }, createDir, " Create the directory if missing"),
    formError,
  );

  const notifyButton = h("button.secondary.small", { type: "button" }, "Notify me");
  notifyButton.addEventListener("click", async () => {
    await notifications.ask();
    notifyButton.hidden = notifications.permission() !== "default";
  });
  notifyButton.hidden = notifications.permission() !== "default";

  function render() {
    const projects = store.projectList();
    empty.hidden = projects.length > 0;
    empty.textContent = store.listLoaded ? "No projects yet. Add one by its path below." : "Loading projects…";
    replace(
      list,
      projects.map((p) => {
        const waiting = Array.isArray(p.pending_permissions) ? p.pending_permissions.length : p.awaiting_approval ? 1 : 0;
        return h(
          "li",
          null,
          h(
            "button.project",
            { type: "button", dataset: { projectId: p.id }, onClick: () => open(p.id) },
            h("span.path", null, p.path),
            h(
              "span.meta",
              null,
              h(`span.state.state-${String(p.state).toLowerCase()}`, null, ` ${String(p.state).toLowerCase()}`),
              p.last_active ? h("span.muted", null, ` · ${clock(p.last_active)}`) : null,
              waiting
                ? h("span.badge-approval", { title: "Waiting for your approval" }, ` ${waiting} waiting`)
                : null,
            ),
          ),
        );
      }),
    );
  }

  const onChange = () => render();
  store.addEventListener("projects", onChange);
  store.addEventListener("permissions", onChange);
  render();

  const el = h(
    "main.screen.projects",
    null,
    h("div.screen-head", null, h("h1", null, "Projects"), notifyButton),
    list,
    empty,
    form,
  );
  return {
    el,
    destroy() {
      store.removeEventListener("projects", onChange);
      store.removeEventListener("permissions", onChange);
    },
  };
}
