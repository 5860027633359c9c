// Query parameters of a list screen and its cursor paging.

import { h } from "../dom";
import { go } from "./page";

export function text(params: URLSearchParams, name: string): string | undefined {
  return params.get(name) || undefined;
}

export function flag(params: URLSearchParams, name: string): boolean | undefined {
  const v = params.get(name);
  return v === "true" ? true : v === "false" ? false : undefined;
}

/** "Newest" back to the first page and "Older" to the next one, keeping the filters. */
export function pager(path: string, params: URLSearchParams, next: string | null | undefined): HTMLElement {
  const rest = Object.fromEntries([...params].filter(([k]) => k !== "cursor"));
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    params.get("cursor") ? h("button", { type: "button", onclick: () => go(path, rest) }, "First page") : null,
    next ? h("button", { type: "button", onclick: () => go(path, { ...rest, cursor: next }) }, "Next page") : null,
  );
}
