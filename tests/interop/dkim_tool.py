#!/usr/bin/env python3
"""DKIM for the interop lab, with dkimpy as the independent implementation.

  dkim_tool.py sign KEY.pem < message > signed      (d=int.test, s=lab, simple/simple)
  dkim_tool.py verify PUBLIC.b64 < message          prints "pass" or "fail"

The verifier answers the selector's DNS TXT lookup itself (the lab has no DNS for it). Input
with bare LF line ends (as Maildir stores it) is taken as CRLF."""

import sys

import dkim


def read_message():
    data = sys.stdin.buffer.read()
    if b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    return data


def main():
    verb, path = sys.argv[1], sys.argv[2]
    message = read_message()
    if verb == "sign":
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
