"""`python -m serving [--host H] [--port P] [--workspace DIR]`: the app on uvicorn.

Every other setting comes from `ACTIVELEARN_SERVING_*` environment variables (see
`serving.settings`); a flag given here wins over its variable. One worker process only:
the webhook counts annotations in memory, so each of several workers would count its own
share and more than one could start a retrain.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from serving.settings import ENV_PREFIX, ServingSettings, settings_from_environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ServingSettings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Label Studio's ML backend: serves the campaign's model on uvicorn. Every "
        f"setting is also an environment variable {ENV_PREFIX}<NAME> (see serving/settings.py).",
    )
    for flag, what in (
        ("host", "address to bind"),
        ("port", "port to bind"),
        ("workspace", "the campaign's folder: model/, data/pool/, rounds/ are read in it"),
    ):
        parser.add_argument(
            f"--{flag}",
            help=f"{what} (default {defaults[flag].default}, or {ENV_PREFIX}{flag.upper()})",
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name, value in vars(args).items():  # the app reads its settings from the environment
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = value
    settings = settings_from_environment()
    workers = os.environ.get("WEB_CONCURRENCY", "").strip()  # uvicorn's default for workers
    if workers not in ("", "1"):
        sys.exit(
            f"WEB_CONCURRENCY={workers}: the ML backend runs as one uvicorn worker, because it "
            "counts annotations in memory: each worker would count its own share toward "
            f"{ENV_PREFIX}RETRAIN_THRESHOLD and several retrains could start. Unset "
            "WEB_CONCURRENCY."
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
