"""URL preview plumbing: fetch a URL safely and read its OpenGraph tags.

Serves ``GET /_matrix/client/v1/media/preview_url?url=...&ts=...`` (Matrix client-server API,
"Content repository", ``getUrlPreviewAuthed``; the legacy ``/_matrix/media/v3/preview_url``
behaves the same). The homeserver fetches the URL itself, so this module is what keeps it from
becoming a proxy into the operator's private networks (SSRF):

- every address a host name resolves to is checked by ``netguard.is_ip_allowed`` inside the
  connector's resolver (``netguard.FilteringResolver``), and the connection is made to one
  of the checked addresses (no second lookup, so DNS rebinding gains nothing);
- IP-literal hosts, which aiohttp never hands to the resolver, are checked before each request;
- redirects are followed by hand, re-validating every hop;
- the body, the time and the number of redirects are bounded (``FetchPolicy``);
- no cookies are kept and no proxy is taken from the environment.

``parse_opengraph`` is pure CPU work with no shared state; the preview service runs it in an
executor, stores any ``og:image`` it wants to keep and builds the final response.

Errors::

    PreviewError(kind)
      "bad_url"    not http/https, no host, unparsable, credentials in the URL
      "blocked"    the host resolves only to disallowed addresses
      "too_large"  the (decompressed) body exceeds FetchPolicy.max_size
      "failed"     connection error, timeout, HTTP status >= 400, too many redirects, ...
"""

from __future__ import annotations

import asyncio
import codecs
import re
import socket
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from peyvand.netguard import (
    FilteringResolver,
    IPNetwork,
    close_session,
    guarded_session,
    is_blocked_error,
    parse_ip,
)
from peyvand.netguard import is_ip_allowed as is_ip_allowed  # re-exported

PREVIEW_ERROR_KINDS: Final = frozenset({"bad_url", "blocked", "too_large", "failed"})


class PreviewError(Exception):
    """Why a preview could not be made.

    ``kind`` is one of: "bad_url" (not http/https, no host, unparsable, credentials in URL),
    "blocked" (resolves to a disallowed IP), "too_large" (body over max_size), "failed"
    (connect error, timeout, HTTP status >= 400, too many redirects, bad encoding...).
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in PREVIEW_ERROR_KINDS:
            raise ValueError(f"unknown PreviewError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one fetch; ``allowed_networks`` are the operator's exceptions to the block list."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    max_size: int = 10 * 1024 * 1024
    timeout: float = 10.0  # seconds, for the whole fetch including redirects
    max_redirects: int = 5
    user_agent: str = "Peyvand (Matrix homeserver; URL previews)"


# --- fetching ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedResource:
    """A fetched body and what the server said about it."""

    url: str  # final URL after redirects
    content_type: str  # media type without parameters, lower-case; application/octet-stream
    charset: str | None  # from the Content-Type header, if any
    data: bytes  # at most policy.max_size bytes


_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_ACCEPT: Final = "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5"
_READ_CHUNK: Final = 64 * 1024


def _validate_url(raw: str | URL) -> URL:
    """Parse and check one hop's URL; raises PreviewError("bad_url")."""
    try:
        url = raw if isinstance(raw, URL) else URL(raw.strip())
    except (ValueError, TypeError) as exc:
        raise PreviewError("bad_url", f"unparsable URL: {exc}") from exc  # e.g. bad port
    if not url.absolute or url.scheme not in ("http", "https"):
        raise PreviewError("bad_url", "only absolute http and https URLs can be previewed")
    if url.raw_user is not None or url.raw_password is not None:
        raise PreviewError("bad_url", "URLs with credentials cannot be previewed")
    host = url.host
    if not host:
        raise PreviewError("bad_url", "the URL has no host")
    if ":" not in host:
        # Legacy numeric IPv4 forms ("127.1", "2130706433", "0x7f.0.0.1") would reach the
        # resolver or be refused deep inside aiohttp; refuse them plainly.
        try:
            socket.inet_aton(host)
        except OSError:
            pass
        else:
            if parse_ip(host) is None:
                raise PreviewError("bad_url", "non-canonical IPv4 address")
    return url.with_fragment(None)


def _check_ip_literal(url: URL, allowed: tuple[IPNetwork, ...]) -> None:
    """aiohttp connects to IP-literal hosts without asking the resolver: check them here."""
    ip = parse_ip(url.host or "")
    if ip is not None and not is_ip_allowed(ip, allowed):
        raise PreviewError("blocked", f"{ip} is not an allowed address")


class UrlFetcher:
    """Fetches URLs for previews without reaching disallowed addresses.

    One ``aiohttp.ClientSession`` whose connector's resolver drops disallowed addresses;
    IP-literal hosts are checked before each request. Redirects are followed manually, each
    hop re-validated. The body is read in chunks and abandoned as soon as it exceeds
    ``max_size`` (compressed bodies count after decompression); the whole fetch, redirects
    included, is bounded by ``policy.timeout``.
    """

    def __init__(self, policy: FetchPolicy, *, resolver: AbstractResolver | None = None) -> None:
        """``resolver`` is the one whose answers are filtered (aiohttp's default if None)."""
        self._policy = policy
        self._inner_resolver = resolver
        self._resolver: FilteringResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Create the session; must run inside the event loop that will use it."""
        if self._session is not None:
            return
        self._session, self._resolver = guarded_session(
            self._policy.allowed_networks,
            self._inner_resolver,
            limit=100,
            limit_per_host=4,
            timeout=self._policy.timeout,
            headers={"User-Agent": self._policy.user_agent, "Accept": _ACCEPT},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        await close_session(session, resolver)

    async def fetch(self, url: str) -> FetchedResource:
        """Fetch ``url`` following redirects; raises PreviewError."""
        if self._session is None:
            raise RuntimeError("UrlFetcher.start() has not been called")
        target = _validate_url(url)
        try:
            async with asyncio.timeout(self._policy.timeout):
                return await self._fetch(self._session, target)
        except TimeoutError as exc:
            raise PreviewError("failed", "timed out") from exc

    async def _fetch(self, session: aiohttp.ClientSession, url: URL) -> FetchedResource:
        policy = self._policy
        for _hop in range(policy.max_redirects + 1):
            _check_ip_literal(url, policy.allowed_networks)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise PreviewError("failed", f"HTTP {resp.status} without Location")
                        try:
                            next_url = url.join(URL(location))
                        except (ValueError, TypeError) as exc:
                            raise PreviewError("bad_url", f"bad redirect: {exc}") from exc
                        url = _validate_url(next_url)
                        continue
                    if not 200 <= resp.status < 300:
                        raise PreviewError("failed", f"HTTP {resp.status}")
                    data = await self._read_body(resp)
                    return FetchedResource(
                        url=str(url),
                        content_type=resp.content_type.lower() or "application/octet-stream",
                        charset=resp.charset,
                        data=data,
                    )
            except aiohttp.ClientConnectorError as exc:
                if is_blocked_error(exc):
                    raise PreviewError("blocked", str(exc.os_error)) from exc
                raise PreviewError("failed", f"cannot connect: {exc}") from exc
            except aiohttp.InvalidURL as exc:
                raise PreviewError("bad_url", f"invalid URL: {exc}") from exc
            except (aiohttp.ClientError, UnicodeError, ValueError) as exc:
                raise PreviewError("failed", f"{type(exc).__name__}: {exc}") from exc
        raise PreviewError("failed", f"more than {policy.max_redirects} redirects")

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        max_size = self._policy.max_size
        if resp.content_length is not None and resp.content_length > max_size:
            resp.close()
            raise PreviewError("too_large", f"Content-Length {resp.content_length} > {max_size}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > max_size:
                resp.close()
                raise PreviewError("too_large", f"body exceeds {max_size} bytes")
        return bytes(body)


# --- OpenGraph ----------------------------------------------------------------------------------

_MAX_PARSE_BYTES: Final = 1024 * 1024
_FEED_CHUNK: Final = 64 * 1024
_SNIFF_BYTES: Final = 1024
_MAX_TEXT_LENGTH: Final = 500
_TRUNCATED_KEYS: Final = frozenset({"og:title", "og:description"})
_IMAGE_KEYS: Final = frozenset({"og:image", "og:image:url", "og:image:secure_url"})

_META_CHARSET: Final = re.compile(
    rb"<\s*meta[^>]*?charset\s*=\s*[\"']?\s*([a-zA-Z0-9_:.\-]+)", re.I
)
_XML_ENCODING: Final = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([a-zA-Z0-9_.\-]+)", re.I)
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Codecs that are no use for HTML and slow or odd on hostile input.
_REFUSED_CODECS: Final = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"}
)
# As browsers do (WHATWG Encoding): these labels mean windows-1252.
_WINDOWS_1252_LABELS: Final = frozenset({"iso8859-1", "ascii"})


def _text_codec(label: str | None) -> str | None:
    """A usable Python codec name for a charset label, or None."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
        b"".decode(name)  # LookupError for bytes-to-bytes codecs (base64, zlib...)
    except (LookupError, ValueError, TypeError):
        return None
    if name.replace("_", "-") in _REFUSED_CODECS:
        return None
    return "cp1252" if name in _WINDOWS_1252_LABELS else name


def _sniff_charset(head: bytes) -> str | None:
    match = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    return match.group(1).decode("ascii") if match else None


def _decode(data: bytes, charset: str | None) -> str:
    data = data[:_MAX_PARSE_BYTES]
    bom = next((codec for mark, codec in _BOMS if data.startswith(mark)), None)
    for label in (bom, charset, _sniff_charset(data[:_SNIFF_BYTES])):
        codec = _text_codec(label)
        if codec is None:
            continue
        try:
            return data.decode(codec, errors="replace")
        except Exception:  # a codec that ignores errors="replace"; try the next one
            continue
    return data.decode("utf-8", errors="replace")


class _OpenGraphParser(HTMLParser):
    """Collects og: meta tags, <title> and <meta name="description"> until </head>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title_parts: list[str] = []
        self.description: str | None = None
        self.done = False
        self._in_title = False
        self._title_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:
            return
        if tag == "meta":
            self._meta({name: value for name, value in attrs if value is not None})
        elif tag == "title" and not self._title_seen:
            self._in_title = True
            self._title_seen = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "head":
            self.done = True

    def handle_data(self, data: str) -> None:
        if self._in_title and not self.done:
            self.title_parts.append(data)

    def _meta(self, attrs: dict[str, str]) -> None:
        content = attrs.get("content", "").strip()
        if not content:
            return
        for attr in ("property", "name"):
            key = attrs.get(attr, "").strip().lower()
            if key.startswith("og:"):
                self.og.setdefault(key, content)
                return
        if attrs.get("name", "").strip().lower() == "description" and self.description is None:
            self.description = content


def _truncate(text: str) -> str:
    if len(text) <= _MAX_TEXT_LENGTH:
        return text
    return text[: _MAX_TEXT_LENGTH - 1].rstrip() + "…"


def _absolute_http_url(value: str, base_url: str) -> str | None:
    try:
        joined = urllib.parse.urljoin(base_url, value)
        parts = urllib.parse.urlsplit(joined)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return joined


def parse_opengraph(data: bytes, charset: str | None, base_url: str) -> dict[str, str]:
    """OpenGraph tags of an HTML document, with Synapse's fallbacks.

    Every ``<meta property="og:...">`` (or ``name="og:..."``) content, the first occurrence of
    each winning; ``og:title`` falls back to ``<title>`` and ``og:description`` to
    ``<meta name="description">``. Image URLs are made absolute against ``base_url`` and kept
    only if http(s). Titles and descriptions are cut to 500 characters. The charset is the
    given one, else a BOM / ``<meta charset>`` / ``http-equiv`` in the first 1 KiB, else UTF-8.
    Parsing stops at ``</head>`` or after 1 MiB. Never raises on malformed input.
    """
    parser = _OpenGraphParser()
    try:
        text = _decode(data, charset)
        for start in range(0, len(text), _FEED_CHUNK):
            parser.feed(text[start : start + _FEED_CHUNK])
            if parser.done:
                break
        if not parser.done:
            parser.close()
    except Exception:  # HTMLParser is lenient, but keep whatever was collected regardless
        pass

    result: dict[str, str] = {}
    for key, value in parser.og.items():
        if key in _IMAGE_KEYS:
            absolute = _absolute_http_url(value, base_url)
            if absolute is not None:
                result[key] = absolute
        elif key in _TRUNCATED_KEYS:
            result[key] = _truncate(" ".join(value.split()))
        else:
            result[key] = value
    if "og:title" not in result:
        title = " ".join("".join(parser.title_parts).split())
        if title:
            result["og:title"] = _truncate(title)
    if "og:description" not in result and parser.description:
        description = " ".join(parser.description.split())
        if description:
            result["og:description"] = _truncate(description)
    return result
