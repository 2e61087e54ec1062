"""Where a task's image comes from: the pool on disk, Label Studio, or an allowed host.

- `/data/local-files/?d=<path>`: read from disk, `<path>` relative to the document root;
  a path that resolves outside the pool folder (`..`, absolute, symlinks out) is refused.
- Any other Label Studio path (`/data/upload/...`), relative or on Label Studio's host:
  fetched from Label Studio with the token. The token goes to no other host.
- `http(s)://` URLs on other hosts: fetched without the token if the host is allowed in
  the settings, refused otherwise. `data:` base64 URLs are decoded in place.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import httpx

from serving.settings import ENV_PREFIX, ServingSettings

LOCAL_FILES_PATH = "/data/local-files"


class ImageError(ValueError):
    """A task's image cannot be had: refused or unavailable. The message says why."""


class ImageSource:
    """Turns image URLs from task data into bytes or a file path for `preprocess`."""

    def __init__(self, settings: ServingSettings, client: httpx.Client):
        self.document_root = settings.document_root.resolve()
        self.pool_dir = settings.pool_dir.resolve()
        self.label_studio_url = settings.label_studio_url
        self.label_studio_origin = _origin(settings.label_studio_url)
        self.token = settings.label_studio_token
        self.allowed_hosts = {host.lower() for host in settings.allowed_hosts}
        self.max_bytes = settings.max_image_bytes
        self.client = client

    def read(self, url: object) -> Path | bytes:
        if not isinstance(url, str) or not url.strip():
            raise ImageError(f"image URL {url!r} is empty or not a string")
        url = url.strip()
        if url.startswith("data:"):
            return _data_url(url)
        try:
            parts = urlsplit(url)
        except ValueError as err:  # e.g. an unclosed '[' in the host
            raise ImageError(f"{_short(url)}: not a valid URL ({err})") from err
        if parts.scheme in ("http", "https"):
            if _origin(url) == self.label_studio_origin:
                return self._from_label_studio(parts.path, parts.query, absolute=url)
            if self._host_allowed(parts):
                return self._fetch(url, with_token=False)
            raise ImageError(
                f"{_short(url)}: host {parts.hostname!r} is not Label Studio "
                f"({self.label_studio_url}) and not in {ENV_PREFIX}ALLOWED_HOSTS; refused"
            )
        if not parts.scheme and not parts.netloc and url.startswith("/"):
            return self._from_label_studio(parts.path, parts.query, absolute=None)
        raise ImageError(
            f"{_short(url)}: not a Label Studio, local-files, http(s) or data: image URL"
        )

    def _from_label_studio(self, path: str, query: str, absolute: str | None) -> Path | bytes:
        if path.rstrip("/") == LOCAL_FILES_PATH:
            return self._local_file(query)
        if self.label_studio_url is None:
            raise ImageError(
                f"{path}: a Label Studio file, but {ENV_PREFIX}LABEL_STUDIO_URL is not set"
            )
        url = absolute or f"{self.label_studio_url}{path}" + (f"?{query}" if query else "")
        return self._fetch(url, with_token=True)

    def _local_file(self, query: str) -> Path:
        values = parse_qs(query).get("d")
        if not values or not values[0]:
            raise ImageError(f"{LOCAL_FILES_PATH}/?{query}: no d=<path> parameter")
        relative = values[0]
        try:
            path = (self.document_root / relative).resolve()
        except (OSError, ValueError) as err:
            raise ImageError(f"local file {relative!r}: not a usable path ({err})") from err
        if not path.is_relative_to(self.pool_dir):
            raise ImageError(
                f"local file {relative!r} resolves outside the pool folder {self.pool_dir}; refused"
            )
        if not path.is_file():
            raise ImageError(
                f"local file {relative!r}: no such file under {self.document_root} "
                f"(is {ENV_PREFIX}DOCUMENT_ROOT Label Studio's local-files document root?)"
            )
        return path

    def _host_allowed(self, parts) -> bool:
        host = (parts.hostname or "").lower()
        return host in self.allowed_hosts or parts.netloc.lower() in self.allowed_hosts

    def _fetch(self, url: str, with_token: bool) -> bytes:
        headers = {}
        if with_token and self.token is not None:
            headers["Authorization"] = f"Token {self.token.get_secret_value()}"
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    hint = ""
                    if response.status_code in (401, 403) and with_token:
                        hint = f": check {ENV_PREFIX}LABEL_STUDIO_TOKEN (or LABEL_STUDIO_API_KEY)"
                    raise ImageError(f"{_short(url)}: HTTP {response.status_code}{hint}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise ImageError(f"{_short(url)}: {declared} bytes, over the image limit")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise ImageError(
                            f"{_short(url)}: over the image limit of {self.max_bytes} bytes"
                        )
        except httpx.InvalidURL as err:  # e.g. control characters in the path
            raise ImageError(f"{_short(url)}: not a valid URL ({err})") from err
        except httpx.HTTPError as err:
            # h11 quotes a header it refuses, so with the token only the error's type is told
            reason = type(err).__name__ if with_token else f"{type(err).__name__}: {err}"
            raise ImageError(f"{_short(url)}: cannot fetch ({reason})") from err
        return bytes(body)


def _origin(url: str | None) -> tuple[str, str] | None:
    if not url:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number: matches nothing
        return parts.scheme, parts.netloc.lower()
    return parts.scheme, f"{(parts.hostname or '').lower()}:{port}"


def _data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageError("data: URL without a comma")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ImageError(f"data: URL with broken base64 ({err})") from err
    return unquote_to_bytes(payload)


def _short(url: str, limit: int = 200) -> str:
    """URLs in messages: without any user:password part, and not endless."""
    try:
        parts = urlsplit(url)
        if parts.password is not None or parts.username is not None:
            url = parts._replace(netloc=parts.hostname or "").geturl()
    except ValueError:  # cannot be parsed: drop whatever could be user:password@
        url = url.rpartition("@")[2]
    return url if len(url) <= limit else url[:limit] + "..."
