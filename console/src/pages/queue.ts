// The workers' queues: filters, retry now, flush, delete with or without a DSN to the sender.

import { api, call } from "../api/client";
import { field, h, input, table, time, writeButton } from "../dom";
import { act, formError, onSubmit, showProblem, values } from "../forms";
import { go, type Page } from "./page";
import { pager, text } from "./paging";

/** What the last action did, told on the screen drawn after it. */
let said = "";

export const queue: Page = async ({ main, params }) => {
  const form = h(
    "form",
    { class: "filters", "aria-label": "Queue filters" },
    field("Destination domain", "destination", input({ name: "destination", value: params.get("destination") ?? "" })),
    field("Reason contains", "reason", input({ name: "reason", value: params.get("reason") ?? "" })),
    field("Worker", "worker", input({ name: "worker", value: params.get("worker") ?? "" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Search"), h("a", { href: "#/queue" }, "Clear")),
    formError(),
  );
  onSubmit(form, async () => go("queue", values(form) as Record<string, string>));
  const error = h("div", null, formError());
  const done = h("p", { role: "status", class: "hint" });
  const run = (question: string | null, f: () => Promise<string>) =>
    act(error, question, async () => {
      said = await f();
    });
  const destination = params.get("destination") ?? undefined;
  main.append(
    h("h1", null, "Queue"),
    form,
    h(
      "p",
      null,
      writeButton(destination ? `Flush mail for ${destination}` : "Flush all queues", () =>
        run(`Deliver ${destination ? `the mail for ${destination}` : "every queued message"} now?`, async () => {
          const r = await call(api.POST("/v1/queue/flush", { body: { destination } }));
          const missed = r.unreachable.map((u) => `${u.worker} (${u.detail})`).join(", ");
          return `${r.flushed} messages scheduled for delivery now.${missed ? ` Not reached: ${missed}.` : ""}`;
        }),
      ),
    ),
    done,
    error,
  );
  // Filled once the live region is in the page, so that it is announced.
  done.textContent = said;
  said = "";

  const list = await call(
    api.GET("/v1/queue", {
      params: {
        query: {
          destination: text(params, "destination"),
          reason: text(params, "reason"),
          worker: text(params, "worker"),
          cursor: text(params, "cursor"),
          limit: 50,
        },
      },
    }),
  ).catch((err: unknown) => {
    showProblem(form, err);
    return null;
  });
  if (!list) return;
  if (list.unreachable.length) {
    main.append(
      h(
        "div",
        { class: "notice", role: "status" },
        h("p", null, "Some workers did not answer; their queues are missing below:"),
        h("ul", null, list.unreachable.map((u) => h("li", null, `${u.worker}: ${u.detail}`))),
      ),
    );
  }
  const remove = (id: string, dsn: boolean) =>
    run(`Delete ${id}${dsn ? " and send its sender a DSN" : " without telling the sender"}?`, async () => {
      await call(api.DELETE("/v1/queue/{id}", { params: { path: { id }, query: { dsn } } }));
      return dsn ? `${id} deleted; its sender gets a DSN.` : `${id} deleted.`;
    });
  main.append(
    table(
      "Queued messages",
      [
        ["Queue id", (m) => h("a", { href: `#/messages/${encodeURIComponent(m.id)}` }, m.id)],
        ["Worker", (m) => m.worker],
        ["Received", (m) => time(m.received_at)],
        ["From", (m) => m.sender || "<>"],
        [
          "Recipients",
          (m) =>
            h(
              "ul",
              { class: "recipients" },
              m.recipients.map((r) =>
                h(
                  "li",
                  null,
                  h("strong", null, r.address),
                  ` ${r.status}, ${r.attempts} attempts`,
                  r.next_attempt ? [", next ", time(r.next_attempt)] : null,
                  r.last_reply ? h("div", null, h("code", null, r.last_reply)) : null,
                ),
              ),
            ),
        ],
        ["Size", (m) => `${m.size} bytes`],
        ["In delivery", (m) => (m.in_delivery ? "yes" : "no")],
        [
          "",
          (m) =>
            h(
              "div",
              { class: "row-actions" },
              writeButton(
                "Retry now",
                () =>
                  run(null, async () => {
                    await call(api.POST("/v1/queue/{id}/retry", { params: { path: { id: m.id } } }));
                    return `${m.id} scheduled for delivery now.`;
                  }),
                { "aria-label": `Retry ${m.id}` },
              ),
              writeButton("Delete", () => remove(m.id, false), { class: "danger", "aria-label": `Delete ${m.id}` }),
              writeButton("Delete and bounce", () => remove(m.id, true), { class: "danger", "aria-label": `Delete ${m.id} and bounce` }),
            ),
        ],
      ],
      list.items,
      "The queues are empty.",
    ),
    pager("queue", params, list.next_cursor),
  );
};
