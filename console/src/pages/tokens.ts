// API tokens (admins only): create one (its secret is shown once), list, revoke.

import { api, call } from "../api/client";
import { button, field, h, input, replace, section, select, table, time } from "../dom";
import { formError, onSubmit, showProblem } from "../forms";
import { session } from "../session";
import { type Page, refresh } from "./page";

export const tokens: Page = async ({ main }) => {
  const list = await call(api.GET("/v1/tokens"));
  const error = h("div", null, formError());
  const created = h("div", { "aria-live": "polite" });
  const role = select(["viewer", "admin"], "viewer", { name: "role" });
  const comment = input({ name: "comment" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "New token" },
    field("Role", "/role", role),
    field("Comment", "/comment", comment),
    h("button", { type: "submit", "data-write": true }, "Create token"),
    formError(),
  );
  onSubmit(form, async () => {
    const t = await call(api.POST("/v1/tokens", { body: { role: role.value as "admin" | "viewer", comment: comment.value } }));
    replace(
      created,
      h(
        "div",
        { class: "notice" },
        h("p", null, `Token ${t.id} (${t.role}) created. Copy its secret now: it is not shown again.`),
        h("code", { class: "secret" }, t.token),
      ),
    );
  });
  main.append(
    h("h1", null, "Tokens"),
    section("New token", form, created),
    section(
      "Tokens",
      error,
      table(
        "API tokens",
        [
          ["Id", (t) => t.id],
          ["Role", (t) => t.role],
          ["Comment", (t) => t.comment],
          ["Created", (t) => time(t.created_at)],
          [
            "",
            (t) =>
              t.id === session()?.id
                ? h("span", { class: "hint" }, "this session")
                : button(
                    "Revoke",
                    async () => {
                      if (!confirm(`Revoke token ${t.id}?`)) return;
                      try {
                        await call(api.DELETE("/v1/tokens/{id}", { params: { path: { id: t.id } } }));
                        refresh();
                      } catch (err) {
                        showProblem(error, err);
                      }
                    },
                    { "data-write": true, class: "danger", "aria-label": `Revoke ${t.id}` },
                  ),
          ],
        ],
        list.items,
      ),
    ),
  );
};
