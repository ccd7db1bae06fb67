// The token form: shown whenever the API answers 401. The token is kept in sessionStorage
// (gone when the tab closes) and sent as `Authorization: Bearer` from then on.

import { h } from "../dom.js";

export function signInForm(detail, onToken) {
  const field = h("input", {
    id: "token-field",
    name: "token",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
  });
  return h(
    "section",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", {}, "This daemon has ", h("code", {}, "[auth] enabled"), ": give a token to see its projects."),
    h("p", { class: "error", role: "alert" }, detail),
    h(
      "form",
      {
        on: {
          submit: (event) => {
            event.preventDefault();
            const value = field.value.trim();
            if (value) onToken(value);
          },
        },
      },
      h("label", { for: "token-field" }, "Token"),
      field,
      h("button", { type: "submit" }, "Sign in"),
    ),
    h("p", { class: "muted" }, "The token stays in this tab only (sessionStorage); closing the tab forgets it."),
  );
}
