// Trusted CAs: the certificates that verify clients' certificates inbound and servers'
// certificates outbound (`verify`), beside nothing else.

import { api, call } from "../api/client";
import { button, field, h, section } from "../dom";
import { formError, onSubmit, showProblem } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";

export const trust: Page = async ({ main }) => {
  const t = await call(api.GET("/v1/trust"));
  const pems = t.ca_pems ?? [];
  const save = (ca_pems: string[]) => call(api.PUT("/v1/trust", { body: { ca_pems } }));
  const listError = h("div", null, formError());
  main.append(
    h("h1", null, "Trusted CAs"),
    listError,
    pems.length
      ? h(
          "ol",
          { class: "pems" },
          pems.map((pem, i) =>
            h(
              "li",
              null,
              h("details", null, h("summary", null, `CA ${i + 1} (${pem.length} characters of PEM)`), h("pre", null, pem)),
              isAdmin()
                ? button(
                    "Remove",
                    async () => {
                      if (!confirm(`Remove CA ${i + 1}?`)) return;
                      try {
                        await save(pems.filter((_, j) => j !== i));
                        refresh();
                      } catch (err) {
                        showProblem(listError, err);
                      }
                    },
                    { "data-write": true, class: "danger", "aria-label": `Remove CA ${i + 1}` },
                  )
                : null,
            ),
          ),
        )
      : h("p", { class: "empty" }, "No trusted CA: nothing verifies."),
  );
  if (!isAdmin()) return;
  const pem = h("textarea", { name: "pem", rows: 8, spellcheck: false, placeholder: "-----BEGIN CERTIFICATE-----" });
  const form = h(
    "form",
    { "aria-label": "Add a CA" },
    field("CA certificate (PEM)", `/ca_pems/${pems.length}`, pem),
    formError(),
    h("button", { type: "submit", "data-write": true }, "Add CA"),
  );
  onSubmit(form, async () => {
    await save([...pems, pem.value.trim()]);
    refresh();
  });
  main.append(section("Add a CA", form));
};
