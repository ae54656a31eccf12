"""Fetch an avatar from a URL without letting the URL attack the worker (I/O module).

Avatar URLs come from account events, that is from whoever signs up, so the fetch treats every
URL as hostile (SSRF, slow-drip, oversized bodies, redirect games):

* schemes: ``http`` and ``https`` from allow-listed hosts; ``file`` only below ``file_root``;
* every address a host resolves to is checked, and loopback, private, link-local, reserved,
  multicast and other non-global ranges are refused unless the host is in
  ``allow_private_hosts``; the connection then goes to the address that was checked (the host
  is resolved once, so DNS rebinding between check and connect is impossible), while the Host
  header, SNI and certificate check still use the host name;
* redirects are followed by hand, each hop re-checked as above, at most ``max_redirects``;
* a single deadline (``connect_timeout_s + read_timeout_s``) bounds the whole fetch, redirects
  and every socket read included, so a server dripping one byte a second cannot hold a worker;
* the body is streamed and abandoned past ``max_bytes``; no content decoding is requested
  (``Accept-Encoding: identity``), so a gzip bomb is just a too-large body.

HTTP itself is httpcore (the transport under httpx); this module only supplies a network
backend that pins the address and enforces the deadline. Every refusal is an
:class:`~pipeline.avatars.errors.AvatarRefused`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import certifi
import httpcore

from pipeline.avatars.errors import AvatarRefused
from pipeline.settings import AvatarSettings

Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(host, port) -> addresses`` (IP literals as strings); raises OSError on failure."""

USER_AGENT = "unmask-avatar-fetch/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
NOT_FOUND_STATUSES = frozenset({404, 410})
CHUNK = 64 * 1024
LOOKUP_THREADS = 4
"""Threads doing name lookups, so that a lookup can be abandoned at the fetch deadline."""


@dataclass(frozen=True)
class Fetched:
    """The raw bytes of an avatar and where they finally came from."""

    data: bytes
    url: str
    """The URL the bytes were read from (after redirects)."""
    content_type: str | None
    redirects: int


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (A and AAAA), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for every special-purpose range.

    IPv4-mapped and 6to4/Teredo-embedded IPv6 addresses are judged by the IPv4 address inside.
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """``host`` equals a pattern, or a pattern starts with a dot and ``host`` is below it.

    ``.example.com`` matches ``example.com`` and ``a.b.example.com``. Case-insensitive.
    """
    host = host.lower().rstrip(".")
    for raw in patterns:
        pattern = raw.lower().rstrip(".")
        if pattern.startswith("."):
            if host == pattern[1:] or host.endswith(pattern):
                return True
        elif host == pattern:
            return True
    return False


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _clip(self, timeout: float | None, exc: type[Exception]) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise exc("avatar fetch deadline passed")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._clip(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to one already-checked address, whatever host name the URL carries."""

    def __init__(self, address: str, deadline: float) -> None:
        self._address = address
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise httpcore.ConnectTimeout("avatar fetch deadline passed")
        limit = remaining if timeout is None else min(timeout, remaining)
        stream = self._inner.connect_tcp(
            self._address,
            port,
            timeout=limit,
            local_address=local_address,
            socket_options=socket_options,
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for avatars")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AvatarFetcher:
    """Reads avatar bytes from ``http(s)://`` and ``file://`` URLs under the limits of
    :class:`~pipeline.settings.AvatarSettings`.

    ``fetch`` is blocking and thread-safe (no state is shared between calls); it returns
    :class:`Fetched` or raises :class:`AvatarRefused` (never anything else for a bad URL, a bad
    server or a bad file). Its wall time is bounded by ``connect_timeout_s + read_timeout_s``,
    name lookups included: a lookup runs in a small thread pool and is abandoned (``timeout``)
    when it outlives ``connect_timeout_s`` or the deadline. ``resolver`` replaces the system
    resolver (tests use it to make a name resolve into a private range without touching DNS);
    ``ssl_context`` replaces the default trust (the certifi CA bundle, hostname checked), for an
    on-premises CA. ``close`` stops the lookup threads.
    """

    def __init__(
        self,
        settings: AvatarSettings,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._resolver: Resolver = resolver or system_resolver
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        roots = [settings.file_root, *settings.extra_file_roots] if settings.file_root else []
        self._file_roots = [root.resolve() for root in roots]
        self._lookups: ThreadPoolExecutor | None = None
        self._lookups_lock = threading.Lock()

    def close(self) -> None:
        """Stop the lookup threads without waiting for abandoned lookups."""
        with self._lookups_lock:
            if self._lookups is not None:
                self._lookups.shutdown(wait=False, cancel_futures=True)
                self._lookups = None

    def _resolve(self, host: str, port: int, deadline: float) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        with self._lookups_lock:
            if self._lookups is None:
                self._lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="avatar-dns")
            future = self._lookups.submit(self._resolver, host, port)
        limit = min(self._settings.connect_timeout_s, deadline - time.monotonic())
        try:
            return list(future.result(timeout=max(0.0, limit)))
        except LookupTimeout:
            future.cancel()
            raise AvatarRefused("timeout", f"name lookup of {host}") from None

    def fetch(self, url: str) -> Fetched:
        s = self._settings
        deadline = time.monotonic() + s.connect_timeout_s + s.read_timeout_s
        current = url
        for hop in range(s.max_redirects + 1):
            parts = self._split(current)
            if parts.scheme == "file":
                if hop > 0:
                    raise AvatarRefused("scheme_not_allowed", "redirect to file://")
                return self._read_file(current)
            status, headers, body = self._http_once(current, deadline)
            if status in REDIRECT_STATUSES:
                location = headers.get("location")
                if not location:
                    raise AvatarRefused("http_status", f"{status} without Location")
                current = urljoin(current, location)
                continue
            if status == 200:
                return Fetched(body, current, headers.get("content-type"), hop)
            if status in NOT_FOUND_STATUSES:
                raise AvatarRefused("not_found", f"HTTP {status}")
            raise AvatarRefused("http_status", f"HTTP {status}")
        raise AvatarRefused("too_many_redirects", f"more than {s.max_redirects}")

    @staticmethod
    def _split(url: str) -> typing.Any:
        if len(url) > 4096 or any(ord(c) < 0x21 for c in url):
            raise AvatarRefused("bad_url", "too long or contains control characters/spaces")
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as error:
            raise AvatarRefused("bad_url", str(error)) from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https", "file"):
            raise AvatarRefused("scheme_not_allowed", scheme or "(none)")
        return parts

    # -- http -------------------------------------------------------------------------------

    def _check_host(self, host: str, port: int, deadline: float) -> str:
        """The address to connect to, after the allow-list and address-range checks."""
        s = self._settings
        if not host_matches(host, s.allowed_hosts):
            raise AvatarRefused("host_not_allowed", host)
        try:
            addresses = self._resolve(host, port, deadline)
        except (OSError, UnicodeError) as error:
            raise AvatarRefused("fetch_failed", f"cannot resolve {host}: {error}") from None
        if not addresses:
            raise AvatarRefused("fetch_failed", f"{host} has no address")
        if not host_matches(host, s.allow_private_hosts):
            for address in addresses:
                if not is_public_address(address):
                    raise AvatarRefused("private_address", f"{host} -> {address}")
        return addresses[0]

    def _http_once(self, url: str, deadline: float) -> tuple[int, dict[str, str], bytes]:
        s = self._settings
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise AvatarRefused("scheme_not_allowed", scheme or "(none)")
        if parts.username is not None or parts.password is not None:
            raise AvatarRefused("bad_url", "credentials in URL")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise AvatarRefused("bad_url", "no host")
        port = parts.port or (443 if scheme == "https" else 80)
        address = self._check_host(host, port, deadline)
        timeouts = {
            "connect": s.connect_timeout_s,
            "read": s.read_timeout_s,
            "write": s.read_timeout_s,
            "pool": s.connect_timeout_s,
        }
        headers = [
            (b"User-Agent", USER_AGENT.encode()),
            (b"Accept", b"image/jpeg, image/png, image/webp, image/gif"),
            (b"Accept-Encoding", b"identity"),
        ]
        try:
            with (
                httpcore.ConnectionPool(
                    ssl_context=self._ssl,
                    max_connections=1,
                    retries=0,
                    network_backend=_PinnedBackend(address, deadline),
                ) as pool,
                pool.stream(
                    "GET", url, headers=headers, extensions={"timeout": timeouts}
                ) as response,
            ):
                got = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
                }
                if response.status != 200:
                    return response.status, got, b""
                declared = got.get("content-length", "")
                if declared.isdigit() and int(declared) > s.max_bytes:
                    raise AvatarRefused("too_large", f"Content-Length {declared}")
                body = bytearray()
                for chunk in response.iter_stream():
                    body += chunk
                    if len(body) > s.max_bytes:
                        raise AvatarRefused("too_large", f"more than {s.max_bytes} bytes")
                return 200, got, bytes(body)
        except httpcore.TimeoutException as error:
            raise AvatarRefused("timeout", f"{type(error).__name__}: {error}") from None
        except (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            httpcore.LocalProtocolError,
            ssl.SSLError,
            OSError,
        ) as error:
            raise AvatarRefused("fetch_failed", f"{type(error).__name__}: {error}") from None

    # -- file -------------------------------------------------------------------------------

    def _read_file(self, url: str) -> Fetched:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise AvatarRefused("file_outside_root", f"remote file host {parts.netloc!r}")
        if not self._file_roots:
            raise AvatarRefused("scheme_not_allowed", "file:// is disabled (no file_root)")
        raw = unquote(parts.path)
        if "\x00" in raw:
            raise AvatarRefused("bad_url", "NUL in path")
        path = Path(raw)
        if not path.is_absolute() or ".." in path.parts:
            raise AvatarRefused("file_outside_root", raw)
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in self._file_roots):
            raise AvatarRefused("file_outside_root", raw)
        data = read_regular_file(resolved, self._settings.max_bytes, shown=raw)
        return Fetched(data, resolved.as_uri(), None, 0)


def read_regular_file(path: Path, max_bytes: int, shown: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (no FIFOs, devices or directories:
    opened non-blocking, checked with fstat); raises :class:`AvatarRefused`."""
    label = shown if shown is not None else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise AvatarRefused("not_found", label) from None
    except OSError as error:
        raise AvatarRefused("fetch_failed", f"{label}: {error.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise AvatarRefused("not_found", f"{label} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise AvatarRefused("too_large", f"{info.st_size} bytes")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise AvatarRefused("too_large", f"more than {max_bytes} bytes")
    return data
