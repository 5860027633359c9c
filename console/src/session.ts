// Who is signed in: the token and its role, kept in the tab's session storage (gone when the
// tab closes; never in local storage or a cookie).

import type { components } from "./api/schema";

type Role = components["schemas"]["Role"];
export interface Session {
  token: string;
  id: string;
  role: Role;
}

const KEY = "postern.session";
let onSignOut: (reason: string) => void = () => {};

export function session(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return null;
  }
}

export function isAdmin(): boolean {
  return session()?.role === "admin";
}

export function signIn(s: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function signOut(reason = ""): void {
  // Everything the console kept for this tab goes with the token.
  for (const k of Object.keys(sessionStorage)) if (k.startsWith("postern.")) sessionStorage.removeItem(k);
  onSignOut(reason);
}

export function whenSignedOut(f: (reason: string) => void): void {
  onSignOut = f;
}
