// One message: envelope, headers we track, the policy version, its source and every delivery
// (host, IP and "(via TLS)"), the TLS details, every attempt and deferral reason, the timeline.

import { api, call, type Schemas } from "../api/client";
import { facts, h, section, table, time, yesNo } from "../dom";
import { policyMarks, status, tlsMark, tlsText } from "../marks";
import type { Page } from "./page";

export const message: Page = async ({ main, arg }) => {
  const id = arg ?? "";
  const m = await call(api.GET("/v1/messages/{id}", { params: { path: { id } } }));
  main.append(
    h("p", null, h("a", { href: "#/messages" }, "← Message tracking")),
    h("h1", null, tlsMark(m.marks), " ", m.subject ?? "(no subject)"),
    section(
      "Envelope",
      facts([
        ["Queue id", m.id],
        ["Status", [status(m.status), " ", policyMarks(m.marks)]],
        ["From", m.sender || "<>"],
        ["To", m.recipients.join(", ")],
        ["Subject", m.subject],
        ["Message-ID", m.message_id],
        ["Size", m.size != null ? `${m.size} bytes` : null],
        ["Received", time(m.received_at)],
        ["Worker", m.worker],
        ["Policy version", String(m.policy_version)],
        ["Violations", m.violations?.length ? m.violations.join(", ") : null],
        ["Rejections", m.rejections.length ? h("ul", null, m.rejections.map((r) => h("li", null, r))) : null],
        ["DSN", m.dsn ? h("a", { href: `#/messages/${encodeURIComponent(m.dsn)}` }, m.dsn) : null],
      ]),
    ),
    section(
      "Source",
      m.source
        ? facts([
            ["Client", h("span", { class: "via" }, m.source.display)],
            ["HELO", m.source.helo],
            ["TLS", tlsText(m.source.tls) || "none"],
          ])
        : h("p", { class: "empty" }, "No source recorded."),
    ),
    section(
      "Deliveries",
      m.deliveries.length
        ? m.deliveries.map((d) =>
            h(
              "article",
              { class: "delivery" },
              h("h3", null, d.recipient, " ", status(d.status)),
              facts([
                ["Delivered to", d.display ? h("span", { class: "via" }, d.display) : null],
                ["Host", d.host],
                ["IP", d.ip],
                ["TLS", tlsText(d.tls)],
                ["Reason", d.reason],
              ]),
              table(
                `Attempts for ${d.recipient}`,
                [
                  ["At", (a) => time(a.at)],
                  ["Host", (a) => a.host ?? ""],
                  ["IP", (a) => a.ip ?? ""],
                  ["TLS", (a) => tlsText(a.tls) || "none"],
                  ["Fallback", (a) => yesNo(a.tls_fallback)],
                  ["Violation", (a) => a.violation ?? ""],
                  ["Policy", (a) => policyOf(a)],
                  ["Reply", (a) => h("code", null, a.reply)],
                ],
                d.attempts,
                "No attempt yet.",
              ),
            ),
          )
        : h("p", { class: "empty" }, "No delivery: nothing was accepted for relaying."),
    ),
    section(
      "Timeline",
      table(
        "Timeline",
        [
          ["At", (t) => time(t.at)],
          ["Event", (t) => t.kind],
          ["Detail", (t) => t.detail],
          ["Worker", (t) => t.worker],
          ["Policy version", (t) => String(t.policy_version)],
        ],
        m.timeline,
      ),
      m.timeline_dropped ? h("p", { class: "hint" }, `${m.timeline_dropped} older entries were dropped.`) : null,
    ),
  );
};

/** What set an attempt's TLS level: a local rule, the default, or an MTA-STS policy (its id,
 * mode and what it found wrong). */
function policyOf(a: Schemas["AttemptView"]): string {
  if (a.policy_source !== "mta-sts") return a.policy_source ?? "default";
  const failure = a.sts_failure ? `: ${a.sts_failure}` : "";
  return `MTA-STS ${a.sts_mode ?? ""} (id ${a.sts_policy_id ?? "?"})${failure}`;
}
