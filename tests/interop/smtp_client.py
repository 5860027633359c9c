#!/usr/bin/env python3
"""One SMTP session with Python's smtplib and ssl (OpenSSL), for the interop lab.

Takes a JSON object (host, port, bind, from, to, body, tls: never|may|tls12|aes128, cert, key)
and prints every server reply as `CODE text` lines, and `TLS <version> <cipher>` once STARTTLS
has succeeded; a failure is printed as `ERROR <what>`."""

import json
import smtplib
import ssl
import sys


def reply(code, text):
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    lines = text.splitlines() or [""]
    for i, line in enumerate(lines):
        sep = "-" if i < len(lines) - 1 else " "
        print(f"{code}{sep}{line}", flush=True)


def main():
    spec = json.loads(sys.argv[1])
    # Connecting in the constructor also sets the host STARTTLS names (an IP: no SNI).
    smtp = smtplib.SMTP(
        spec["host"], spec["port"], timeout=20, source_address=(spec["bind"], 0)
    )
    reply(*smtp.ehlo("client.lab"))
    if spec["tls"] != "never" and smtp.has_extn("starttls"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if spec["tls"] in ("tls12", "aes128"):
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if spec["tls"] == "aes128":
            ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        if spec.get("cert"):
            ctx.load_cert_chain(spec["cert"], spec["key"])
        try:
            reply(*smtp.starttls(context=ctx))
        except (ssl.SSLError, OSError, smtplib.SMTPException) as e:
            print(f"ERROR handshake: {e}", flush=True)
            return
        version, cipher = smtp.sock.version(), smtp.sock.cipher()[0]
        print(f"TLS {version} {cipher}", flush=True)
        reply(*smtp.ehlo("client.lab"))
    elif spec["tls"] == "aes128":
        print("ERROR STARTTLS not offered", flush=True)
        return
    try:
        for step in (
            lambda: smtp.mail(spec["from"]),
            lambda: smtp.rcpt(spec["to"]),
            lambda: smtp.data(spec["body"].encode()),
        ):
            code, text = step()
            reply(code, text)
            if code >= 400:
                break
        reply(*smtp.quit())
    except smtplib.SMTPResponseException as e:
        reply(e.smtp_code, e.smtp_error)
    except smtplib.SMTPServerDisconnected as e:
        print(f"ERROR disconnected: {e}", flush=True)


if __name__ == "__main__":
    main()
