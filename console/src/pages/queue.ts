// The workers' queues: filters, retry now, flush, delete with or without a DSN to the sender.

import { api, call } from "../api/client";
import { button, field, h, input, table, time } from "../dom";
import { formError, onSubmit, showProblem, values } from "../forms";
import { isAdmin } from "../session";
import { go, type Page, refresh } from "./page";
import { pager, text } from "./paging";

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
  const error = h("div", { class: "queue-status" }, formError());
  const done = h("p", { role: "status", class: "hint" });
  const act = async (question: string | null, f: () => Promise<unknown>, said?: string) => {
    if (question && !confirm(question)) return;
    try {
      await f();
      if (said) sessionStorage.setItem("postern.queue.said", said);
      refresh();
    } catch (err) {
      showProblem(error, err);
    }
  };
  main.append(h("h1", null, "Queue"), form);
  if (isAdmin()) {
    const destination = params.get("destination") ?? undefined;
    main.append(
      h(
        "p",
        null,
        button(
          destination ? `Flush mail for ${destination}` : "Flush all queues",
          () =>
            act(null, async () => {
              const r = await call(api.POST("/v1/queue/flush", { body: { destination } }));
              sessionStorage.setItem("postern.queue.said", `${r.flushed} messages scheduled for delivery now.`);
            }),
          { "data-write": true },
        ),
      ),
    );
  }
  done.textContent = sessionStorage.getItem("postern.queue.said") ?? "";
  sessionStorage.removeItem("postern.queue.said");
  main.append(done, error);

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
            isAdmin()
              ? h(
                  "div",
                  { class: "row-actions" },
                  button(
                    "Retry now",
                    () => act(null, () => call(api.POST("/v1/queue/{id}/retry", { params: { path: { id: m.id } } })), `${m.id} scheduled for delivery now.`),
                    { "data-write": true, "aria-label": `Retry ${m.id}` },
                  ),
                  button(
                    "Delete",
                    () =>
                      act(
                        `Delete ${m.id} without telling the sender?`,
                        () => call(api.DELETE("/v1/queue/{id}", { params: { path: { id: m.id }, query: { dsn: false } } })),
                        `${m.id} deleted.`,
                      ),
                    { "data-write": true, class: "danger", "aria-label": `Delete ${m.id}` },
                  ),
                  button(
                    "Delete and bounce",
                    () =>
                      act(
                        `Delete ${m.id} and send its sender a DSN?`,
                        () => call(api.DELETE("/v1/queue/{id}", { params: { path: { id: m.id }, query: { dsn: true } } })),
                        `${m.id} deleted; its sender gets a DSN.`,
                      ),
                    { "data-write": true, class: "danger", "aria-label": `Delete ${m.id} and bounce` },
                  ),
                )
              : null,
        ],
      ],
      list.items,
      "The queues are empty.",
    ),
    pager("queue", params, list.next_cursor),
  );
};
