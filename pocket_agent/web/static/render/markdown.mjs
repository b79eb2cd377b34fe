/** Assistant text as sanitised Markdown (marked, then DOMPurify). Huge texts are shown
 * as plain text instead, so parsing never freezes the page. */

import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";
import { h } from "../dom.mjs";
import { longText } from "./text.mjs";

const MARKDOWN_LIMIT = 100000;

marked.setOptions({ gfm: true, breaks: false, async: false });
// Raw HTML in the model's text is shown as text, never parsed: nothing to sanitise away
// (a <style> would still make the CSP log an error while DOMPurify parses it).
marked.use({
  renderer: {
    html(token) {
      return escapeHtml(typeof token === "string" ? token : token.text);
    },
  },
});

/** @param {string} text */
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName !== "A") return;
  // A link back into this app (say "#token=…", planted in a file Claude read) would act
  // on the pairing or the page: it stays text. Other links open outside the app and
  // never leak the page address.
  let target = null;
  try {
    target = new URL(node.getAttribute("href") || "", location.href);
  } catch {
    target = null;
  }
  if (!target || target.origin === location.origin) {
    node.removeAttribute("href");
    return;
  }
  node.setAttribute("target", "_blank");
  node.setAttribute("rel", "noopener noreferrer");
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
