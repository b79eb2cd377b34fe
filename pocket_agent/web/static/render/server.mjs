/** Records the server wrote (direction "server"): run start and footer, kills,
 * session resets, stderr, non-JSON output, permission prompts and their outcome. */

import { h } from "../dom.mjs";
import { clock, cost, duration } from "../format.mjs";
import { longText } from "./text.mjs";

/**
 * @param {object} message the lifecycle event
 * @param {object} ctx lookups (see record.mjs)
 * @returns {HTMLElement|null|undefined} undefined: unknown type
 */
export function renderServer(message, ctx) {
  switch (message.type) {
    case "execution_started":
      return h("p.event.run-start", null, h("span", null, "Run started"), h("time.muted", null, clock(ctx.record.timestamp)));
    case "execution_finished":
      return footer(message);
    case "process_killed":
      return h("p.event.warn", null, "Process killed");
    case "session_reset":
      return h("p.event.divider", null, "New session");
    case "stderr":
      return h("div.stderr", null, longText(String(message.text ?? ""), { limit: 4000 }));
    case "raw_output":
      return h(
        "div.raw-output",
        null,
        h("p.muted", null, message.truncated_from ? `Output (not JSON, cut from ${message.truncated_from} bytes)` : "Output (not JSON)"),
        longText(String(message.line ?? ""), { limit: 4000 }),
      );
    case "permission_request":
      return permissionCard(message, ctx);
    case "permission_resolved":
      return resolvedLine(message);
    default:
      return undefined;
  }
}

function footer(message) {
  const outcome = String(message.outcome || "unknown");
  const ok = outcome === "success";
  const el = h(
    `footer.run-footer.outcome-${outcome.replace(/[^a-z]/g, "")}`,
    null,
    h("span.outcome", null, outcome),
    h("span.sep", { "aria-hidden": "true" }, " · "),
    h("span.duration", null, duration(message.duration_ms)),
    h("span.sep", { "aria-hidden": "true" }, " · "),
    h("span.cost", null, cost(message.cost_usd)),
  );
  const reason = ["user", "interrupt"].includes(message.reason) ? null : message.reason;
  if (!ok && (message.error || reason)) {
    const detail = [reason, message.error].filter(Boolean).join(": ");
    el.append(h(`p.footer-detail${outcome === "failed" || outcome === "timeout" ? ".error-text" : ""}`, null, detail));
  }
  return el;
}

function permissionCard(message, ctx) {
  const resolution = ctx.resolution(message.permission_id);
  const open = ctx.isPending(message.permission_id);
  const title = `${message.kind === "question" ? "Question" : message.kind === "plan" ? "Plan" : "Permission"}: ${message.display_name || message.tool_name || "tool"}`;
  const status = resolution
    ? `${resolution.behavior === "allow" ? "Allowed" : "Denied"}${resolution.reason && resolution.reason !== "user" ? ` (${resolution.reason})` : ""}`
    : open
      ? "Waiting for you"
      : "Closed";
  return h(
    `section.card.permission${open ? ".open" : ""}`,
    null,
    h("header.card-head", null, h("span.tool-name", null, title), h("span.perm-status", null, status)),
    message.description ? h("p.muted", null, message.description) : null,
    open
      ? h("button.primary.review", { type: "button", onClick: () => ctx.review(message.permission_id) }, "Review")
      : null,
  );
}

function resolvedLine(message) {
  const allowed = message.behavior === "allow";
  const who = message.reason === "user" ? "" : ` (${message.reason})`;
  const text = `${allowed ? "Allowed" : "Denied"}${who}${message.message && !allowed ? `: ${message.message}` : ""}`;
  return h(`p.event.${allowed ? "ok" : "warn"}`, null, text);
}
