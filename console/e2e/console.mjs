// The console end to end in a real browser (Debian's Chromium driven by Playwright) against a
// running `postern dev`, with real mail sent by swaks. tests/console.rs starts the server, the
// next hop and this script, and checks the server's side afterwards.
//
// Environment: POSTERN_URL (http://127.0.0.1:PORT), POSTERN_ADMIN_TOKEN, POSTERN_VIEWER_TOKEN,
// POSTERN_SMTP (127.0.0.1:PORT), PARTNER_DOMAIN (relayed to a next hop that takes
// bob@ and defers later@), SCREENSHOTS (a directory), CHROMIUM (default /usr/bin/chromium).
// Every wait polls for its condition with a deadline; nothing sleeps.

import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";

const need = (k) => process.env[k] || fail(`${k} is not set`);
const base = need("POSTERN_URL");
// The public listener, where reporters POST TLS-RPT reports.
const publicBase = need("POSTERN_PUBLIC_URL");
const adminToken = need("POSTERN_ADMIN_TOKEN");
const viewerToken = need("POSTERN_VIEWER_TOKEN");
const smtp = need("POSTERN_SMTP");
const partner = need("PARTNER_DOMAIN");
const shots = need("SCREENSHOTS");
const run = Date.now().toString(36);
const DEADLINE_MS = 30_000;
mkdirSync(shots, { recursive: true });

function fail(message) {
  throw new Error(message);
}

function step(name) {
  console.log(`-- ${name}`);
}

/** Polls `f` until it returns a truthy value, or fails after the deadline. */
async function until(what, f, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) fail(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setImmediate(r));
  }
}

async function rest(path, method = "GET", body = undefined) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
  if (!r.ok) fail(`${method} ${path}: ${r.status}`);
  return r.json();
}

function swaks(from, to, subject, tls) {
  const args = ["--server", smtp, "--from", from, "--to", to, "--header", `Subject: ${subject}`, "--timeout", "30"];
  if (tls) args.push("--tls");
  const r = spawnSync("swaks", args, { encoding: "utf8", timeout: 60_000 });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

/** A client that asks for STARTTLS and then sends no TLS handshake: a failed handshake. */
async function brokenStartTls() {
  const [host, port] = [smtp.slice(0, smtp.lastIndexOf(":")), Number(smtp.slice(smtp.lastIndexOf(":") + 1))];
  const socket = connect({ host, port });
  socket.setTimeout(30_000, () => socket.destroy(new Error("the SMTP server stalled")));
  let got = "";
  const waitFor = (re) =>
    until(`the server to say ${re}`, async () => {
      if (socket.destroyed) fail(`the connection closed; it said: ${got}`);
      return re.test(got);
    });
  socket.on("data", (d) => (got += d.toString("latin1")));
  await waitFor(/^220 /m);
  socket.write("EHLO broken.example\r\n");
  await waitFor(/^250 /m);
  socket.write("STARTTLS\r\n");
  await waitFor(/^220 2\.0\.0/m);
  socket.end("this is not a TLS ClientHello\r\n");
  await until("the server to close", async () => socket.destroyed || socket.closed);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The machine's network is closed: no background fetches, updates or QUIC.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(DEADLINE_MS);
const browserErrors = [];
page.on("pageerror", (e) => browserErrors.push(`page error: ${e.message}`));
// A refused request shows in the console as an error too; those are part of the test.
page.on("console", (m) => {
  if (m.type() === "error" && !/status of (401|412|422|400|404)/.test(m.text())) browserErrors.push(m.text());
});
// Going to the address the page is already at changes nothing: load it again instead.
const screen = async (hash) => {
  const url = `${base}/console/#/${hash}`;
  if (page.url() === url) await page.reload();
  else await page.goto(url);
};
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const h1 = (text) => page.locator("h1", { hasText: text }).waitFor();

async function signIn(token, role) {
  await page.goto(`${base}/console/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(".who", { hasText: `(${role})` }).waitFor();
}

try {
  step("a wrong token is refused on the sign-in form");
  await page.goto(`${base}/console/`);
  await page.getByLabel("API token").fill("pst_not_a_token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(".form-error", { hasText: /token/i }).waitFor();

  step("sign in as the admin");
  await signIn(adminToken, "admin");

  step("add a sender-domain `none` rule by keyboard alone; a malformed match is shown beside the field");
  await screen("rules/inbound");
  await h1("Inbound rules");
  for (let i = 0; ; i++) {
    if (i > 80) fail("Tab never reached Add rule");
    await page.keyboard.press("Tab");
    if ((await page.evaluate(() => document.activeElement?.textContent)) === "Add rule") break;
  }
  await page.keyboard.press("Enter");
  await page.locator("dialog[open]").waitFor();
  await page.keyboard.type("not a domain!");
  await page.keyboard.press("Enter");
  const matchInput = page.locator("dialog input[name=match]");
  await page.locator("dialog [aria-invalid=true][name=match]").waitFor();
  const matchError = await page.locator(`#${await matchInput.getAttribute("id")}-error`).textContent();
  if (!matchError?.trim()) fail("no error beside the match field");
  console.log(`   beside match: ${matchError.trim()}`);
  // The field keeps the focus after the error; replace its text, then pick the level.
  await page.keyboard.press("Control+A");
  await page.keyboard.type("plain.example");
  await page.keyboard.press("Tab");
  await page.keyboard.type("none");
  for (let i = 0; ; i++) {
    if (i > 10) fail("Tab never reached Save");
    await page.keyboard.press("Tab");
    if ((await page.evaluate(() => document.activeElement?.textContent)) === "Save") break;
  }
  await page.keyboard.press("Enter");
  const noneRow = page.locator("tr", { hasText: "plain.example" });
  await noneRow.locator(".warning", { hasText: "sender_rule_none" }).waitFor();
  if ((await noneRow.locator("td").nth(1).textContent()) !== "none") fail("the rule's level is not none");

  step("add an `encrypt` sender-domain rule with the mouse");
  await page.getByRole("button", { name: "Add rule" }).click();
  await page.locator("dialog input[name=match]").fill("secure.example");
  await page.locator("dialog select[name=level]").selectOption("encrypt");
  await page.locator("dialog input[name=comment]").fill("partner requires TLS");
  await page.locator("dialog").getByRole("button", { name: "Save" }).click();
  await page.locator("tr", { hasText: "secure.example" }).waitFor();

  step("explain: plaintext mail from secure.example gets 530");
  await page.locator("form[aria-label=Explain] input[name=client_ip]").fill("192.0.2.7");
  await page.locator("form[aria-label=Explain] input[name=sender]").fill("alice@secure.example");
  await page.getByRole("button", { name: "Explain" }).click();
  await page.locator("dd", { hasText: "530" }).waitFor();
  await shot("rules-inbound");

  step("the worker enforces the new version");
  const { version } = await rest("/v1/policy");
  await until(`a worker on version ${version}`, async () =>
    (await rest("/v1/workers")).items.some((w) => w.connected && w.applied_version === version),
  );
  await screen("workers");
  await page.locator("td", { hasText: "dev-worker" }).waitFor();

  step("send mail with swaks: plaintext, STARTTLS, a 530 refusal and one the next hop defers");
  const plain = swaks("carol@plain.example", `bob@${partner}`, `plain-${run}`, false);
  if (!plain.ok) fail(`plaintext mail refused:\n${plain.out}`);
  const tls = swaks("alice@secure.example", `bob@${partner}`, `tls-${run}`, true);
  if (!tls.ok) fail(`STARTTLS mail refused:\n${tls.out}`);
  const refused = swaks("alice@secure.example", `bob@${partner}`, `refused-${run}`, false);
  if (refused.ok || !refused.out.includes("530")) fail(`plaintext from secure.example was not refused with 530:\n${refused.out}`);
  const later = swaks("dave@plain.example", `later@${partner}`, `deferred-${run}`, false);
  if (!later.ok) fail(`mail for later@ refused:\n${later.out}`);

  step("message tracking finds both messages with their marks");
  const rowFor = (subject) => page.locator("tbody tr", { hasText: subject });
  await until("both messages delivered in tracking", async () => {
    await screen(`messages?subject=${run}`);
    await page.locator(".table-wrap, .empty").first().waitFor();
    return (
      (await rowFor(`plain-${run}`).locator(".status-delivered").count()) === 1 &&
      (await rowFor(`tls-${run}`).locator(".status-delivered").count()) === 1
    );
  });
  if ((await rowFor(`tls-${run}`).locator(".subject .mark-tls").count()) !== 1) fail("no TLS mark on the STARTTLS message");
  if ((await rowFor(`plain-${run}`).locator(".subject .mark-plain").count()) !== 1) fail("no plain mark on the plaintext message");
  // Both legs of the STARTTLS message were encrypted (the next hop offers STARTTLS).
  if ((await rowFor(`tls-${run}`).locator(".subject .mark-plain").count()) !== 0) fail("a plain mark on the STARTTLS message");
  await shot("messages");

  step("the filters: no plaintext leg keeps only the STARTTLS message");
  await page.locator("form[aria-label='Message filters'] select[name=plaintext]").selectOption("false");
  await page.getByRole("button", { name: "Search" }).click();
  await until("the plaintext=false page", async () => page.url().includes("plaintext=false"));
  await rowFor(`tls-${run}`).waitFor();
  if ((await rowFor(`plain-${run}`).count()) !== 0) fail("plaintext=false shows the plaintext message");

  step("the 530 refusal is found with its violation mark");
  await screen("messages?violation=true&sender=alice%40secure.example");
  const refusal = page.locator("tbody tr", { hasText: "rejected" });
  await refusal.locator(".mark-violation").waitFor();
  await refusal.locator(".mark-plain").waitFor();

  step("a detail shows the source (via TLS)");
  await screen(`messages?subject=tls-${run}`);
  await rowFor(`tls-${run}`).locator("a").click();
  await page.locator(".via", { hasText: "(via TLS)" }).first().waitFor();
  await page.locator("section", { hasText: "Timeline" }).locator("tbody tr").first().waitFor();
  await shot("message-detail");

  step("connections: a failed STARTTLS handshake is found");
  await brokenStartTls();
  await until("the failed handshake in connections", async () => {
    await screen("connections?tls_failed=true");
    await page.locator(".table-wrap, .empty").first().waitFor();
    return (await page.locator("tbody tr", { hasText: "broken.example" }).locator(".mark-violation").count()) > 0;
  });
  await shot("connections");

  step("settings: a value the API refuses is shown beside its field");
  await screen("settings");
  const maxLine = page.locator("input[name='/smtp/max_line']");
  await maxLine.fill("10");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.locator("input[name='/smtp/max_line'][aria-invalid=true]").waitFor();
  const lineError = await page.locator(`#${await maxLine.getAttribute("id")}-error`).textContent();
  if (!/1000/.test(lineError ?? "")) fail(`no RFC 5321 limit beside max_line: ${lineError}`);

  step("an edit of a rule someone else changed meanwhile is refused (If-Match), not lost");
  await screen("rules/inbound");
  await page.getByRole("button", { name: "Edit secure.example" }).click();
  await page.locator("dialog input[name=comment]").fill("my edit");
  const secure = (await rest("/v1/policy/inbound/rules")).items.find((r) => r.match === "secure.example");
  await rest(`/v1/policy/inbound/rules/${secure.id}`, "PUT", { ...secure, id: undefined, comment: "their edit" });
  await page.locator("dialog").getByRole("button", { name: "Save" }).click();
  await page.locator("dialog .form-error", { hasText: /If-Match/ }).waitFor();
  await page.keyboard.press("Escape");
  await screen("rules/inbound");
  await page.locator("tr", { hasText: "secure.example" }).locator("td", { hasText: "their edit" }).waitFor();

  step("disable a rule, then roll the policy back to before it");
  const before = (await rest("/v1/policy")).version;
  await screen("rules/inbound");
  await page.getByRole("button", { name: "Disable plain.example" }).click();
  await page.getByRole("button", { name: "Enable plain.example" }).waitFor();
  await screen("versions");
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: `Roll back to ${before}` }).click();
  await page.locator("strong", { hasText: `${before + 2} (current)` }).waitFor();
  await screen("rules/inbound");
  await page.getByRole("button", { name: "Disable plain.example" }).waitFor();

  step("the deferred message is retried, then deleted, from the queue screen");
  const queued = page.locator("tbody tr", { hasText: `later@${partner}` });
  await until("the deferral in the queue", async () => {
    await screen("queue");
    await page.locator(".table-wrap, .empty").first().waitFor();
    return (await queued.locator("code", { hasText: "450" }).count()) > 0;
  });
  await shot("queue");
  await queued.getByRole("button", { name: /^Retry / }).click();
  await page.getByRole("status").filter({ hasText: "scheduled for delivery now" }).waitFor();
  page.once("dialog", (d) => d.accept());
  await page.locator("tbody tr", { hasText: `later@${partner}` }).getByRole("button", { name: /^Delete \S+$/ }).click();
  await page.getByRole("status").filter({ hasText: "deleted" }).waitFor();
  // The worker deletes asynchronously after the API accepted the request: re-read the queue.
  await until("the queue without the deleted message", async () => {
    await screen("queue");
    await page.locator(".table-wrap, .empty").first().waitFor();
    return (await queued.count()) === 0;
  });
  await screen(`messages?subject=deferred-${run}`);
  await rowFor(`deferred-${run}`).locator("a").click();
  await until("the deletion in the message's timeline", async () => {
    await page.reload();
    await page.locator("main h1").waitFor();
    return (await page.locator("td", { hasText: "deleted by an operator without a DSN" }).count()) > 0;
  });

  step("TLS reports: our published policy's TXT record; a report posted about our domain; today's built");
  const posted = await fetch(`${publicBase}/tlsrpt`, {
    method: "POST",
    headers: { "Content-Type": "application/tlsrpt+json" },
    body: JSON.stringify({
      "organization-name": `Reporter ${run}`,
      "date-range": { "start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z" },
      "contact-info": "tls@reporter.example",
      "report-id": run,
      policies: [
        {
          policy: { "policy-type": "no-policy-found", "policy-domain": partner },
          summary: { "total-successful-session-count": 12, "total-failure-session-count": 1 },
          "failure-details": [{ "result-type": "certificate-expired", "failed-session-count": 1 }],
        },
      ],
    }),
  });
  if (posted.status !== 204) fail(`POST /tlsrpt: ${posted.status}`);
  const doc = await rest("/v1/settings");
  doc.published_mta_sts = { mode: "testing", mx: [`mx.${partner}`], max_age: 86400 };
  await rest("/v1/settings", "PUT", doc);
  await screen("reports");
  await page.locator("code", { hasText: `_mta-sts.${partner} TXT "v=STSv1; id=` }).waitFor();
  const received = page.locator("tr", { hasText: `Reporter ${run}` });
  await received.waitFor();
  if (!(await received.textContent()).includes("12 ok, 1 failed")) fail(`the received report reads: ${await received.textContent()}`);
  // The build is audited: its entry shows that the click reached the API, and no error is shown.
  await page.getByRole("button", { name: "Build today's reports" }).click();
  await until("the build in the audit log", async () =>
    (await rest("/v1/audit?limit=5")).items.some((e) => e.summary.includes("TLS-RPT reports for")),
  );
  await page.locator("main h1", { hasText: "TLS reports" }).waitFor();
  const said = await page.locator("main .form-error").allTextContents();
  if (said.some((t) => t.trim())) fail(`building the reports said: ${said.join(" ")}`);
  await shot("reports");

  step("every screen fits 400 and 1920 pixels without scrolling sideways");
  const screens = ["messages", "connections", "rules/inbound", "rules/outbound", "relay", "trust", "settings", "versions", "queue", "workers", "reports", "audit", "tokens"];
  for (const width of [400, 1920]) {
    await page.setViewportSize({ width, height: 900 });
    for (const s of screens) {
      await screen(s);
      await page.locator("main h1").waitFor();
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) fail(`#/${s} is ${overflow} px wider than ${width} px`);
    }
    await screen(`messages?subject=${run}`);
    await rowFor(`tls-${run}`).waitFor();
    await shot(`messages-${width}px`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });

  step("a viewer sees every screen but no write control");
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(viewerToken, "viewer");
  if ((await page.locator("nav a", { hasText: "Tokens" }).count()) !== 0) fail("a viewer sees the Tokens screen");
  for (const s of screens.filter((s) => s !== "tokens")) {
    await screen(s);
    await page.locator("main h1").waitFor();
    // The data, not just the filters drawn before it arrives.
    await page.locator("main .table-wrap, main .empty, main dl").first().waitFor();
    const writes = await page.locator("[data-write]").count();
    const named = await page.getByRole("button", { name: /^(Add rule|Edit|Enable|Disable|Delete|Retry|Flush|Save|Drain|Remove|Roll back|Create|Revoke|Build)/ }).count();
    if (writes || named) fail(`#/${s} shows a viewer ${writes + named} write controls`);
  }
  await screen("rules/inbound");
  await page.locator("tr", { hasText: "secure.example" }).waitFor();
  await shot("viewer-rules-inbound");

  if (browserErrors.length) fail(`the browser reported:\n${browserErrors.join("\n")}`);
  console.log("console e2e passed");
} catch (e) {
  await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
