// What every screen is: a function that fills `main` for the route's query and argument.

export interface PageContext {
  main: HTMLElement;
  params: URLSearchParams;
  /** The part of the path after the route's prefix (a message id). */
  arg?: string | undefined;
}

export type Page = (ctx: PageContext) => Promise<void>;

/** Moves to another screen, or to this one with other query parameters. */
export function go(path: string, params?: Record<string, string | undefined>): void {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) if (v !== undefined && v !== "") q.set(k, v);
  const qs = q.toString();
  const hash = `#/${path}${qs ? `?${qs}` : ""}`;
  // The same address again (a search repeated): no hashchange comes, so draw it anew.
  if (location.hash === hash) refresh();
  else location.hash = hash;
}

/** Draws the current screen again (after a write). */
export function refresh(): void {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}
