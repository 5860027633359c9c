#!/usr/bin/env python3
"""Writes docs/src/settings.md from the settings' own definitions: the Settings schema of the
generated OpenAPI document (its types, defaults and descriptions come from the Rust doc comments
and serde defaults). `--check` fails when the committed page is stale (CI runs it)."""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs/src/settings.md"
HEAD = """# Settings

`GET /v1/settings` shows them, `PUT /v1/settings` replaces them (a new policy version; absent
fields take their defaults), `postern ctl settings` and the console's settings screen do the same.
Every worker applies them with the policy. This page is generated from the settings' definitions
(`python3 docs/tools/settings_reference.py`); CI fails when it is stale.

| setting | type | default | what it does |
|---|---|---|---|
"""


def resolve(schemas, node):
    ref = node.get("$ref") or next(
        (o.get("$ref") for o in node.get("oneOf", []) if "$ref" in o), None
    )
    return schemas[ref.rsplit("/", 1)[1]] if ref else None


def type_of(schemas, node):
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"] if v is not None)
    target = resolve(schemas, node)
    if target is not None and "enum" in target:
        return " \\| ".join(f"`{v}`" for v in target["enum"])
    t = node.get("type")
    if isinstance(t, list):
        t = " or ".join(x for x in t if x != "null") + (" or null" if "null" in t else "")
    if t == "array":
        t = f"list of {type_of(schemas, node.get('items', {}))}"
    return t or "object"


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(schemas, schema, prefix, defaults):
    out = []
    for name, prop in sorted(schema.get("properties", {}).items()):
        path = f"{prefix}{name}"
        target = resolve(schemas, prop)
        default = prop.get("default", (defaults or {}).get(name))
        if target is not None and "properties" in target:
            out += rows(schemas, target, path + ".", default)
            continue
        desc = prop.get("description") or (target or {}).get("description", "")
        shown = "" if default is None and "default" not in prop else f"`{json.dumps(default)}`"
        out.append(f"| `{path}` | {cell(type_of(schemas, prop))} | {shown} | {cell(desc)} |")
    return out


def page():
    doc = json.loads((ROOT / "openapi/postern.json").read_text())
    schemas = doc["components"]["schemas"]
    return HEAD + "\n".join(rows(schemas, schemas["Settings"], "", {})) + "\n"


if __name__ == "__main__":
    text = page()
    if "--check" in sys.argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit("docs/src/settings.md is stale: run python3 docs/tools/settings_reference.py")
        print("docs/src/settings.md is current")
    else:
        PAGE.write_text(text)
