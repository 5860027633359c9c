// Relay domains (mail for them is accepted and sent to their next hop) and trusted networks
// (clients that may relay anywhere): PUT /v1/relay replaces both at once.

import { api, call, callTagged, ifMatch } from "../api/client";
import { field, h, section, table } from "../dom";
import { formError, onSubmit } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";

export const relay: Page = async ({ main }) => {
  const { data: r, etag } = await callTagged(api.GET("/v1/relay"));
  const domains = r.domains ?? [];
  const networks = r.networks ?? [];
  main.append(
    h("h1", null, "Relay"),
    section(
      "Relay domains",
      table(
        "Relay domains",
        [
          ["Domain", (d) => h("code", null, d.domain)],
          ["Next hop", (d) => h("code", null, d.next_hop)],
        ],
        domains,
        "No relay domain.",
      ),
    ),
    section(
      "Trusted networks",
      table("Trusted networks", [["Network", (n: string) => h("code", null, n)]], networks, "No trusted network."),
    ),
  );
  if (!isAdmin()) return;

  const domainText = h("textarea", { name: "domains", rows: 6, spellcheck: "false" });
  domainText.value = domains.map((d) => `${d.domain} ${d.next_hop}`).join("\n");
  const networkText = h("textarea", { name: "networks", rows: 6, spellcheck: "false" });
  networkText.value = networks.join("\n");
  const form = h(
    "form",
    { "aria-label": "Edit relay" },
    field(
      "Relay domains",
      "/domains",
      domainText,
      "One per line: the domain, a space, its next hop (host, [host]:port or mx). An error's /domains/N is the N+1th non-empty line.",
    ),
    field("Trusted networks", "/networks", networkText, "One address or CIDR per line."),
    formError(),
    h("button", { type: "submit", "data-write": true }, "Save relay"),
  );
  onSubmit(form, async () => {
    const lines = (t: string) => t.split("\n").map((l) => l.trim()).filter(Boolean);
    await call(
      api.PUT("/v1/relay", {
        body: {
          domains: lines(domainText.value).map((l) => {
            const [domain = "", ...hop] = l.split(/\s+/);
            return { domain, next_hop: hop.join(" ") };
          }),
          networks: lines(networkText.value),
        },
        headers: ifMatch(etag),
      }),
    );
    refresh();
  });
  main.append(section("Edit", form));
};
