/** The pairing screen: why we are here, and a Token box with Pair as the fallback to
 * scanning the QR code. */

import { h } from "../dom.mjs";

/**
 * @param {{message?: string, onPair: (token: string) => void}} options
 * @returns {HTMLElement}
 */
export function pairingScreen({ message, onPair }) {
  const input = h("input#token", {
    type: "password",
    name: "token",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
  });
  const form = h(
    "form.pair-form",
    {
      onSubmit: (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (token) onPair(token);
      },
    },
    h("label", { for: "token" }, "Token"),
    input,
    h("button.primary.big", { type: "submit" }, "Pair"),
  );
  return h(
    "main.screen.pairing",
    null,
    h("h1", null, "Pair this phone"),
    message ? h("p.alert", { role: "alert" }, message) : null,
    h(
      "p",
      null,
      "Scan the QR code that ",
      h("code", null, "pocket-agent-server token"),
      " prints on the server, or paste the token here.",
    ),
    form,
  );
}
