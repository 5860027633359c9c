#!/usr/bin/env python3
"""Independent checks of mail for the interop lab: DKIM with dkimpy, DSNs with Python's email
package.

  mail_tool.py sign KEY.pem < message > signed      (d=int.test, s=lab, simple/simple)
  mail_tool.py verify PUBLIC.b64 < message          prints "pass" or "fail"
  mail_tool.py dsn - < message                      prints the report's fields as JSON

The verifier answers the selector's DNS TXT lookup itself (the lab has no DNS for it). Input
with bare LF line ends (as Maildir stores it) is taken as CRLF."""

import email
import email.policy
import json
import sys

import dkim


def read_message():
    data = sys.stdin.buffer.read()
    if b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    return data


def dsn(message):
    """The delivery-status report as RFC 3464 readers see it."""
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "auto_submitted": msg.get("Auto-Submitted"),
        "parts": [p.get_content_type() for p in msg.walk()][1:],
        "per_message": {},
        "per_recipient": [],
    }
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            # compat32 parses the status groups as a list of header blocks.
            groups = part.get_payload()
            out["per_message"] = dict(groups[0].items())
            out["per_recipient"] = [dict(g.items()) for g in groups[1:]]
    return out


def main():
    verb, path = sys.argv[1], sys.argv[2]
    message = read_message()
    if verb == "dsn":
        print(json.dumps(dsn(message)))
    elif verb == "sign":
        with open(path, "rb") as f:
            key = f.read()
        signature = dkim.sign(
            message,
            b"lab",
            b"int.test",
            key,
            canonicalize=(b"simple", b"simple"),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        sys.stdout.buffer.write(signature + message)
    else:
        with open(path, "rb") as f:
            public = f.read().strip()

        def txt(name, timeout=5):
            if name == b"lab._domainkey.int.test.":
                return b"v=DKIM1; k=rsa; p=" + public
            return None

        print("pass" if dkim.verify(message, dnsfunc=txt) else "fail")


if __name__ == "__main__":
    main()
