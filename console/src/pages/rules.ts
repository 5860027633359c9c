// The two rule tables (inbound: IP/CIDR or sender domain; outbound: recipient domain), each
// with its default entry, an add/edit dialog, enable/disable and delete, the warnings the API
// gave for each rule, and an "explain" box backed by POST /v1/policy/evaluate.

import { api, call, callTagged, ifMatch, type Schemas } from "../api/client";
import { button, type Child, facts, field, h, input, replace, section, select, table, writeButton } from "../dom";
import { act, dialog, formError, onSubmit, showProblem } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";
import { pager, text } from "./paging";

type Direction = Schemas["Direction"];
type Rule = Schemas["Rule"];
type RuleInput = Schemas["RuleInput"];
type DefaultRule = Schemas["DefaultRule"];
type Warning = Schemas["Warning"];

const LEVELS: Schemas["Level"][] = ["none", "may", "encrypt", "verify"];
const STRENGTHS: Schemas["CipherStrength"][] = ["medium", "high"];

/** The operations of one direction: the paths are literal so the generated types apply. */
function ops(direction: Direction) {
  const inbound = direction === "inbound";
  return {
    list: (cursor?: string) =>
      inbound
        ? call(api.GET("/v1/policy/inbound/rules", { params: { query: { cursor, limit: 100 } } }))
        : call(api.GET("/v1/policy/outbound/rules", { params: { query: { cursor, limit: 100 } } })),
    create: (body: RuleInput) =>
      inbound
        ? call(api.POST("/v1/policy/inbound/rules", { body }))
        : call(api.POST("/v1/policy/outbound/rules", { body })),
    get: (id: string) =>
      inbound
        ? callTagged(api.GET("/v1/policy/inbound/rules/{id}", { params: { path: { id } } }))
        : callTagged(api.GET("/v1/policy/outbound/rules/{id}", { params: { path: { id } } })),
    /** Fails with 412 when the rule changed since `etag` was read. */
    update: (id: string, body: RuleInput, etag: string | undefined) =>
      inbound
        ? call(api.PUT("/v1/policy/inbound/rules/{id}", { params: { path: { id } }, body, headers: ifMatch(etag) }))
        : call(api.PUT("/v1/policy/outbound/rules/{id}", { params: { path: { id } }, body, headers: ifMatch(etag) })),
    remove: (id: string) =>
      inbound
        ? call(api.DELETE("/v1/policy/inbound/rules/{id}", { params: { path: { id } } }))
        : call(api.DELETE("/v1/policy/outbound/rules/{id}", { params: { path: { id } } })),
    getDefault: () =>
      inbound ? call(api.GET("/v1/policy/inbound/default")) : call(api.GET("/v1/policy/outbound/default")),
    setDefault: (body: DefaultRule) =>
      inbound
        ? call(api.PUT("/v1/policy/inbound/default", { body }))
        : call(api.PUT("/v1/policy/outbound/default", { body })),
  };
}

/**
 * The warnings of the last write of each rule, for this tab: the API returns them with each
 * write, and the list does not carry them.
 */
const warnings = {
  key: (d: Direction) => `postern.warnings.${d}`,
  all(d: Direction): Record<string, Warning[]> {
    return JSON.parse(sessionStorage.getItem(this.key(d)) ?? "{}") as Record<string, Warning[]>;
  },
  /** Forgets rules that are gone (when `present` is the whole list). */
  keep(d: Direction, present: Set<string>): void {
    const all = this.all(d);
    for (const id of Object.keys(all)) if (!present.has(id)) delete all[id];
    sessionStorage.setItem(this.key(d), JSON.stringify(all));
  },
  set(d: Direction, id: string, w: Warning[] | undefined): void {
    const all = this.all(d);
    if (w?.length) all[id] = w;
    else delete all[id];
    sessionStorage.setItem(this.key(d), JSON.stringify(all));
  },
};

function warningList(w: Warning[] | undefined): Child {
  if (!w?.length) return null;
  return h(
    "ul",
    { class: "warnings" },
    w.map((x) => h("li", { class: "warning" }, h("strong", null, x.code), ": ", x.detail)),
  );
}

export function rules(direction: Direction): Page {
  return async ({ main, params }) => {
    const op = ops(direction);
    const inbound = direction === "inbound";
    const [def, page] = await Promise.all([op.getDefault(), op.list(text(params, "cursor"))]);
    if (!params.get("cursor") && !page.next_cursor) warnings.keep(direction, new Set(page.items.map((r) => r.id)));
    const shown = warnings.all(direction);

    // A refused row action (a rule another admin removed meanwhile, say) is told above the table.
    const rowError = h("div", null, formError());
    // Opening the dialog reads the rule first; a failure (it was deleted) is told above the table.
    const open = (id: string | null) => editRule(direction, id).catch((err: unknown) => showProblem(rowError, err));

    const ruleTable = table<Rule>(
      `${inbound ? "Inbound" : "Outbound"} rules`,
      [
        [inbound ? "IP, CIDR or sender domain" : "Recipient domain", (r) => h("code", null, r.match)],
        ["Security level", (r) => r.level],
        ["Cipher strength", (r) => r.cipher_strength],
        ["Enabled", (r) => (r.enabled ? "yes" : "no")],
        ["Comment", (r) => r.comment],
        ["Warnings", (r) => warningList(shown[r.id])],
        [
          "",
          (r) =>
            isAdmin()
              ? h(
                  "div",
                  { class: "row-actions" },
                  writeButton("Edit", () => open(r.id), { "aria-label": `Edit ${r.match}` }),
                  writeButton(
                    r.enabled ? "Disable" : "Enable",
                    () =>
                      act(rowError, null, async () => {
                        // Only the switch changes: the rest is the rule as it is now.
                        const { data: now, etag } = await op.get(r.id);
                        const saved = await op.update(r.id, { ...inputOf(now), enabled: !r.enabled }, etag);
                        warnings.set(direction, r.id, saved.warnings);
                      }),
                    { "aria-label": `${r.enabled ? "Disable" : "Enable"} ${r.match}` },
                  ),
                  writeButton(
                    "Delete",
                    () =>
                      act(rowError, `Delete the rule for ${r.match}?`, async () => {
                        await op.remove(r.id);
                        warnings.set(direction, r.id, undefined);
                      }),
                    { class: "danger", "aria-label": `Delete ${r.match}` },
                  ),
                )
              : null,
        ],
      ],
      page.items,
      "No rule: the default applies to every peer.",
    );

    main.append(
      h("h1", null, inbound ? "Inbound rules" : "Outbound rules"),
      h(
        "p",
        { class: "hint" },
        inbound
          ? "TLS rules for mail coming in, by client IP address or network (longest prefix wins) or by sender domain (exact, else the closest .parent rule)."
          : "TLS rules for mail going out, by recipient domain (exact, else the closest .parent rule).",
      ),
      defaultSection(direction, def, op.setDefault),
      section(
        "Rules",
        h("p", null, writeButton("Add rule", () => open(null))),
        rowError,
        ruleTable,
        pager(`rules/${direction}`, params, page.next_cursor),
      ),
      explainBox(direction),
    );
  };
}

function inputOf(r: Rule): RuleInput {
  return { match: r.match, level: r.level, cipher_strength: r.cipher_strength, enabled: r.enabled, comment: r.comment };
}

function defaultSection(
  direction: Direction,
  def: DefaultRule,
  save: (d: DefaultRule) => Promise<Schemas["DefaultResponse"]>,
): HTMLElement {
  const shownWarnings = h("div");
  if (!isAdmin()) {
    return section(
      "Default",
      facts([
        ["Security level", def.level],
        ["Cipher strength", def.cipher_strength ?? "medium"],
      ]),
      shownWarnings,
    );
  }
  const level = select(LEVELS, def.level, { name: "level" });
  const strength = select(STRENGTHS, def.cipher_strength, { name: "cipher_strength" });
  const saved = h("span", { role: "status", class: "hint" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": `${direction} default` },
    field("Security level", "/level", level),
    field("Cipher strength", "/cipher_strength", strength),
    h("button", { type: "submit", "data-write": true }, "Save default"),
    saved,
    formError(),
  );
  onSubmit(form, async () => {
    replace(saved);
    const r = await save({ level: level.value as DefaultRule["level"], cipher_strength: strength.value as Schemas["CipherStrength"] });
    replace(shownWarnings, warningList(r.warnings));
    replace(saved, "Saved.");
  });
  return section("Default", h("p", { class: "hint" }, "Applies to every peer no rule matches."), form, shownWarnings);
}

/** The add/edit dialog; an edit starts from the rule as it is now and fails if it changes meanwhile. */
async function editRule(direction: Direction, id: string | null): Promise<void> {
  const op = ops(direction);
  const current = id ? await op.get(id) : null;
  const rule = current?.data ?? null;
  dialog(rule ? `Edit rule ${rule.match}` : `Add ${direction} rule`, (close) => {
    const match = input({ name: "match", value: rule?.match ?? "", required: true, autocomplete: "off" });
    const level = select(LEVELS, rule?.level ?? "may", { name: "level" });
    const strength = select(STRENGTHS, rule?.cipher_strength ?? "medium", { name: "cipher_strength" });
    const enabled = h("input", { type: "checkbox", name: "enabled", checked: rule?.enabled ?? true });
    const comment = input({ name: "comment", value: rule?.comment ?? "" });
    const form = h(
      "form",
      { method: "dialog" },
      field(
        direction === "inbound" ? "IP, CIDR or sender domain" : "Recipient domain",
        "/match",
        match,
        direction === "inbound" ? "192.0.2.7, 198.51.100.0/24, partner.example or .partner.example" : "partner.example or .partner.example",
      ),
      field("Security level", "/level", level),
      field("Cipher strength", "/cipher_strength", strength),
      field("Enabled", "/enabled", enabled),
      field("Comment", "/comment", comment),
      formError(),
      h("div", { class: "actions" }, h("button", { type: "submit", "data-write": true }, "Save"), button("Cancel", close)),
    );
    onSubmit(form, async () => {
      const body: RuleInput = {
        match: match.value.trim(),
        level: level.value as RuleInput["level"],
        cipher_strength: strength.value as Schemas["CipherStrength"],
        enabled: enabled.checked,
        comment: comment.value,
      };
      const saved = rule ? await op.update(rule.id, body, current?.etag) : await op.create(body);
      warnings.set(direction, saved.id, saved.warnings);
      close();
      refresh();
    });
    return form;
  });
}

/** A verdict and the reply it gives (its text already carries the code and enhanced status). */
function verdict(v: Schemas["VerdictDto"] | null | undefined): Child {
  if (!v) return null;
  return [v.verdict, v.reply ? [" ", h("code", { class: "reply" }, v.reply)] : null, v.closes ? " (closes the session)" : null];
}

function ruleRef(r: Schemas["RuleRefDto"] | null | undefined): string {
  if (!r) return "";
  return r.match ? `${r.kind} ${r.match}` : r.kind;
}

function explainBox(direction: Direction): HTMLElement {
  const inbound = direction === "inbound";
  const ip = input({ name: "client_ip", placeholder: "192.0.2.7" });
  const sender = input({ name: "sender", placeholder: "alice@partner.example" });
  const recipient = input({ name: "recipient", placeholder: "bob@partner.example" });
  const certificates: Schemas["Certificate"][] = ["none", "unverified", "verified"];
  const session = select(["plaintext", "TLS, no client certificate", "TLS, unverified certificate", "TLS, verified certificate"], "plaintext", {
    name: "session",
  });
  const high = h("input", { type: "checkbox", name: "high_cipher" });
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Explain" },
    inbound
      ? [
          field("Client IP", "/client_ip", ip),
          field("Sender", "/sender", sender),
          field("Recipient", "/recipient", recipient, "For the relay decision at RCPT TO."),
          field("Session", "/tls/client_certificate", session),
          field("256-bit cipher", "/tls/high_cipher", high),
        ]
      : field("Recipient", "/recipient", recipient),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Explain")),
    formError(),
  );
  onSubmit(form, async () => {
    const chosen = certificates[session.selectedIndex - 1];
    const tls = chosen ? { client_certificate: chosen, high_cipher: high.checked } : undefined;
    const value = (el: HTMLInputElement) => el.value.trim() || undefined;
    const body: Schemas["EvaluateRequest"] = inbound
      ? { direction, client_ip: value(ip), sender: value(sender), recipient: value(recipient), tls }
      : { direction, recipient: value(recipient) };
    const r = await call(api.POST("/v1/policy/evaluate", { body }));
    const none: [string, Child] = ["", null];
    replace(
      out,
      facts([
        r.connect ? ["At connect", `${r.connect.level} (from ${ruleRef(r.connect.level_rule)}), cipher strength ${r.connect.cipher_strength}`] : none,
        ["Security level", `${r.level} (from ${ruleRef(r.level_rule)})`],
        ["Cipher strength", `${r.cipher_strength}${r.strength_rule ? ` (from ${ruleRef(r.strength_rule)})` : ""}`],
        ["Sender rule", ruleRef(r.sender_rule)],
        r.outbound_source ? ["Decided by", decidedBy(r.outbound_source)] : none,
        inbound ? ["STARTTLS offered", r.starttls_offered ? "yes" : "no"] : none,
        inbound ? ["Client certificate requested", r.request_client_cert ? "yes" : "no"] : none,
        ["MAIL FROM in plaintext", verdict(r.mail_from)],
        // Without a described session the API assumes the best one: show it only when asked.
        tls ? ["MAIL FROM over this TLS session", verdict(r.mail_from_tls)] : none,
        ["RCPT TO", verdict(r.rcpt_to)],
        [
          "Delivery steps",
          r.outbound_steps.length
            ? h(
                "ol",
                null,
                r.outbound_steps.map((s) => h("li", null, `${s.when}: ${s.action}`, s.reason ? ` (${s.reason})` : "")),
              )
            : null,
        ],
        ["Policy version", String(r.version)],
      ]),
      warningList(r.warnings),
    );
  });
  return section("Explain", h("p", { class: "hint" }, "What the current policy decides for a peer, and why."), form, out);
}

/** Outbound: rule, MTA-STS (with the policy a worker fetched) or default, and what it beat. */
function decidedBy(s: Schemas["OutboundSource"]): string {
  const sts = s.mta_sts ? `MTA-STS policy ${s.mta_sts.id}, mode ${s.mta_sts.mode}, mx ${s.mta_sts.mx.join(" ")}, until ${s.mta_sts.expires_at}` : "";
  const by = s.decided_by === "mta-sts" ? sts : s.decided_by;
  const beat = s.overridden.length ? `; overrides ${s.overridden.join(", ")}` : "";
  const known = s.decided_by !== "mta-sts" && sts ? ` (known: ${sts})` : "";
  return `${by}${beat}${known}${s.mx_delivery ? "" : "; not MX delivery, so MTA-STS does not apply"}`;
}
