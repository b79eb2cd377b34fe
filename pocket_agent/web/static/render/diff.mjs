/** Unified diffs as coloured lines, from the server's preview or built from an
 * Edit / MultiEdit / Write input when no preview exists. */

import { h } from "../dom.mjs";

const LINE_LIMIT = 1500;

/**
 * Render a unified diff ("---", "+++", "@@", "+", "-", " " lines).
 * @param {string} diff
 * @returns {HTMLElement}
 */
export function diffView(diff) {
  const lines = String(diff ?? "").replace(/\n$/, "").split("\n");
  const box = h("div.diff", { role: "group", "aria-label": "Diff" });
  const show = (from, to) => {
    const frag = document.createDocumentFragment();
    for (const line of lines.slice(from, to)) frag.append(diffLine(line));
    return frag;
  };
  box.append(show(0, LINE_LIMIT));
  if (lines.length > LINE_LIMIT) {
    const more = h(
      "button.link.show-all",
      {
        type: "button",
        onClick: () => {
          more.remove();
          box.append(show(LINE_LIMIT, lines.length));
        },
      },
      `Show all (${lines.length - LINE_LIMIT} more lines)`,
    );
    box.append(more);
  }
  return box;
}

function diffLine(line) {
  let kind = "ctx";
  if (line.startsWith("+++") || line.startsWith("---")) kind = "file";
  else if (line.startsWith("@@")) kind = "hunk";
  else if (line.startsWith("+")) kind = "add";
  else if (line.startsWith("-")) kind = "del";
  else if (line.startsWith("…") || line.startsWith("\\")) kind = "note";
  return h(`div.dl.${kind}`, null, line || " ");
}

/**
 * A diff made from a tool's input alone (no file contents: it shows what the tool
 * writes, not the file around it).
 * @param {string} tool "Edit", "MultiEdit" or "Write"
 * @param {object} input the tool_use input
 * @returns {string|null} unified-diff-like text, or null when the input has no edit
 */
export function diffFromInput(tool, input) {
  if (!input || typeof input !== "object") return null;
  const path = input.file_path || input.path || "file";
  const lines = (text) => String(text ?? "").replace(/\n$/, "").split("\n");
  const out = [];
  if (tool === "Write" && typeof input.content === "string") {
    out.push("--- /dev/null", `+++ b/${path}`, `@@ -0,0 +1,${lines(input.content).length} @@`);
    for (const l of lines(input.content)) out.push(`+${l}`);
    return out.join("\n");
  }
  const edits =
    tool === "MultiEdit" && Array.isArray(input.edits)
      ? input.edits
      : tool === "Edit"
        ? [input]
        : [];
  if (!edits.length) return null;
  out.push(`--- a/${path}`, `+++ b/${path}`);
  for (const edit of edits) {
    const old = lines(edit?.old_string);
    const neu = lines(edit?.new_string);
    out.push(`@@ -${old.length} +${neu.length} @@${edit?.replace_all ? " (all)" : ""}`);
    for (const l of old) out.push(`-${l}`);
    for (const l of neu) out.push(`+${l}`);
  }
  return out.join("\n");
}
