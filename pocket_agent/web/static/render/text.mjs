/** Long text shown without freezing the page: the first part at once, the rest only
 * when asked ("Show all"), and then in a plain text node (no layout-heavy markup). */

import { h } from "../dom.mjs";
import { bytes } from "../format.mjs";

export const PREVIEW_CHARS = 20000;

/**
 * A <pre> holding `text`, cut at PREVIEW_CHARS with a "Show all" button.
 * @param {string} text
 * @param {{className?: string, limit?: number}} [options]
 * @returns {HTMLElement}
 */
export function longText(text, { className = "mono", limit = PREVIEW_CHARS } = {}) {
  const value = typeof text === "string" ? text : String(text ?? "");
  const pre = h(`pre.${className}`);
  if (value.length <= limit) {
    pre.textContent = value;
    return pre;
  }
  pre.textContent = value.slice(0, limit);
  const more = h(
    "button.link.show-all",
    {
      type: "button",
      onClick: () => {
        pre.textContent = value;
        more.remove();
      },
    },
    `Show all (${bytes(new TextEncoder().encode(value).length)})`,
  );
  return h("div.long", null, pre, h("p.cut", null, `… ${value.length - limit} more characters `, more));
}

/**
 * Text of a tool_result content: a string, or a list of {type: "text", text} blocks.
 * @param {any} content
 * @returns {string}
 */
export function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => (typeof part === "string" ? part : part?.type === "text" ? part.text : part?.type === "image" ? "[image]" : JSON.stringify(part)))
      .join("\n");
  }
  return content == null ? "" : JSON.stringify(content, null, 2);
}
