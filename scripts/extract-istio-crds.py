#!/usr/bin/env python3
"""Extracts the CRDs of the kinds the gateway serves from Istio's crd-all.gen.yaml
(manifests/charts/base/files/ in istio/istio) into admin/src/k8s/istio-crds.json, which the
admin API embeds for discovery (short names, categories), Table columns and /openapi/v3.

Usage: scripts/extract-istio-crds.py path/to/crd-all.gen.yaml > admin/src/k8s/istio-crds.json
"""
import json
import sys

import yaml

SERVED = {
    "gateways.networking.istio.io",
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "serviceentries.networking.istio.io",
    "workloadentries.networking.istio.io",
    "requestauthentications.security.istio.io",
    "authorizationpolicies.security.istio.io",
}

with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
out = []
for d in docs:
    if d.get("kind") != "CustomResourceDefinition" or d["metadata"]["name"] not in SERVED:
        continue
    spec = d["spec"]
    out.append(
        {
            "group": spec["group"],
            "names": spec["names"],
            "scope": spec["scope"],
            "versions": [
                {
                    "name": v["name"],
                    "additionalPrinterColumns": v.get("additionalPrinterColumns", []),
                    "schema": v["schema"]["openAPIV3Schema"],
                }
                for v in spec["versions"]
                if v.get("served")
            ],
        }
    )
out.sort(key=lambda c: c["names"]["kind"])
json.dump(out, sys.stdout, indent=None, separators=(",", ":"), sort_keys=False)
sys.stdout.write("\n")
