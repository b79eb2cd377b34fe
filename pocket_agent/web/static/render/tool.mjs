/** A tool call as a card: what was asked (a diff for Edit/Write, the command for Bash,
 * else the input), and below it the tool_result once it arrived. */

import { h } from "../dom.mjs";
import { diffView, diffFromInput } from "./diff.mjs";
import { jsonDetails } from "./json.mjs";
import { contentText, longText } from "./text.mjs";

const EDIT_TOOLS = new Set(["Edit", "MultiEdit", "Write"]);
const RESULT_CHARS = 4000;

/**
 * @param {{id: string, name: string, input: object}} block the tool_use block
 * @param {{toolResult: (id: string) => any, permission: (id: string) => any}} ctx
 * @returns {HTMLElement}
 */
export function toolCard(block, ctx) {
  const name = String(block.name || "tool");
  const input = block.input && typeof block.input === "object" ? block.input : {};
  const result = block.id ? ctx.toolResult(block.id) : null;
  const permission = block.id ? ctx.permission(block.id) : null;
  const card = h("section.card.tool", { dataset: { toolUseId: block.id || "", tool: name } });
  card.append(h("header.card-head", null, h("span.tool-name", null, name), h("span.tool-target", null, target(name, input))));
  card.append(toolBody(name, input, permission));
  if (result) card.append(resultView(name, result));
  else card.append(h("p.tool-wait.muted", null, "…"));
  return card;
}

/**
 * The body of a tool card or permission sheet: a diff, a command, or the input.
 * @param {string} name
 * @param {object} input
 * @param {object|null} permission a permission_request with a preview, if any
 * @returns {HTMLElement}
 */
export function toolBody(name, input, permission) {
  const preview = permission?.preview;
  if (preview?.kind === "diff" && preview.diff) {
    return h("div.tool-body", null, diffView(preview.diff), preview.note ? h("p.note", null, preview.note) : null);
  }
  if (preview?.kind === "diff" && preview.note) {
    const built = diffFromInput(name, input);
    return h("div.tool-body", null, h("p.note", null, preview.note), built ? diffView(built) : null);
  }
  if (EDIT_TOOLS.has(name)) {
    const built = diffFromInput(name, input);
    if (built) return h("div.tool-body", null, diffView(built));
  }
  if (name === "Bash" || preview?.kind === "command") {
    const command = preview?.command ?? input.command ?? "";
    const description = preview?.description ?? input.description;
    return h(
      "div.tool-body",
      null,
      description ? h("p.muted", null, description) : null,
      h("div.command", null, h("span.prompt-sign", { "aria-hidden": "true" }, "$ "), longText(String(command), { className: "mono cmd" })),
      preview?.note ? h("p.note", null, preview.note) : null,
    );
  }
  return h("div.tool-body", null, jsonDetails("Input", input, "raw input"));
}

function resultView(name, { block }) {
  const text = contentText(block.content);
  const failed = Boolean(block.is_error);
  return h(
    `div.tool-result${failed ? ".is-error" : ""}`,
    null,
    h("p.result-label", null, failed ? "Error" : name === "Bash" ? "Output" : "Result"),
    text ? longText(text, { limit: RESULT_CHARS }) : h("p.muted", null, "(no output)"),
  );
}

function target(name, input) {
  if (typeof input.file_path === "string") return input.file_path;
  if (typeof input.path === "string") return input.path;
  if (typeof input.pattern === "string") return input.pattern;
  if (typeof input.url === "string") return input.url;
  if (name === "Bash" && typeof input.description === "string") return input.description;
  return "";
}
