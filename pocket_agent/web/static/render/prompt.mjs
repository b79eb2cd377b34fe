/** The user's prompt (direction "client"), as a right-aligned bubble. */

import { h } from "../dom.mjs";
import { longText } from "./text.mjs";

/**
 * @param {object} message {type: "user_prompt", prompt, options}
 * @returns {HTMLElement|undefined}
 */
export function renderPrompt(message) {
  if (message.type !== "user_prompt") return undefined;
  const options = message.options && typeof message.options === "object" ? message.options : {};
  const tags = [options.model, options.permission_mode].filter((t) => typeof t === "string");
  return h(
    "div.bubble.user",
    null,
    longText(String(message.prompt ?? ""), { className: "plain" }),
    tags.length ? h("p.tags", null, tags.join(" · ")) : null,
  );
}
