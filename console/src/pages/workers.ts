// Workers: version applied, connection, last NACK, and drain.

import { api, call } from "../api/client";
import { h, table, time, writeButton, yesNo } from "../dom";
import { act, formError } from "../forms";
import type { Page } from "./page";

export const workers: Page = async ({ main }) => {
  const [list, policy] = await Promise.all([call(api.GET("/v1/workers")), call(api.GET("/v1/policy"))]);
  const error = h("div", null, formError());
  const drain = (id: string) =>
    act(error, `Drain ${id}? It stops taking sessions and delivers its queue now.`, () =>
      call(api.POST("/v1/workers/{id}/drain", { params: { path: { id } } })),
    );
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
        ["", (w) => (w.connected && !w.draining ? writeButton("Drain", () => drain(w.id), { "aria-label": `Drain ${w.id}` }) : null)],
      ],
      list.items,
      "No worker has connected.",
    ),
  );
};
