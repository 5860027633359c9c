// A small hyperscript helper: every page is built from DOM nodes, and text always goes in as
// text nodes (never innerHTML), so nothing from the API or the mail can become markup.

import { isAdmin } from "./session";

export type Child = Node | string | number | null | undefined | false | Child[];
type Handler = (e: Event) => void;
export type Attrs = Record<string, string | number | boolean | Handler | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") {
      el.addEventListener(key.replace(/^on/, ""), value);
    } else if (key in el && typeof value !== "string") {
      (el as unknown as Record<string, unknown>)[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function replace(el: Node, ...children: Child[]): void {
  while (el.firstChild) el.removeChild(el.firstChild);
  append(el, children);
}

/** A table in a horizontally scrolling box (narrow screens), or a line saying it is empty. */
export function table<T>(
  caption: string,
  columns: [string, (row: T) => Child][],
  rows: T[],
  empty = "Nothing to show.",
): HTMLElement {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  // A column without a title holds a row's actions; name it for screen readers.
  columns = columns.map(([name, cell]) => [name || "Actions", cell]);
  return h(
    "div",
    { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption },
    h(
      "table",
      null,
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", null, h("tr", null, columns.map(([name]) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        null,
        rows.map((row) => h("tr", null, columns.map(([, cell]) => h("td", null, cell(row))))),
      ),
    ),
  );
}

/** A definition list of label/value pairs; pairs without a value are left out. */
export function facts(pairs: [string, Child][]): HTMLElement {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
  );
}

export function section(title: string, ...children: Child[]): HTMLElement {
  return h("section", null, h("h2", null, title), ...children);
}

/** A labelled form control with a slot for the error a problem+json pointer names. */
export function field(label: string, pointer: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = `f-${pointer.replace(/[^a-z0-9]+/gi, "-")}-${++fieldCount}`;
  control.id = id;
  control.dataset.pointer = pointer;
  const error = h("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  control.setAttribute("aria-describedby", hint ? `${id}-error ${id}-hint` : `${id}-error`);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    error,
  );
}
let fieldCount = 0;

export function select(options: string[], value?: string | null, attrs?: Attrs): HTMLSelectElement {
  return h(
    "select",
    attrs ?? null,
    options.map((o) => h("option", { value: o, selected: o === (value ?? "") }, o === "" ? "any" : o)),
  );
}

export function input(attrs: Attrs): HTMLInputElement {
  return h("input", { type: "text", ...attrs });
}

export function button(text: string, onclick: Handler, attrs: Attrs = {}): HTMLButtonElement {
  return h("button", { type: "button", onclick, ...attrs }, text);
}

/** A button that changes something: none at all for a viewer (marked `data-write` for tests). */
export function writeButton(text: string, onclick: Handler, attrs: Attrs = {}): HTMLButtonElement | null {
  return isAdmin() ? button(text, onclick, { "data-write": true, ...attrs }) : null;
}

export function time(iso: string | null | undefined): Child {
  if (!iso) return null;
  return h("time", { datetime: iso, title: iso }, iso.replace("T", " ").replace(/\.\d+/, ""));
}

export function yesNo(b: boolean | undefined): string {
  return b ? "yes" : "no";
}
