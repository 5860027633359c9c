#!/usr/bin/env python3
"""An independent reader of TLS-RPT reports (RFC 8460), for tests/mta_sts.rs.

  tlsrpt_check.py mail FILE   a mailed report: checks the MIME structure and headers (RFC 8460
                              5.3) with Python's email package, then reads the attachment
  tlsrpt_check.py gzip FILE   a posted report body (application/tlsrpt+gzip)
  tlsrpt_check.py make-mail DOMAIN ORG
                              writes to stdout a report about DOMAIN from ORG as another
                              sender would mail it (built with Python's email package)

Prints the report as JSON on stdout after checking every field RFC 8460 4.4 requires, with
the mail's headers under "_mail"; exits non-zero, saying why, on anything wrong.
"""
import email
import email.policy
import email.utils
import gzip
import json
import sys

REQUIRED = ["organization-name", "date-range", "contact-info", "report-id", "policies"]
RESULT_TYPES = {
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}


def fail(why):
    print(why, file=sys.stderr)
    sys.exit(1)


def check_report(raw):
    try:
        report = json.loads(gzip.decompress(raw))
    except Exception as e:  # noqa: BLE001 - any failure is the report's
        fail(f"not gzip JSON: {e}")
    for key in REQUIRED:
        if key not in report:
            fail(f"no {key}")
    for key in ["start-datetime", "end-datetime"]:
        if not str(report["date-range"].get(key, "")).endswith("Z"):
            fail(f"date-range {key} is not UTC RFC 3339")
    for p in report["policies"]:
        policy = p["policy"]
        if policy["policy-type"] not in ("sts", "tlsa", "no-policy-found"):
            fail(f"policy-type {policy['policy-type']}")
        if "policy-domain" not in policy:
            fail("no policy-domain")
        summary = p["summary"]
        failed = summary["total-failure-session-count"]
        details = p.get("failure-details", [])
        if sum(d["failed-session-count"] for d in details) != failed:
            fail("failure details do not add up to the failure count")
        for d in details:
            if d["result-type"] not in RESULT_TYPES:
                fail(f"result-type {d['result-type']}")
    return report


def check_mail(raw):
    m = email.message_from_bytes(raw, policy=email.policy.default)
    if m.get_content_type() != "multipart/report":
        fail(f"Content-Type {m.get_content_type()}")
    if m.get_param("report-type") != "tlsrpt":
        fail(f"report-type {m.get_param('report-type')}")
    for h in ["TLS-Report-Domain", "TLS-Report-Submitter", "Subject", "From", "Date", "Message-ID"]:
        if not m[h]:
            fail(f"no {h} header")
    if not str(m["Subject"]).startswith("Report Domain: "):
        fail(f"Subject {m['Subject']}")
    parts = [p for p in m.iter_parts()]
    if len(parts) != 2 or parts[0].get_content_type() != "text/plain":
        fail("not a text part and a report part")
    report_part = parts[1]
    if report_part.get_content_type() != "application/tlsrpt+gzip":
        fail(f"report part is {report_part.get_content_type()}")
    name = report_part.get_filename() or ""
    fields = name.split("!")
    if len(fields) < 4 or not name.endswith(".json.gz"):
        fail(f"filename {name}")
    if fields[0] != str(m["TLS-Report-Submitter"]) or fields[1] != str(m["TLS-Report-Domain"]):
        fail(f"filename {name} does not name the submitter and domain")
    report = check_report(report_part.get_content())
    report["_mail"] = {
        "domain": str(m["TLS-Report-Domain"]),
        "submitter": str(m["TLS-Report-Submitter"]),
        "tls_required": str(m["TLS-Required"] or ""),
        "filename": name,
    }
    return report


def make_mail(domain, org):
    from email.message import EmailMessage

    report = {
        "organization-name": org,
        "date-range": {"start-datetime": "2026-12-06T00:00:00Z", "end-datetime": "2026-12-06T23:59:59Z"},
        "contact-info": "tlsrpt@reporter.example",
        "report-id": f"{org}-{domain}-1",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce"],
                       "policy-domain": domain, "mx-host": [f"mx.{domain}"]},
            "summary": {"total-successful-session-count": 41, "total-failure-session-count": 2},
            "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.9",
                                 "receiving-mx-hostname": f"mx.{domain}", "failed-session-count": 2}],
        }],
    }
    m = EmailMessage()
    m["From"] = "tlsrpt@reporter.example"
    m["To"] = f"tlsrpt@{domain}"
    m["Subject"] = f"Report Domain: {domain} Submitter: reporter.example Report-ID: <{report['report-id']}>"
    m["Date"] = email.utils.format_datetime(email.utils.localtime())
    m["Message-ID"] = email.utils.make_msgid(domain="reporter.example")
    m["TLS-Report-Domain"] = domain
    m["TLS-Report-Submitter"] = "reporter.example"
    m.set_content(f"This is an aggregate TLS report from reporter.example about {domain}.")
    m.add_attachment(gzip.compress(json.dumps(report).encode()), maintype="application",
                     subtype="tlsrpt+gzip", filename=f"reporter.example!{domain}!1!2.json.gz")
    m.set_type("multipart/report")
    m.set_param("report-type", "tlsrpt")
    sys.stdout.buffer.write(m.as_bytes(policy=email.policy.SMTP))


if __name__ == "__main__":
    if sys.argv[1] == "make-mail":
        make_mail(sys.argv[2], sys.argv[3])
        sys.exit(0)
    kind, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        raw = f.read()
    print(json.dumps(check_mail(raw) if kind == "mail" else check_report(raw)))
