// Workers: version applied, connection, last NACK, and drain.

import { api, call } from "../api/client";
import { button, h, table, time, yesNo } from "../dom";
import { formError, showProblem } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";

export const workers: Page = async ({ main }) => {
  const [list, policy] = await Promise.all([call(api.GET("/v1/workers")), call(api.GET("/v1/policy"))]);
  const error = h("div", null, formError());
  const drain = async (id: string) => {
    if (!confirm(`Drain ${id}? It stops taking sessions and delivers its queue now.`)) return;
    try {
      await call(api.POST("/v1/workers/{id}/drain", { params: { path: { id } } }));
      refresh();
    } catch (err) {
      showProblem(error, err);
    }
  };
  main.append(
    h("h1", null, "Workers"),
    h("p", null, `Current policy version: ${policy.version}.`),
    error,
    table(
      "Workers",
      [
        ["Id", (w) => w.id],
        ["SMTP", (w) => w.smtp_addr],
        ["Connected", (w) => (w.connected ? "yes" : h("span", { class: "mark mark-violation" }, "no"))],
        ["Version", (w) => (w.applied_version === policy.version ? String(w.applied_version) : `${w.applied_version} (behind)`)],
        ["Last seen", (w) => time(w.last_seen)],
        ["Last NACK", (w) => w.last_nack ?? ""],
        ["Draining", (w) => yesNo(w.draining)],
        ["Remote address", (w) => w.remote_addr],
        ["", (w) => (isAdmin() && w.connected && !w.draining ? button("Drain", () => drain(w.id), { "data-write": true, "aria-label": `Drain ${w.id}` }) : null)],
      ],
      list.items,
      "No worker has connected.",
    ),
  );
};
