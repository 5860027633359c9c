// Message tracking: every filter of GET /v1/messages, newest first, paged with the cursor.

import { api, call } from "../api/client";
import { field, h, input, select, table, time } from "../dom";
import { formError, onSubmit, showProblem, values } from "../forms";
import { policyMarks, status, tlsMark } from "../marks";
import { go, type Page } from "./page";
import { pager, text, flag } from "./paging";

const TEXT_FILTERS: [string, string, string?][] = [
  ["sender", "Sender"],
  ["recipient", "Recipient"],
  ["subject", "Subject contains"],
  ["queue_id", "Queue id"],
  ["message_id", "Message-ID"],
  ["worker", "Worker"],
  ["since", "Since", "RFC 3339, e.g. 2026-12-01T00:00:00Z"],
  ["until", "Until", "RFC 3339"],
];
const STATUSES = ["", "rejected", "deferred", "queued", "bounced", "delivered"] as const;
const FLAGS: [string, string][] = [
  ["tls", "Over TLS"],
  ["plaintext", "In plaintext"],
  ["violation", "Policy violation"],
];

export const messages: Page = async ({ main, params }) => {
  const form = h(
    "form",
    { class: "filters", "aria-label": "Message filters" },
    TEXT_FILTERS.map(([name, label, hint]) => field(label, name, input({ name, value: params.get(name) ?? "" }), hint)),
    field("Status", "status", select([...STATUSES], params.get("status"), { name: "status" })),
    FLAGS.map(([name, label]) => field(label, name, select(["", "true", "false"], params.get(name), { name }))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search"), h("a", { href: "#/messages" }, "Clear")),
    formError(),
  );
  onSubmit(form, async () => go("messages", values(form) as Record<string, string>));
  const results = h("div", { "aria-live": "polite" });
  main.append(h("h1", null, "Message tracking"), form, results);

  try {
    const page = await call(
      api.GET("/v1/messages", {
        params: {
          query: {
            sender: text(params, "sender"),
            recipient: text(params, "recipient"),
            subject: text(params, "subject"),
            queue_id: text(params, "queue_id"),
            message_id: text(params, "message_id"),
            worker: text(params, "worker"),
            since: text(params, "since"),
            until: text(params, "until"),
            status: text(params, "status") as Exclude<(typeof STATUSES)[number], ""> | undefined,
            tls: flag(params, "tls"),
            plaintext: flag(params, "plaintext"),
            violation: flag(params, "violation"),
            cursor: text(params, "cursor"),
            limit: 50,
          },
        },
      }),
    );
    results.append(
      table(
        "Messages, newest first",
        [
          ["Received", (m) => time(m.received_at)],
          ["Subject", (m) => h("span", { class: "subject" }, tlsMark(m.marks), " ", m.subject ?? "(no subject)")],
          ["From", (m) => m.sender || "<>"],
          ["To", (m) => m.recipients.join(", ")],
          ["Status", (m) => [status(m.status), " ", policyMarks(m.marks)]],
          ["Queue id", (m) => h("a", { href: `#/messages/${encodeURIComponent(m.id)}` }, m.id)],
        ],
        page.items,
        // A page may be empty while later ones are not (the API stops after a bounded scan).
        page.next_cursor ? "No match in this stretch; try the next page." : "No message matches.",
      ),
      pager("messages", params, page.next_cursor),
    );
  } catch (err) {
    // A filter the API refused (a malformed date, say) is shown beside that filter.
    showProblem(form, err);
  }
};
