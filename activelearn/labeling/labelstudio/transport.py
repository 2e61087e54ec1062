"""The HTTP layer: one Label Studio server through label-studio-sdk, each request retried
on transient failures (5xx, 429, timeouts, dropped connections) with exponential backoff,
every other failure one `LabelStudioError` that says what to do.

The API token comes from LABEL_STUDIO_API_KEY unless given; it is never logged, and is
cut out of every error message. The SDK is imported when a `Transport` is made, not with
this module.
"""

from __future__ import annotations

import logging
import os
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

import httpx

from activelearn.config import LabelingConfig
from activelearn.errors import LabelStudioAuthError, LabelStudioError, LabelStudioUnreachable

log = logging.getLogger(__name__)

TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the client's token; given to the server as its admin token
SERVE_HINT = "start it with `python -m activelearn.labeling.labelstudio serve` or set labeling.url"

T = TypeVar("T")


class Transport:
    """Requests to the server at `settings.url`: `sdk` is the SDK client, `call` runs one
    request on it."""

    def __init__(self, settings: LabelingConfig, *, token: str | None = None):
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LabelStudioError(
                f"labeling.url={settings.url!r}: give the server's address with its scheme, "
                "e.g. http://127.0.0.1:8080"
            )
        self.url = settings.url.rstrip("/")
        self.settings = settings
        self._token = (token or os.environ.get(TOKEN_ENV) or "").strip()
        if not self._token:
            raise LabelStudioAuthError(
                f"no Label Studio API token: set {TOKEN_ENV} to the admin's token "
                f"(the one the server was started with) for {self.url}"
            )
        self.sdk = self.call("connecting", self._connect)

    def _connect(self):
        from label_studio_sdk import LabelStudio

        # Retries are ours (`call`): the SDK would also retry 409s, never timeouts.
        return LabelStudio(
            base_url=self.url,
            api_key=self._token,
            timeout=self.settings.timeout,
            max_retries=0,
        )

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        idempotent: bool = True,
        missing_ok: bool = False,
    ) -> T:
        """Run one request (`what` names it in messages); transient failures are retried
        with exponential backoff, the rest become one clear error. With `missing_ok`, a
        404 gives None (for a read of something that may be gone).

        A request that creates something (`idempotent=False`) is retried only when it was
        surely not done (no connection, or 429). After a timeout or a 5xx it may have been
        done, or may still be in progress on the server: the error says so instead.
        """
        from label_studio_sdk.core.api_error import ApiError

        attempts = self.settings.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                return fn()
            except httpx.ConnectError:
                raise LabelStudioUnreachable(
                    f"Label Studio is not reachable at {self.url} ({what}): {SERVE_HINT}"
                ) from None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as err:
                last = f"{type(err).__name__}"
                sent = not isinstance(err, httpx.ConnectTimeout)
                if attempt == attempts - 1 and not sent:
                    raise LabelStudioUnreachable(
                        f"Label Studio at {self.url} did not accept a connection ({what}, "
                        f"{attempts} attempts): {SERVE_HINT}"
                    ) from None
                if sent and not idempotent:
                    raise self._maybe_done(what, last) from None
            except ApiError as err:
                status = err.status_code
                if status == 404 and missing_ok:
                    return None
                body = self._redact(str(err.body))[:800]
                if status == 401:
                    raise LabelStudioAuthError(
                        f"Label Studio at {self.url} refused the API token ({what}: 401 {body}): "
                        f"set {TOKEN_ENV} to the admin's token, the one the server was "
                        "started with (Account & Settings shows it)"
                    ) from None
                if status == 403:
                    raise LabelStudioAuthError(
                        f"Label Studio at {self.url} forbids {what} (403 {body}): the user of "
                        f"{TOKEN_ENV} needs access to the project"
                    ) from None
                if status is not None and status < 500 and status != 429:
                    raise LabelStudioError(
                        f"Label Studio at {self.url}: {what} failed with HTTP {status}: {body}"
                    ) from None
                last = f"HTTP {status}: {body}"
                if status != 429 and not idempotent:
                    raise self._maybe_done(what, last) from None
            if attempt < attempts - 1:
                wait = self.settings.backoff * 2**attempt * random.uniform(0.8, 1.2)
                log.warning(
                    "Label Studio %s: %s; retry %d of %d in %.1f s",
                    what,
                    last,
                    attempt + 1,
                    attempts - 1,
                    wait,
                )
                time.sleep(wait)
        raise LabelStudioError(
            f"Label Studio at {self.url}: {what} still failing after {attempts} attempts "
            f"({last}); check the server and its log, then run again"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")

    def _maybe_done(self, what: str, failure: str) -> LabelStudioError:
        return LabelStudioError(
            f"Label Studio at {self.url}: {what} got no answer ({failure}) and may have been "
            "done anyway, or still be in progress: wait until Label Studio has finished "
            "(its task list stops changing), then run again; nothing is sent twice then"
        )
