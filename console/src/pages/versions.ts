// Policy versions, newest first, with rollback (which writes a new version equal to an old one).

import { api, call } from "../api/client";
import { h, table, time, writeButton } from "../dom";
import { act, formError } from "../forms";
import type { Page } from "./page";
import { pager, text } from "./paging";

export const versions: Page = async ({ main, params }) => {
  const list = await call(api.GET("/v1/policy/versions", { params: { query: { cursor: text(params, "cursor"), limit: 50 } } }));
  const error = h("div", null, formError());
  const rollback = (version: number) =>
    act(error, `Roll back to version ${version}? This writes a new version with its rules.`, () =>
      call(api.POST("/v1/policy/rollback", { body: { version } })),
    );
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
            v.version !== list.current ? writeButton(`Roll back to ${v.version}`, () => rollback(v.version)) : null,
        ],
      ],
      list.items,
    ),
    pager("versions", params, list.next_cursor),
  );
};
