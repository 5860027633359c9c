// API tokens (admins only): create one (its secret is shown once), list, revoke.

import { api, call, type Schemas } from "../api/client";
import { field, h, input, section, select, table, time, writeButton } from "../dom";
import { act, formError, onSubmit } from "../forms";
import { session } from "../session";
import { type Page, refresh } from "./page";

/** The token just created: its secret is shown once, on the screen drawn after it. */
let created: Schemas["NewToken"] | null = null;

export const tokens: Page = async ({ main }) => {
  const list = await call(api.GET("/v1/tokens"));
  const error = h("div", null, formError());
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
    created = await call(api.POST("/v1/tokens", { body: { role: role.value as Schemas["Role"], comment: comment.value } }));
    refresh();
  });
  const shown = created;
  created = null;
  main.append(
    h("h1", null, "Tokens"),
    section(
      "New token",
      form,
      shown
        ? h(
            "div",
            { class: "notice", role: "status" },
            h("p", null, `Token ${shown.id} (${shown.role}) created. Copy its secret now: it is not shown again.`),
            h("code", { class: "secret" }, shown.token),
          )
        : null,
    ),
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
                : writeButton(
                    "Revoke",
                    () => act(error, `Revoke token ${t.id}?`, () => call(api.DELETE("/v1/tokens/{id}", { params: { path: { id: t.id } } }))),
                    { class: "danger", "aria-label": `Revoke ${t.id}` },
                  ),
          ],
        ],
        list.items,
      ),
    ),
  );
};
