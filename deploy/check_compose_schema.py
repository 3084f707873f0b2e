#!/usr/bin/env python3
"""Validates Compose files against the Compose Specification's JSON schema, offline.

Usage: deploy/check_compose_schema.py [--schema deploy/schema/compose-spec.json] FILE...

The schema is vendored next to this script (deploy/schema/compose-spec.json, from
github.com/compose-spec/compose-spec, Apache-2.0), so the check needs no network. It needs
PyYAML and jsonschema >= 4 (Debian: python3-yaml python3-jsonschema, both pulled in by
docker-compose). Prints every violation with its path and exits 1 if there is any.
"""

import argparse
import json
import pathlib
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"check_compose_schema: {e}; install python3-yaml and python3-jsonschema\n"
    )
    sys.exit(2)

HERE = pathlib.Path(__file__).resolve().parent


def path_of(error):
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else f".{p}")
    return "".join(parts).lstrip(".") or "(root)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=str(HERE / "schema" / "compose-spec.json"))
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    with open(args.schema, encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    failed = False
    for name in args.files:
        with open(name, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in errors:
            failed = True
            print(f"{name}: {path_of(e)}: {e.message}", file=sys.stderr)
        if not errors:
            print(f"{name}: valid ({validator_class.__name__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
