/** Any value as collapsed, pretty-printed JSON: the fallback for what the app does not
 * know, so an unknown record type never breaks the page. */

import { h } from "../dom.mjs";
import { longText } from "./text.mjs";

/**
 * A <details> whose summary is `title` and whose body is the JSON, built only when
 * opened (a huge record costs nothing until then).
 * @param {string} title
 * @param {any} value
 * @param {string} [className]
 * @returns {HTMLElement}
 */
export function jsonDetails(title, value, className = "raw") {
  const details = h(`details.${className}`, null, h("summary", null, title));
  let built = false;
  details.addEventListener("toggle", () => {
    if (!details.open || built) return;
    built = true;
    let text;
    try {
      text = JSON.stringify(value, null, 2);
    } catch {
      text = String(value);
    }
    details.append(longText(text ?? "null"));
  });
  return details;
}
