// The audit log: every change, by whom, newest first.

import { api, call } from "../api/client";
import { h, table, time } from "../dom";
import type { Page } from "./page";
import { pager, text } from "./paging";

export const audit: Page = async ({ main, params }) => {
  const list = await call(api.GET("/v1/audit", { params: { query: { cursor: text(params, "cursor"), limit: 100 } } }));
  main.append(
    h("h1", null, "Audit"),
    table(
      "Audit log, newest first",
      [
        ["At", (e) => time(e.at)],
        ["Actor", (e) => `${e.actor} (${e.role})`],
        ["Action", (e) => e.action],
        ["Summary", (e) => e.summary],
        ["Version", (e) => (e.version != null ? String(e.version) : "")],
      ],
      list.items,
    ),
    pager("audit", params, list.next_cursor),
  );
};
