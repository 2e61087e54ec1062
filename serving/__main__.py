"""`python -m serving`: the app on uvicorn, bound where the settings say (127.0.0.1:9090)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from serving.settings import ENV_PREFIX, ServingSettings


def main() -> None:
    try:
        settings = ServingSettings()
    except ValidationError as err:  # a bad variable: say which, without a traceback
        sys.exit("\n".join(f"{_variable(e['loc'])}{e['msg']}" for e in err.errors()))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:app", host=settings.host, port=settings.port, log_level="info")


def _variable(location: tuple) -> str:
    """A field's variable; a field with aliases is already located by its variable."""
    if not location:
        return ""
    name = str(location[0]).upper()
    return f"{name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name}: "


if __name__ == "__main__":
    main()
