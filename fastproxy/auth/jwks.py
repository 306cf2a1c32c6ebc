"""The JWK Set of a `jwk_url`, per worker: fetched at worker start, refreshed in the background,
never on the request path (but for one rate-limited refetch when a token names an unknown `kid`).

Owns the only I/O of `fastproxy.auth`: an HTTP/1.1 GET over asyncio streams (TLS through `ssl`
with certificate and host name checks; plain `http://` only with `disable_jwk_security`), bounded
in time (`FETCH_TIMEOUT`) and size (`MAX_BYTES`), redirects not followed, status 200 only.

Rules it keeps:
- Keys outlive a failed refresh: a JWKS endpoint that goes down leaves the last good keys in
  use (logged at each failure); only a worker that never got keys has none, and the validator
  then answers 503, never lets a request through.
- `pending` is the future of the fetch in flight (requests that need keys wait on it); it
  resolves to True (keys were read) or False, never to an exception.
- `refetch` (an unknown `kid`: keys may have rotated) starts a fetch at once unless the last
  such refetch started less than `cooldown` seconds ago (KrakenD's `failed_jwk_key_cooldown`),
  so a flood of forged `kid`s costs the identity provider one request per cooldown; the
  scheduled refreshes do not count against it.
- `generation` grows with each successful read: the validator's cache of verified tokens holds
  the generation it checked against, so a token signed by a key that rotated out is checked again.
"""

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import SplitResult

import httptools
import msgspec

from fastproxy.auth.jwt import KeySet, read_jwks

log = logging.getLogger("fastproxy.auth")

FETCH_TIMEOUT = 5.0  # seconds for one fetch, connect to last byte
MAX_BYTES = 1024 * 1024  # a JWK Set larger than this is refused (an identity provider's set is a few KiB)
RETRY_MIN, RETRY_MAX = 1.0, 60.0  # backoff between failed fetches


@dataclass(frozen=True, slots=True)
class SourceConfig:
    url: SplitResult
    alg: str
    refresh: float  # seconds between fetches while they succeed
    cooldown: float  # least seconds between two fetches asked for by unknown `kid`s
    ca_file: str  # jwk_local_ca, or "" for the system's CAs
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", msgspec.json.encode(
            ["jwks", self.url.geturl(), self.alg, self.refresh, self.cooldown, self.ca_file]))


class FetchError(Exception):
    pass


class _Response:
    """httptools callbacks: the status, the body (bounded), the end."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_BYTES:
            raise FetchError(f"JWK Set larger than {MAX_BYTES} bytes")

    def on_message_complete(self) -> None:
        self.done = True


async def fetch(url: SplitResult, context: Optional[ssl.SSLContext], timeout: float = FETCH_TIMEOUT) -> bytes:
    """GET `url`; the body of a 200 answer. FetchError for anything else."""
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if url.port is None else f"{shown}:{port}"
    request = (f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: fastproxy\r\n"
               "Accept: application/jwk-set+json, application/json\r\nConnection: close\r\n\r\n").encode()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                           server_hostname=host if context else None)
            writer.write(request)
            answer = _Response()
            parser = httptools.HttpResponseParser(answer)
            while not answer.done:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed_data(data)
            if not answer.done:
                raise FetchError("connection closed before the end of the answer")
            status = parser.get_status_code()
            if status != 200:
                raise FetchError(f"answered {status}, expected 200")
            return bytes(answer.body)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(str(exc) or type(exc).__name__) from None
    except httptools.HttpParserCallbackError as exc:
        raise FetchError(str(exc.__context__ or exc)) from None
    except httptools.HttpParserError as exc:
        raise FetchError(f"not an HTTP answer: {exc}") from None
    finally:
        if writer is not None:
            writer.close()


def client_context(ca_file: str) -> ssl.SSLContext:
    """Certificates and host names checked; `ca_file` (jwk_local_ca) replaces the system's CAs."""
    return ssl.create_default_context(cafile=ca_file or None)


class JWKSource:
    """One worker's keys of one `jwk_url`."""

    __slots__ = ("cfg", "context", "keys", "generation", "pending", "task", "last_refetch", "wake", "retry", "closed",
                 "fetches")

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.context = client_context(cfg.ca_file) if cfg.url.scheme == "https" else None
        self.keys: Optional[KeySet] = None
        self.generation = 0
        self.pending: Optional[asyncio.Future[bool]] = None
        self.task: Optional[asyncio.Task[None]] = None
        self.last_refetch = float("-inf")  # loop time of the last refetch asked for by an unknown kid
        self.fetches = 0
        self.wake: Optional[asyncio.Event] = None
        self.retry = RETRY_MIN
        self.closed = False

    def start(self) -> None:
        """Begin fetching, once, when this worker's loop runs (a later call does nothing)."""
        if self.task is not None or self.closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet (a State built outside a worker): the first request starts it
        self.wake = asyncio.Event()
        self.pending = loop.create_future()  # requests that come before the first answer wait for it
        self.task = loop.create_task(self._run(loop))

    def refetch(self) -> "Optional[asyncio.Future[bool]]":
        """A token names a `kid` these keys lack: the future of a fetch (the one in flight, or a
        new one), or None while the cooldown since the last fetch runs."""
        if self.pending is not None:
            return self.pending
        if self.task is None or self.wake is None:
            return None
        loop = self.task.get_loop()
        now = loop.time()
        if now - self.last_refetch < self.cfg.cooldown:
            return None
        self.last_refetch = now
        self.pending = loop.create_future()
        self.wake.set()
        return self.pending

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        self._settle(False)

    def _settle(self, ok: bool) -> None:
        fut = self.pending
        self.pending = None
        if fut is not None and not fut.done():
            fut.set_result(ok)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.cfg
        wake = self.wake
        assert wake is not None
        while not self.closed:
            if self.pending is None:
                self.pending = loop.create_future()
            self.fetches += 1
            ok = await self._fetch_once()
            self._settle(ok)
            if ok:
                self.retry = RETRY_MIN
                delay = cfg.refresh
            else:
                delay = min(self.retry, cfg.refresh)
                self.retry = min(self.retry * 2, RETRY_MAX)
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), delay)
            except TimeoutError:
                pass

    async def _fetch_once(self) -> bool:
        url = self.cfg.url.geturl()
        try:
            body = await fetch(self.cfg.url, self.context)
            keys = read_jwks(body, self.cfg.alg)
        except (FetchError, ValueError) as exc:
            kept = f"keeping the {len(self.keys)} keys read before" if self.keys is not None else \
                "no keys: its endpoints answer 503"
            log.warning("JWK Set %s: %s; %s", url, exc, kept)
            return False
        if self.keys is None:
            log.info("JWK Set %s: %d keys for %s", url, len(keys), self.cfg.alg)
        self.keys = keys
        self.generation += 1
        return True
