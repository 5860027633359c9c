#!/usr/bin/env python3
"""What kubernetes-validate cannot see in deploy/: run by deploy/check, offline.

    check_manifests.py validate-log NAME LOG      warnings of kubernetes-validate
    check_manifests.py rendered NAME RENDERED     one rendered overlay (kubectl kustomize)
    check_manifests.py compose deploy/compose.yaml

kubernetes-validate checks each object against the schema of its kind and API version, but
answers only a warning for a kind/version it has no schema for: a custom resource, and just
as well a typo such as `apps/v2`. `validate-log` fails on any such warning except for the
custom resources listed in CUSTOM_RESOURCES, which this script checks itself (`rendered`).

`rendered` also checks what ties the objects together: every `--flag` in a container's
args is a flag of that postern subcommand (read from crates/postern/src/cli.rs), the
Secrets the pods mount are the documented ones or come from a cert-manager Certificate, the
autoscaler's maxReplicas has a worker certificate per pod name, probes and Services name
ports that exist, and the NetworkPolicies let through every flow a feature needs (FLOWS): a
schema check cannot see a blocked port. `compose` checks the same flags (as POSTERN_*
variables) in compose.yaml.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "crates/postern/src/cli.rs"

# Custom resources the manifests may use, and which kubernetes-validate has no schema for.
CUSTOM_RESOURCES = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

# The Secrets an overlay without cert-manager needs, as deploy/README.md makes them.
HAND_MADE_SECRETS = {"postern-ca", "postern-control-tls", "postern-worker-certs", "postern-smtp-tls"}

SUBCOMMAND_ARGS = {"control": "ControlArgs", "worker": "WorkerArgs", "drain": "DrainArgs", "dev": "DevArgs"}

errors = []


def fail(message):
    errors.append(message)
    print(f"  FAIL {message}")


def ok(message):
    print(f"  ok   {message}")


def cli_flags():
    """{subcommand: {flag: env}} from the clap derive structs of cli.rs, plus the global ones."""
    text = CLI.read_text()
    flags = {}

    def fields(body):
        out = {}
        # An #[arg(...)] attribute, any doc comments or attributes, then `pub name:`.
        for m in re.finditer(r"#\[arg\(([^]]*)\)\]\s*(?:(?:///[^\n]*|#\[[^]]*\])\s*)*pub (\w+):", body, re.S):
            attr, name = m.group(1), m.group(2)
            if not re.search(r"\blong\b", attr):
                continue
            long = re.search(r'long\s*=\s*"([^"]+)"', attr)
            env = re.search(r'env\s*=\s*"([^"]+)"', attr)
            out[long.group(1) if long else name.replace("_", "-")] = env.group(1) if env else None
        return out

    globals_ = {}
    m = re.search(r"pub struct Cli \{(.*?)\n\}", text, re.S)
    if m:
        globals_ = fields(m.group(1))
    for sub, struct in SUBCOMMAND_ARGS.items():
        m = re.search(r"pub struct %s \{(.*?)\n\}" % struct, text, re.S)
        if not m:
            fail(f"cli.rs has no struct {struct}")
            continue
        flags[sub] = dict(fields(m.group(1)), **globals_)
    return flags


def validate_log(name, log):
    warned = 0
    for line in Path(log).read_text().splitlines():
        if not line.startswith("WARN"):
            continue
        m = re.search(r"Couldn't find schema for kind (\S+) with api version (\S+) for", line)
        if m and (m.group(2), m.group(1)) in CUSTOM_RESOURCES:
            warned += 1
            continue
        fail(f"{name}: kubernetes-validate: {line}")
    ok(f"{name}: {warned} custom resources without a schema, all of known kinds (checked below)")


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]


def check_args(name, docs, flags):
    before = len(errors)
    for d, spec in pod_specs(docs):
        for c in spec.get("containers", []):
            args = c.get("args", [])
            if not args or args[0] not in flags:
                fail(f"{name}: {d['metadata']['name']}/{c['name']}: first arg {args[:1]} is not a postern subcommand")
                continue
            known = flags[args[0]]
            for a in args[1:]:
                flag = a.split("=", 1)[0]
                if not flag.startswith("--") or flag[2:] not in known:
                    fail(f"{name}: {d['metadata']['name']}/{c['name']}: `{a}` is not a flag of `postern {args[0]}`")
            for e in c.get("env", []):
                if e["name"].startswith("POSTERN_") and e["name"] not in known.values():
                    fail(f"{name}: {d['metadata']['name']}/{c['name']}: env {e['name']} is not read by `postern {args[0]}`")
            hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if hook:
                if hook[:2] != ["/usr/local/bin/postern", "drain"]:
                    fail(f"{name}: preStop {hook} is not `postern drain`")
                for a in hook[2:]:
                    if a.startswith("--") and a[2:].split("=")[0] not in flags["drain"]:
                        fail(f"{name}: preStop: {a} is not a flag of `postern drain`")
                timeout = int(hook[hook.index("--timeout") + 1]) if "--timeout" in hook else 300
                grace = spec.get("terminationGracePeriodSeconds", 30)
                # The worker's own shutdown grace after SIGTERM is 30 s.
                if grace < timeout + 30:
                    fail(f"{name}: terminationGracePeriodSeconds {grace} < drain timeout {timeout} + 30 s")
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    fail(f"{name}: {c['name']} {probe} names port {port}, not one of {sorted(ports)}")
    if len(errors) == before:
        ok(f"{name}: container args, env, preStop and probe ports match `postern` and the pods")


def mounted_secrets(spec):
    for v in spec.get("volumes", []):
        if "secret" in v:
            yield v["secret"]["secretName"]
        for s in v.get("projected", {}).get("sources", []):
            if "secret" in s:
                yield s["secret"]["name"]


def check_custom_resources(name, docs):
    before = len(errors)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for c in by_kind.get("Certificate", []):
        s, n = c.get("spec", {}), c["metadata"]["name"]
        for field in ("secretName", "issuerRef"):
            if field not in s:
                fail(f"{name}: Certificate {n} has no spec.{field}")
        if not s.get("dnsNames") and not (s.get("isCA") and s.get("commonName")):
            fail(f"{name}: Certificate {n} has no dnsNames")
        ref = s.get("issuerRef", {})
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in {
            i["metadata"]["name"] for i in by_kind.get("Issuer", [])
        }:
            fail(f"{name}: Certificate {n} refers to Issuer {ref.get('name')}, not in this overlay")
    services = by_kind.get("Service", [])
    for m in by_kind.get("ServiceMonitor", []):
        sel = m["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if sel.items() <= s["metadata"].get("labels", {}).items()]
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for e in m["spec"]["endpoints"]:
            if e.get("port") not in ports:
                fail(f"{name}: ServiceMonitor {m['metadata']['name']} scrapes port {e.get('port')}, not a port of {[s['metadata']['name'] for s in matched]}")
    n_custom = sum(len(by_kind.get(k, [])) for _, k in CUSTOM_RESOURCES)
    if len(errors) == before:
        ok(f"{name}: {n_custom} custom resources have their required fields and targets")
    return by_kind


def check_secrets(name, by_kind):
    secrets = set()
    for _, spec in pod_specs(by_kind.get("StatefulSet", [])):
        secrets |= set(mounted_secrets(spec))
    certificates = by_kind.get("Certificate", [])
    if certificates:
        issued = {c["spec"]["secretName"] for c in certificates}
        missing = secrets - issued
        if missing:
            fail(f"{name}: pods mount {sorted(missing)}, which no Certificate issues")
        ok(f"{name}: every mounted Secret comes from a cert-manager Certificate ({len(secrets)})")
    elif secrets != HAND_MADE_SECRETS:
        fail(f"{name}: pods mount {sorted(secrets)}; deploy/README.md documents {sorted(HAND_MADE_SECRETS)}")
    else:
        ok(f"{name}: pods mount exactly the Secrets deploy/README.md makes: {', '.join(sorted(secrets))}")

    # One worker certificate per pod name the autoscaler may create.
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        wanted = {f"{target}-{i}" for i in range(hpa["spec"]["maxReplicas"])}
        if certificates:
            have = {dns for c in certificates for dns in c["spec"].get("dnsNames", []) if dns.startswith(target + "-")}
            sts = [s for s in by_kind["StatefulSet"] if s["metadata"]["name"] == target]
            files = {
                i["path"]
                for s in sts
                for v in s["spec"]["template"]["spec"]["volumes"]
                for src in v.get("projected", {}).get("sources", [])
                for i in src.get("secret", {}).get("items", [])
            }
            want_files = {f"worker-{w}.{ext}" for w in wanted for ext in ("pem", "key")}
            if not want_files <= files:
                fail(f"{name}: projected worker certificates lack {sorted(want_files - files)}")
        else:
            # The Secret is made by hand; the README's loop must cover the same names.
            readme = (ROOT / "deploy/README.md").read_text()
            m = re.search(r"for i in \$\(seq 0 (\d+)\)", readme)
            have = {f"{target}-{i}" for i in range(int(m.group(1)) + 1)} if m else set()
        if not wanted <= have:
            fail(f"{name}: maxReplicas {hpa['spec']['maxReplicas']} but no worker certificate for {sorted(wanted - have)}")
        else:
            ok(f"{name}: a worker certificate for each of the {len(wanted)} pods the autoscaler may run")


# The flows Postern's features need: (component, direction, peer, protocol, port, why). The
# peer is "any" (the Internet, or the cluster's DNS), or a component; a port is a number or
# the name of a container port of the component.
WORKER, CONTROL = "worker", "control-plane"
FLOWS = [
    (WORKER, "ingress", "any", "TCP", "smtp", "SMTP from clients"),
    (WORKER, "egress", "any", "TCP", 25, "relaying to MX hosts"),
    (WORKER, "egress", "any", "TCP", 443, "MTA-STS policy fetches and TLS-RPT https: reports"),
    (WORKER, "egress", "any", "UDP", 53, "DNS (MX, A, TXT, _mta-sts, _smtp._tls)"),
    (WORKER, "egress", "any", "TCP", 53, "DNS over TCP (long answers)"),
    (WORKER, "egress", CONTROL, "TCP", 50051, "the policy stream and tracking uploads"),
    (CONTROL, "ingress", WORKER, "TCP", "grpc", "workers' gRPC"),
    (CONTROL, "ingress", "any", "TCP", "public", "MTA-STS policy and TLS-RPT reports from the Internet"),
]


def pod_labels(docs, component):
    for d, spec in pod_specs(docs):
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") == component:
            return labels, spec
    return None, None


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def port_number(port, spec):
    if isinstance(port, int):
        return port
    for c in spec.get("containers", []):
        for p in c.get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
    return None


def allows(rule, direction, peer_labels, proto, number, spec):
    ports = rule.get("ports")
    if ports is not None and not any(
        p.get("protocol", "TCP") == proto and port_number(p.get("port"), spec) == number
        for p in ports
    ):
        return False
    peers = rule.get("to" if direction == "egress" else "from")
    if peers is None:
        return True  # from or to anywhere
    for peer in peers:
        if peer_labels is not None and "podSelector" in peer and "namespaceSelector" not in peer:
            if selects(peer["podSelector"], peer_labels):
                return True
        if peer_labels is None and peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
            return True
    return False


def check_network(name, docs):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not policies:
        ok(f"{name}: no NetworkPolicy (nothing is blocked)")
        return
    before = len(errors)
    for component, direction, peer, proto, port, why in FLOWS:
        labels, spec = pod_labels(docs, component)
        if labels is None:
            continue
        peer_labels = None if peer == "any" else pod_labels(docs, peer)[0]
        number = port_number(port, spec)
        if number is None:
            fail(f"{name}: {component} has no container port {port} ({why})")
            continue
        mine = [p for p in policies if selects(p["spec"].get("podSelector"), labels)]
        restricted = [p for p in mine if direction.capitalize() in p["spec"].get("policyTypes", [])]
        if not restricted:
            continue  # no policy restricts this direction for these pods
        rules = [r for p in restricted for r in p["spec"].get(direction, [])]
        if not any(allows(r, direction, peer_labels, proto, number, spec) for r in rules):
            fail(f"{name}: the NetworkPolicies block {component} {direction} {proto}/{number} "
                 f"{'to' if direction == 'egress' else 'from'} {peer}: {why}")
    if len(errors) == before:
        ok(f"{name}: the NetworkPolicies let through the {len(FLOWS)} flows the features need")


def rendered(name, path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    flags = cli_flags()
    check_args(name, docs, flags)
    by_kind = check_custom_resources(name, docs)
    check_secrets(name, by_kind)
    check_network(name, docs)


def compose(path):
    doc = yaml.safe_load(Path(path).read_text())  # PyYAML resolves the `<<` merge keys
    flags = cli_flags()
    services = doc["services"]
    for sname, s in services.items():
        cmd = s.get("command")
        if not isinstance(cmd, list) or not cmd or cmd[0] not in flags:
            continue
        known = flags[cmd[0]]
        env = s.get("environment", {})
        for k in env:
            if k.startswith("POSTERN_") and k not in known.values():
                fail(f"compose: {sname}: {k} is not read by `postern {cmd[0]}`")
        required = {
            e for f, e in known.items() if e and f in REQUIRED.get(cmd[0], ())
        }
        if required - set(env):
            fail(f"compose: {sname}: missing {sorted(required - set(env))}")
        for dep in s.get("depends_on", {}):
            if dep not in services:
                fail(f"compose: {sname} depends on unknown service {dep}")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0]
            if not src.startswith(".") and src not in doc.get("volumes", {}):
                fail(f"compose: {sname} mounts undeclared volume {src}")
    if not errors:
        ok(f"compose: {len(services)} services; POSTERN_* variables are flags of their subcommand, required ones set")


# Flags without a default (clap `required`), from docs/src/interfaces.md and cli.rs.
REQUIRED = {
    "control": ("data-dir", "http-listen", "grpc-listen", "tls-cert", "tls-key", "client-ca"),
    "worker": ("control", "worker-id", "smtp-listen", "spool-dir", "tls-cert", "tls-key",
               "control-ca", "client-cert", "client-key"),
}


def main():
    cmd = sys.argv[1]
    if cmd == "validate-log":
        validate_log(sys.argv[2], sys.argv[3])
    elif cmd == "rendered":
        rendered(sys.argv[2], sys.argv[3])
    elif cmd == "compose":
        compose(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
    if errors:
        sys.exit(f"{len(errors)} problem(s)")


if __name__ == "__main__":
    main()
