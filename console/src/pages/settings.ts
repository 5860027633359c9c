// Settings: every field GET /v1/settings gives, in its groups, written back whole with PUT.
// The form is drawn from the document the server sends, so a new setting appears without a
// console change; its type (number, text, list) comes from the current value.

import { api, call, callTagged, ifMatch, type Schemas } from "../api/client";
import { facts, field, h, section } from "../dom";
import { formError, onSubmit } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";

type Value = number | boolean | string | string[] | null | undefined;
type Group = Record<string, Value>;

function label(key: string): string {
  return key.replace(/_s$/, " (s)").replace(/_/g, " ");
}

function show(v: Value): string {
  if (Array.isArray(v)) return v.join(", ") || "(none)";
  if (typeof v === "boolean") return v ? "yes" : "no";
  return v === null || v === undefined || v === "" ? "(not set)" : String(v);
}

export const settings: Page = async ({ main }) => {
  const { data, etag } = await callTagged(api.GET("/v1/settings"));
  const isGroup = (v: unknown): v is Group => !!v && typeof v === "object" && !Array.isArray(v);
  const entries = Object.entries(data as Record<string, Group | Value>);
  const groups = entries.filter((e): e is [string, Group] => isGroup(e[1]));
  const top = entries.filter((e): e is [string, Value] => !isGroup(e[1]));
  main.append(h("h1", null, "Settings"));

  if (!isAdmin()) {
    main.append(
      facts(top.map(([k, v]) => [label(k), show(v)])),
      ...groups.map(([g, fields]) => section(label(g), facts(Object.entries(fields).map(([k, v]) => [label(k), show(v)])))),
    );
    return;
  }

  const control = (pointer: string, v: Value) => {
    if (typeof v === "number") return h("input", { type: "number", name: pointer, value: String(v), min: 0, step: 1 });
    if (typeof v === "boolean") return h("input", { type: "checkbox", name: pointer, checked: v });
    const el = h("input", { type: "text", name: pointer, value: Array.isArray(v) ? v.join(", ") : (v ?? "") });
    if (Array.isArray(v)) el.dataset.list = "true";
    // An empty text box is null for a setting that may be null, else the empty string.
    if (v === null || v === undefined) el.dataset.nullable = "true";
    return el;
  };
  const form = h(
    "form",
    { "aria-label": "Settings" },
    top.map(([k, v]) => field(label(k), `/${k}`, control(`/${k}`, v))),
    groups.map(([g, fields]) =>
      h(
        "fieldset",
        null,
        h("legend", null, label(g)),
        Object.entries(fields).map(([k, v]) => field(label(k), `/${g}/${k}`, control(`/${g}/${k}`, v), Array.isArray(v) ? "Comma-separated" : undefined)),
      ),
    ),
    formError(),
    h("button", { type: "submit", "data-write": true }, "Save settings"),
  );
  onSubmit(form, async () => {
    const body: Record<string, Group | Value> = {};
    for (const el of form.querySelectorAll<HTMLInputElement>("input[name]")) {
      const [g = "", k] = el.name.slice(1).split("/");
      const raw = el.value.trim();
      const value: Value =
        el.type === "checkbox"
          ? el.checked
          : el.type === "number"
            ? raw === ""
              ? null
              : Number(raw)
            : el.dataset.list
              ? raw.split(",").map((x) => x.trim()).filter(Boolean)
              : raw || (el.dataset.nullable ? null : "");
      if (k === undefined) body[g] = value;
      else ((body[g] ??= {}) as Group)[k] = value;
    }
    await call(api.PUT("/v1/settings", { body: body as Schemas["Settings"], headers: ifMatch(etag) }));
    refresh();
  });
  main.append(form);
};
