"""CLI: ``python -m biolord_ray.models prepare SPEC [SPEC ...] [--cache-dir DIR]``.

Resolves each spec (building packaged models into the cache) and prints ``SPEC -> PATH``;
``list`` prints the packaged models.
"""

from __future__ import annotations

import argparse
import logging
import sys

from biolord_ray.models import PACKAGED_MODELS, ModelSourceError, resolve_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biolord_ray.models")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="resolve model specs, building them if needed")
    prepare.add_argument("specs", nargs="+", metavar="SPEC",
                         help="local directory, packaged:NAME or hub id")
    prepare.add_argument("--cache-dir", default=None,
                         help="model cache (default: $BIOLORD_RAY_MODEL_CACHE or "
                              "~/.cache/biolord_ray/models)")
    prepare.add_argument("--trust-remote-code", action="store_true",
                         help="accept hub models that need custom code")
    commands.add_parser("list", help="list the packaged models")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, description in PACKAGED_MODELS.items():
            print(f"packaged:{name}\t{description}")
        return 0

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    failed = False
    for spec in args.specs:
        try:
            path = resolve_model(spec, args.cache_dir, args.trust_remote_code)
        except ModelSourceError as exc:
            print(f"error: {spec}: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{spec} -> {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
