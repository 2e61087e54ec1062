"""`python -m serving`: the app on uvicorn, bound where the settings say (127.0.0.1:9090)."""

from __future__ import annotations

import logging

import uvicorn

from serving.settings import ServingSettings


def main() -> None:
    settings = ServingSettings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:app", host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
