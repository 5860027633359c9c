#!/usr/bin/env python3
"""Fetches a domain's MTA-STS policy with postfix-mta-sts-resolver (the Python MTA-STS
implementation Postfix users run), for tests/mta_sts.rs: a third party reading the policy that
Postern's control plane publishes.

  sts_resolve.py DNS_IP DNS_PORT DOMAIN

Its DNS queries (and aiohttp's) go to DNS_IP:DNS_PORT (the test's server) and the policy is fetched as the
resolver always does, from https://mta-sts.DOMAIN/ on port 443, trusting SSL_CERT_FILE.
Prints {"result": ..., "id": ..., "policy": {...}} as JSON.
"""
import asyncio
import json
import logging
import sys

import aiodns
import aiohttp.connector
import aiohttp.resolver
from postfix_mta_sts_resolver.resolver import STSResolver


async def main(ip, port, domain):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    resolver = STSResolver(loop=asyncio.get_running_loop(), timeout=10)
    # The resolver, and aiohttp for the policy host's address, ask the system's nameservers;
    # the test's runs on its own port. Nothing else is changed.
    dns = {"nameservers": [ip], "udp_port": port, "tcp_port": port, "timeout": 10}
    resolver._resolver = aiodns.DNSResolver(**dns)
    aiohttp.connector.DefaultResolver = lambda *a, **k: aiohttp.resolver.AsyncResolver(**dns)
    result, found = await resolver.resolve(domain)
    out = {"result": result.name}
    if found is not None:
        out["id"], out["policy"] = found
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
