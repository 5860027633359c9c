// How a message or a session travelled, shown the same way on every screen.

import type { Schemas } from "./api/client";
import { type Child, h } from "./dom";

type Marks = Schemas["Marks"];
type Tls = Schemas["TlsView"];

/** The marks beside a subject: "TLS" when a leg (in or out) was encrypted, "plain" when one was not. */
export function tlsMark(m: Marks): Child {
  return [
    m.tls ? h("span", { class: "mark mark-tls", title: "A leg travelled over TLS" }, "TLS") : null,
    m.tls && m.plaintext ? " " : null,
    m.plaintext ? h("span", { class: "mark mark-plain", title: "A leg travelled in plaintext" }, "plain") : null,
  ];
}

/** The policy marks: a violation (a refusal or deferral by a rule) and a TLS fallback. */
export function policyMarks(m: Marks): Child[] {
  return [
    m.violation ? h("span", { class: "mark mark-violation", title: "A TLS rule refused or deferred it" }, "violation") : null,
    m.tls_fallback ? h("span", { class: "mark mark-fallback", title: "Delivered in plaintext after TLS failed" }, "fallback") : null,
  ];
}

export function status(s: string): Child {
  return h("span", { class: `status status-${s}` }, s);
}

export function tlsText(t: Tls | null | undefined): string {
  if (!t) return "";
  const certs = [
    t.client_certificate ? `client certificate ${t.client_certificate}` : "",
    t.server_certificate ? `server certificate ${t.server_certificate}` : "",
  ].filter(Boolean);
  return [`${t.version} ${t.cipher} (${t.key_exchange})`, ...certs].join(", ");
}
