// TLS reports (RFC 8460): the reports Postern builds about its deliveries to each recipient
// domain and where they went; the MTA-STS policy published for the relay domains and its DNS
// records; the reports other senders sent about the relay domains.

import { api, call } from "../api/client";
import { h, section, table, time, writeButton } from "../dom";
import { act, formError } from "../forms";
import type { Page } from "./page";
import { pager, text } from "./paging";

const today = () => new Date().toISOString().slice(0, 10);

export const reports: Page = async ({ main, params }) => {
  const [sent, received, published] = await Promise.all([
    call(api.GET("/v1/reports/tls")),
    call(api.GET("/v1/reports/tls/received", { params: { query: { cursor: text(params, "cursor"), limit: 50 } } })),
    call(api.GET("/v1/published/mta-sts")),
  ]);
  const error = h("div", null, formError());
  const build = () =>
    act(error, null, () => call(api.POST("/v1/reports/tls/build", { body: { date: today(), send: false } })));
  main.append(
    h("h1", null, "TLS reports"),
    section(
      "Reports about our deliveries",
      h("p", null, "One report per recipient domain and UTC day, sent to the addresses its _smtp._tls record names."),
      error,
      writeButton("Build today's reports", build),
      table(
        "Reports built, newest day first",
        [
          ["Day", (r) => r.date],
          ["Domain", (r) => r.policy_domain],
          ["Sessions", (r) => `${r.successful_sessions} ok, ${r.failed_sessions} failed`],
          ["Status", (r) => (r.status === "not_sent" ? h("span", { class: "mark mark-violation" }, "not sent") : r.status.replace("_", " "))],
          ["Sent to", (r) => h("ul", null, r.deliveries.map((d) => h("li", null, `${d.rua}: ${d.ok ? "" : "failed, "}${d.detail}`)))],
          ["Built", (r) => time(r.built_at)],
        ],
        sent.items,
        "No report built yet (reports cover deliveries to recipient domains' MX hosts).",
      ),
    ),
    section(
      "Our MTA-STS policy",
      published.policy
        ? [
            h("pre", null, published.policy),
            table(
              "What to publish in DNS for each relay domain",
              [
                ["Domain", (d) => d.domain],
                ["Policy host (the control plane's HTTPS address)", (d) => d.policy_host],
                ["TXT record", (d) => h("code", null, `${d.txt_name} TXT "${d.txt_record}"`)],
              ],
              published.domains,
              "No relay domain to publish it for.",
            ),
          ]
        : h("p", { class: "empty" }, "No MTA-STS policy is published (settings: published mta sts)."),
    ),
    section(
      "Reports about our domains",
      h("p", null, "What other senders saw when they delivered to the relay domains."),
      table(
        "Reports received, newest first",
        [
          ["Organisation", (r) => r.organization_name],
          ["Period", (r) => `${r.start_datetime} to ${r.end_datetime}`],
          ["Domains", (r) => r.policy_domains.join(", ")],
          ["Sessions", (r) => (r.failed_sessions > 0 ? h("span", { class: "mark mark-violation" }, `${r.successful_sessions} ok, ${r.failed_sessions} failed`) : `${r.successful_sessions} ok`)],
          ["Via", (r) => `${r.via} (${r.source})`],
          ["Received", (r) => time(r.received_at)],
        ],
        received.items,
        "No report received yet.",
      ),
      pager("reports", params, received.next_cursor),
    ),
  );
};
