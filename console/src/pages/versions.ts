// Policy versions, newest first, with rollback (which writes a new version equal to an old one).

import { api, call } from "../api/client";
import { button, h, table, time } from "../dom";
import { formError, showProblem } from "../forms";
import { isAdmin } from "../session";
import { type Page, refresh } from "./page";
import { pager, text } from "./paging";

export const versions: Page = async ({ main, params }) => {
  const list = await call(api.GET("/v1/policy/versions", { params: { query: { cursor: text(params, "cursor"), limit: 50 } } }));
  const error = h("div", null, formError());
  const rollback = async (version: number) => {
    if (!confirm(`Roll back to version ${version}? This writes a new version with its rules.`)) return;
    try {
      await call(api.POST("/v1/policy/rollback", { body: { version } }));
      refresh();
    } catch (err) {
      showProblem(error, err);
    }
  };
  main.append(
    h("h1", null, "Versions"),
    h("p", null, `Current version: ${list.current}.`),
    error,
    table(
      "Policy versions, newest first",
      [
        ["Version", (v) => (v.version === list.current ? h("strong", null, `${v.version} (current)`) : String(v.version))],
        ["At", (v) => time(v.at)],
        ["By", (v) => v.actor],
        ["Change", (v) => v.summary],
        [
          "",
          (v) =>
            isAdmin() && v.version !== list.current
              ? button(`Roll back to ${v.version}`, () => rollback(v.version), { "data-write": true })
              : null,
        ],
      ],
      list.items,
    ),
    pager("versions", params, list.next_cursor),
  );
};
