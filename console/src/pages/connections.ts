// SMTP sessions, failed handshakes included (GET /v1/connections).

import { api, call } from "../api/client";
import { field, h, input, select, table, time } from "../dom";
import { formError, onSubmit, showProblem, values } from "../forms";
import { tlsText } from "../marks";
import { go, type Page } from "./page";
import { flag, pager, text } from "./paging";

export const connections: Page = async ({ main, params }) => {
  const form = h(
    "form",
    { class: "filters", "aria-label": "Connection filters" },
    field("Client IP", "ip", input({ name: "ip", value: params.get("ip") ?? "" })),
    field("Since", "since", input({ name: "since", value: params.get("since") ?? "" }), "RFC 3339"),
    field("Until", "until", input({ name: "until", value: params.get("until") ?? "" }), "RFC 3339"),
    field("TLS handshake failed", "tls_failed", select(["", "true", "false"], params.get("tls_failed"), { name: "tls_failed" })),
    field(
      "Bytes after STARTTLS",
      "starttls_leftovers",
      select(["", "true", "false"], params.get("starttls_leftovers"), { name: "starttls_leftovers" }),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search"), h("a", { href: "#/connections" }, "Clear")),
    formError(),
  );
  onSubmit(form, async () => go("connections", values(form) as Record<string, string>));
  main.append(h("h1", null, "Connections"), form);
  try {
    const page = await call(
      api.GET("/v1/connections", {
        params: {
          query: {
            ip: text(params, "ip"),
            since: text(params, "since"),
            until: text(params, "until"),
            tls_failed: flag(params, "tls_failed"),
            starttls_leftovers: flag(params, "starttls_leftovers"),
            cursor: text(params, "cursor"),
            limit: 50,
          },
        },
      }),
    );
    main.append(
      table(
        "SMTP sessions, newest first",
        [
          ["Started", (c) => time(c.started_at)],
          ["Client", (c) => c.display],
          ["HELO", (c) => c.helo ?? ""],
          ["TLS", (c) => (c.tls_failure ? h("span", { class: "mark mark-violation" }, `failed: ${c.tls_failure}`) : tlsText(c.tls) || "none")],
          ["Refused", (c) => c.refused ?? ""],
          ["Messages", (c) => String(c.messages)],
          ["After STARTTLS", (c) => (c.starttls_leftovers ? `${c.starttls_leftovers} bytes discarded` : "")],
          ["Worker", (c) => c.worker],
          ["Policy version", (c) => String(c.policy_version)],
        ],
        page.items,
        "No session matches.",
      ),
      pager("connections", params, page.next_cursor),
    );
  } catch (err) {
    showProblem(form, err);
  }
};
