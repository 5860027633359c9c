// Trusted CAs: the certificates that verify clients' certificates inbound and servers'
// certificates outbound (`verify`), beside nothing else.

import { api, call, callTagged, ifMatch } from "../api/client";
import { field, h, section, writeButton } from "../dom";
import { act, formError, onSubmit } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";

export const trust: Page = async ({ main }) => {
  const { data: t, etag } = await callTagged(api.GET("/v1/trust"));
  const pems = t.ca_pems ?? [];
  // Against the list as shown: if another admin changed it meanwhile, the API refuses (412).
  const save = (ca_pems: string[]) => call(api.PUT("/v1/trust", { body: { ca_pems }, headers: ifMatch(etag) }));
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
              h("details", null, h("summary", null, `CA ${i + 1} (${pem.length} characters of PEM)`), h("pre", { tabindex: 0 }, pem)),
              writeButton("Remove", () => act(listError, `Remove CA ${i + 1}?`, () => save(pems.filter((_, j) => j !== i))), {
                class: "danger",
                "aria-label": `Remove CA ${i + 1}`,
              }),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No trusted CA: nothing verifies."),
  );
  if (!isAdmin()) return;
  const pem = h("textarea", { name: "pem", rows: 8, spellcheck: "false", placeholder: "-----BEGIN CERTIFICATE-----" });
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
