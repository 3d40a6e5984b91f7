// Sign-in: the API key is checked against the API, then kept in sessionStorage (gone when the tab
// closes) and sent only as the X-API-Key header.

import { auth, request } from "./api.js";
import { h } from "./dom.js";

export function mountSignIn(root, done) {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off",
    placeholder: "sk-…", required: true, "aria-describedby": "sign-in-error" });
  const error = h("p", { id: "sign-in-error", class: "field-error", role: "alert" });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "card sign-in", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use an API key from ", h("code", {}, "spectra admin create-key --tenant NAME"),
      ". It stays in this tab only (sessionStorage) and is sent as the X-API-Key header."),
    h("label", { for: "api-key" }, "API key"), input, error, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.textContent = "";
    button.disabled = true;
    try {
      await request("/v1/methods", { key });
      auth.signIn(key);
      done();
    } catch (exc) {
      error.textContent = exc.status === 401 ? "This API key is not valid." : `Sign-in failed: ${exc.message}`;
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  input.focus();
  return () => {};
}
