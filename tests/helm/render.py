#!/usr/bin/env python3
"""Renders the airlock Helm chart with Helm's own engine and prints the manifests as JSON.

    python3 tests/helm/render.py CHART [VALUES.yaml ...] [--name RELEASE] [--namespace NS]

Helm is the real one: helm-python-sdk (PyPI helm-python-sdk==0.2.2) binds Helm's Go SDK
(libhelm_c) with ctypes, so no helm binary or cluster is needed. The values files are merged in
order, as `helm template -f A -f B` does. Prints one JSON object on stdout:

    {"ok": true, "lint": [...], "manifests": [{"template": PATH, "object": {...}}, ...],
     "notes": TEXT, "text": THE MANIFESTS AS `helm template` PRINTS THEM, "values": {...}}

with every YAML document of every template parsed (PyYAML), in template then document order, and
the findings of `helm lint --strict` at warning level and above (none expected), or
{"ok": false, "error": MESSAGE} when Helm refuses to render (a `fail` in a template, say); the
exit code is 0 either way, 2 when Helm or PyYAML is missing.
"""

import json
import sys

try:
    import helm_python as helm
    import yaml
except ImportError as e:  # pragma: no cover - the Rust test reports it
    print(f"render.py: {e} (pip install helm-python-sdk==0.2.2 pyyaml)", file=sys.stderr)
    sys.exit(2)


def main(argv):
    chart_dir, files, name, namespace = None, [], "airlock", "airlock"
    it = iter(argv)
    for a in it:
        if a == "--name":
            name = next(it)
        elif a == "--namespace":
            namespace = next(it)
        elif chart_dir is None:
            chart_dir = a
        else:
            files.append(a)
    values = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            values = merge(values, yaml.safe_load(fh) or {})
    out = {"ok": True}
    with helm.Chart.load(chart_dir) as chart:
        try:
            rendered = chart.render(values=values, name=name, namespace=namespace, is_install=True)
        except helm.HelmError as e:
            print(json.dumps({"ok": False, "error": str(e)}))
            return 0
        # The values the templates saw: the chart's defaults coalesced with the files.
        out["values"] = chart.merge_values(values)
    lint = helm.lint(chart_dir, values=values, strict=True, namespace=namespace)
    out["lint"] = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + [
        {"severity": 3, "error": e} for e in lint.get("errors") or []
    ]
    manifests, text_out = [], []
    for template in sorted(rendered):
        text = rendered[template]
        if template.endswith("NOTES.txt"):
            out["notes"] = text
            continue
        if template.endswith(".tpl") or not text.strip():
            continue
        # As `helm template` prints them.
        text_out.append(f"---\n# Source: {template}\n{text.strip()}\n")
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append({"template": template, "object": doc})
    out["manifests"] = manifests
    out["text"] = "".join(text_out)
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


def merge(base, over):
    """Helm's coalescing of values files: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for k, v in over.items():
            merged[k] = merge(base.get(k), v) if k in base else v
        return merged
    return over


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
