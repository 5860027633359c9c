// The console's shell: sign-in, the navigation, and a hash router (`#/messages?status=deferred`),
// so every screen and its filters have an address that survives a reload and works with the
// browser's back button, and the server needs to serve only one page.

import { api, call } from "./api/client";
import { button, field, h, replace } from "./dom";
import { formError, onSubmit } from "./forms";
import { isAdmin, session, signIn, signOut, whenSignedOut } from "./session";
import type { Page } from "./pages/page";
import { messages } from "./pages/messages";
import { message } from "./pages/message";
import { connections } from "./pages/connections";
import { rules } from "./pages/rules";
import { relay } from "./pages/relay";
import { trust } from "./pages/trust";
import { settings } from "./pages/settings";
import { versions } from "./pages/versions";
import { audit } from "./pages/audit";
import { tokens } from "./pages/tokens";
import { workers } from "./pages/workers";
import { queue } from "./pages/queue";
import { reports } from "./pages/reports";

interface Route {
  path: string;
  title: string;
  page: Page;
  adminOnly?: boolean;
  hidden?: boolean;
}

const routes: Route[] = [
  { path: "messages", title: "Message tracking", page: messages },
  { path: "messages/", title: "Message", page: message, hidden: true },
  { path: "connections", title: "Connections", page: connections },
  { path: "rules/inbound", title: "Inbound rules", page: rules("inbound") },
  { path: "rules/outbound", title: "Outbound rules", page: rules("outbound") },
  { path: "relay", title: "Relay", page: relay },
  { path: "trust", title: "Trusted CAs", page: trust },
  { path: "settings", title: "Settings", page: settings },
  { path: "versions", title: "Versions", page: versions },
  { path: "queue", title: "Queue", page: queue },
  { path: "workers", title: "Workers", page: workers },
  { path: "reports", title: "TLS reports", page: reports },
  { path: "audit", title: "Audit", page: audit },
  { path: "tokens", title: "Tokens", page: tokens, adminOnly: true },
];

const root = document.getElementById("app")!;
let signInNotice = "";

whenSignedOut((reason) => {
  signInNotice = reason;
  render();
});
window.addEventListener("hashchange", render);
render();

function current(): { path: string; params: URLSearchParams } {
  const [path = "", query = ""] = location.hash.replace(/^#\/?/, "").split("?", 2);
  return { path: path || "messages", params: new URLSearchParams(query) };
}

function render(): void {
  // A dialog left open (Back pressed under it) belongs to the screen being left.
  for (const d of document.querySelectorAll("dialog")) d.remove();
  const s = session();
  if (!s) {
    renderSignIn();
    return;
  }
  const { path, params } = current();
  const route =
    routes.find((r) => r.path === path) ?? routes.find((r) => r.path.endsWith("/") && path.startsWith(r.path));
  const main = h("main", { id: "main", tabindex: -1 });
  const nav = h(
    "nav",
    { "aria-label": "Screens" },
    h(
      "ul",
      null,
      routes
        .filter((r) => !r.hidden && (!r.adminOnly || isAdmin()))
        .map((r) =>
          h(
            "li",
            null,
            h("a", { href: `#/${r.path}`, "aria-current": route === r || route?.path === `${r.path}/` ? "page" : null }, r.title),
          ),
        ),
    ),
  );
  replace(
    root,
    h(
      "header",
      null,
      h("a", { class: "brand", href: "#/messages" }, "Postern"),
      nav,
      h(
        "div",
        { class: "who" },
        h("span", null, `${s.id} (${s.role})`),
        button("Sign out", () => signOut()),
      ),
    ),
    main,
  );
  if (!route || (route.adminOnly && !isAdmin())) {
    main.append(h("h1", null, "Not found"), h("p", null, "There is no such screen for this token."));
    return;
  }
  document.title = `${route.title} · Postern`;
  let arg: string | undefined;
  try {
    arg = route.path.endsWith("/") ? decodeURIComponent(path.slice(route.path.length)) : undefined;
  } catch {
    main.append(h("h1", null, "Not found"), h("p", null, "This address is malformed."));
    return;
  }
  route.page({ main, params, arg }).catch((err: unknown) => {
    main.append(h("p", { class: "form-error", role: "alert" }, err instanceof Error ? err.message : String(err)));
  });
  // Keyboard and screen-reader users land on the new screen, not on the link they used.
  if (document.activeElement === document.body || document.activeElement?.closest("nav")) main.focus();
}

function renderSignIn(): void {
  document.title = "Sign in · Postern";
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h(
    "form",
    { class: "signin" },
    h("h1", null, "Postern console"),
    h("p", null, "Sign in with an API token (admin or viewer). It is kept in this tab only."),
    signInNotice ? h("p", { class: "notice", role: "status" }, signInNotice) : null,
    field("API token", "token", token),
    formError(),
    h("button", { type: "submit" }, "Sign in"),
  );
  onSubmit(form, async () => {
    const secret = token.value.trim();
    // whoami with the candidate token (not yet stored) tells its id and role.
    const me = await call(api.GET("/v1/whoami", { headers: { Authorization: `Bearer ${secret}` } }));
    signIn({ token: secret, id: me.id, role: me.role });
    signInNotice = "";
    render();
  });
  replace(root, h("main", { id: "main" }, form));
  token.focus();
}
