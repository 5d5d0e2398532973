#!/usr/bin/env python3
"""Parses OpenMetrics text from stdin with the reference Python parser (prometheus_client) and
prints the families as JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].
A parse error exits 1 with the parser's message. Used by the admin tests to check /metrics with a
real parser; scripts/test installs prometheus_client when it is missing."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

try:
    families = [
        {
            "name": f.name,
            "type": f.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples
            ],
        }
        for f in text_string_to_metric_families(sys.stdin.read())
    ]
except Exception as e:  # the parser raises ValueError and friends
    print(f"parse error: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(families, sys.stdout)
