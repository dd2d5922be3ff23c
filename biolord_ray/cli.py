"""Command-line plumbing shared by the thin entry points in ``jobs/``."""

from __future__ import annotations

import argparse
import logging
import sys

from biolord_ray.config import ConfigError, PipelineConfig, available_presets, load_config


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None,
                        help=f"preset ({', '.join(available_presets())}) or YAML file; "
                             "default: the embedded default")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "--set kg.max_concepts=500 (repeatable)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory (local path or URI); overrides run_dir")
    parser.add_argument("--force", action="store_true",
                        help="rerun even if the stage is complete for this config and inputs")
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The validated config, or exit with the config error (before any Ray work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    try:
        return load_config(args.config, overrides)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
