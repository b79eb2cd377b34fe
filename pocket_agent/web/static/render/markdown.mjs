/** Assistant text as sanitised Markdown (marked, then DOMPurify). Huge texts are shown
 * as plain text instead, so parsing never freezes the page. */

import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";
import { h } from "../dom.mjs";
import { longText } from "./text.mjs";

const MARKDOWN_LIMIT = 100000;

marked.setOptions({ gfm: true, breaks: false, async: false });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links open outside the app and never leak the page address.
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/**
 * @param {string} text Markdown from the model
 * @returns {HTMLElement}
 */
export function markdown(text) {
  const source = String(text ?? "");
  if (source.length > MARKDOWN_LIMIT) return longText(source, { className: "plain" });
  const el = h("div.md");
  try {
    const html = marked.parse(source);
    el.append(
      DOMPurify.sanitize(html, {
        RETURN_DOM_FRAGMENT: true,
        FORBID_TAGS: ["style", "form", "input", "button", "img"],
        FORBID_ATTR: ["style"],
      }),
    );
  } catch {
    el.replaceChildren(longText(source, { className: "plain" }));
  }
  return el;
}
