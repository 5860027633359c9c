#!/usr/bin/env python3
"""Every metric the alert rules and the dashboard query is one postern exposes.

    check_metrics.py deploy/metrics.txt deploy/prometheus/alerts.yaml deploy/grafana/postern.json

deploy/metrics.txt lists the names as they appear on /metrics, one per line: counters with
their _total, histograms by their base name (which stands for its _bucket, _sum and _count
series). The names in PromQL are found by removing what is not a metric name (strings,
label matchers, ranges, grouping clauses, functions, keywords, numbers) and taking the
identifiers left.
"""

import json
import re
import sys
from pathlib import Path

import yaml

# Histograms in metrics.txt: the only names that stand for _bucket, _sum and _count series.
HISTOGRAMS = {
    "postern_worker_delivery_seconds",
    "postern_control_http_request_seconds",
    "postern_control_policy_push_seconds",
    "postern_control_tracking_ingest_lag_seconds",
}
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up"}

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\boffset\s+\S+", " ", e)
    # Label lists of grouping and matching clauses.
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables outside ranges
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word, rest = m.group(0), e[m.end():]
        if word.lower() in KEYWORDS or re.match(r"\s*\(", rest):
            continue  # a keyword, or a function (or aggregation) call
        if re.match(r"\d", word):
            continue
        names.add(word)
    return names


def allowed(name, exposed):
    if name in exposed or name in PROMETHEUS_OWN:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base != name and base in HISTOGRAMS


def main():
    metrics_txt, alerts, dashboard = sys.argv[1:4]
    lines = Path(metrics_txt).read_text().splitlines()
    exposed = set(lines)
    problems = []
    if lines != sorted(set(lines)) or any(not re.fullmatch(r"[a-z_:][a-z0-9_:]*", n) for n in lines):
        problems.append(f"{metrics_txt}: one metric name per line, sorted, no duplicates or blank lines")
    if not HISTOGRAMS <= exposed:
        problems.append(f"histograms not in {metrics_txt}: {sorted(HISTOGRAMS - exposed)}")

    exprs = []
    for group in yaml.safe_load(Path(alerts).read_text())["groups"]:
        for rule in group["rules"]:
            exprs.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    dash = json.loads(Path(dashboard).read_text())
    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            exprs.append((f"panel {p['title']!r}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            q = q["query"] if isinstance(q, dict) else q
            m = re.match(r"label_values\((\w+)", q)
            exprs.append((f"variable {v['name']}", m.group(1) if m else q))

    used = {}
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for n in names:
            used.setdefault(n, set()).add(where)
            if not allowed(n, exposed):
                problems.append(f"{where}: {n} is not in {metrics_txt}")

    covered = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS else n for n in used}
    print(f"  {len(exprs)} expressions ({sum(1 for w, _ in exprs if w.startswith('alert'))} alert rules, "
          f"{sum(1 for w, _ in exprs if not w.startswith('alert'))} dashboard queries) use {len(used)} series names:")
    for n in sorted(used):
        print(f"    {'ok  ' if allowed(n, exposed) else 'FAIL'} {n}")
    unused = sorted(exposed - covered)
    if unused:
        print(f"  listed but queried nowhere: {', '.join(unused)}")
    for p in problems:
        print(f"  FAIL {p}")
    if problems:
        sys.exit(f"{len(problems)} problem(s)")


if __name__ == "__main__":
    main()
