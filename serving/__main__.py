"""`python -m serving`: the app on uvicorn, bound where the settings say (127.0.0.1:9090).

One worker process only: the webhook counts annotations in memory, so each of several
workers would count its own share and more than one could start a retrain.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from serving.settings import ENV_PREFIX, settings_from_environment


def main() -> None:
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
