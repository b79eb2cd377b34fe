/** Records Claude printed (direction "claude"): assistant text and tool calls, tool
 * results, the init line, the result. Lines shown elsewhere render as nothing. */

import { h } from "../dom.mjs";
import { jsonDetails } from "./json.mjs";
import { markdown } from "./markdown.mjs";
import { contentText, longText } from "./text.mjs";
import { toolCard } from "./tool.mjs";

/** Claude's own side of the permission protocol: shown as the permission Records. */
const QUIET = new Set(["control_request", "control_response", "control_cancel_request", "stream_event"]);

/**
 * @param {object} message the stream-json line
 * @param {object} ctx lookups (see record.mjs)
 * @returns {HTMLElement|null} null: nothing to show
 */
export function renderClaude(message, ctx) {
  switch (message.type) {
    case "assistant":
      return assistant(message, ctx);
    case "user":
      return user(message, ctx);
    case "system":
      if (message.subtype === "init") {
        return h("p.event.muted", null, `Claude ${message.model ? `· ${message.model}` : ""}`.trim());
      }
      return jsonDetails(`system: ${message.subtype || "event"}`, message);
    case "result":
      if (message.is_error) {
        // A run the user stopped ends in an error result: not an error to show in red.
        const outcome = ctx.finished(ctx.record.run_id)?.outcome;
        if (outcome === "interrupted" || outcome === "killed") return null;
        const errors = Array.isArray(message.errors) ? message.errors.join("\n") : "";
        return h(
          "div.error-box",
          { role: "note" },
          h("strong", null, `Claude reported an error (${message.subtype || "error"})`),
          longText(String(message.result || errors || ""), { className: "plain" }),
        );
      }
      return null;
    default:
      if (QUIET.has(message.type)) return null;
      return undefined;
  }
}

function assistant(message, ctx) {
  const content = message.message?.content;
  if (typeof content === "string") return h("div.bubble.assistant", null, markdown(content));
  if (!Array.isArray(content)) return undefined;
  const parts = [];
  for (const block of content) {
    if (block?.type === "text") {
      if (block.text) parts.push(h("div.bubble.assistant", null, markdown(block.text)));
    } else if (block?.type === "tool_use") {
      parts.push(toolCard(block, ctx));
    } else if (block?.type === "thinking" || block?.type === "redacted_thinking") {
      parts.push(h("details.thinking", null, h("summary", null, "Thinking"), longText(block.thinking || "", { className: "plain" })));
    } else {
      parts.push(jsonDetails(`content: ${block?.type || "unknown"}`, block));
    }
  }
  if (message.error) parts.push(h("p.error-text", null, `Error: ${message.error}`));
  return parts.length ? h("div.group", null, parts) : null;
}

function user(message, ctx) {
  const content = message.message?.content;
  if (typeof content === "string") return h("div.bubble.user.echo", null, longText(content, { className: "plain" }));
  if (!Array.isArray(content)) return undefined;
  const parts = [];
  for (const block of content) {
    if (block?.type === "tool_result") {
      // Shown inside its tool_use card when that card is here.
      if (block.tool_use_id && ctx.hasToolUse(block.tool_use_id)) continue;
      parts.push(
        h(
          `section.card.tool.orphan${block.is_error ? ".is-error" : ""}`,
          null,
          h("header.card-head", null, h("span.tool-name", null, "Tool result")),
          h("div.tool-body", null, longText(contentText(block.content), { limit: 4000 })),
        ),
      );
    } else if (block?.type === "text") {
      // Text Claude echoes as the user (e.g. "[Request interrupted by user]").
      parts.push(h("p.event.muted", null, block.text));
    } else {
      parts.push(jsonDetails(`content: ${block?.type || "unknown"}`, block));
    }
  }
  return parts.length ? h("div.group", null, parts) : null;
}
