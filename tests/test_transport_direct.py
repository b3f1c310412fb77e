"""The shells' request path straight to the httpcore pool (async: on its asyncio network backend).

Checked against a raw asyncio server that records each request's bytes: the request is the
same, byte for byte, as the one httpx's client sends (the path a hook takes); compressed
bodies are decoded; no cookie is kept from one call for the next; a proxy the environment
names carries both shells' calls (through httpx's client, where the hook sees them), https
through a CONNECT tunnel; TLS connects (and refuses an untrusted certificate)
on the asyncio backend; many calls at once share the pool within its keep-alive limit.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Self

import httpx
import orjson
import pytest

import allm
from allm import _transport
from allm.providers import OpenAICompatible
from tests.loopback import chat_chunks

FAST = allm.RetryPolicy(max_attempts=1)


class Loopback:
    """A server on a free loopback port (TLS with ``ssl``); ``_serve`` answers each connection."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.ssl: ssl.SSLContext | None = None

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Recorder(Loopback):
    """One loopback HTTP/1.1 server answering every request with ``answer`` and keeping its bytes."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[bytes] = []
        self.close_after = False  # close each connection once it has answered (no keep-alive)
        self.connections = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await r.readexactly(length)
                self.requests.append(head + body)
                w.write(self.answer)
                await w.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()


def sse_answer(extra: bytes = b"") -> bytes:
    body = b"".join(chat_chunks(["Hel", "lo"])) + b"data: [DONE]\n\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def json_answer(obj: object, extra: bytes = b"") -> bytes:
    body = orjson.dumps(obj)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class PassThrough:
    """An exchange hook that sends every request as it is: the path through httpx's client."""

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
        return send(request)

    async def ahandle(self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> httpx.Response:
        return await send(request)


@pytest.fixture
async def fresh_pool() -> AsyncIterator[None]:
    await _transport.aclose()
    yield
    await _transport.aclose()


def engine(url: str, **headers: str) -> allm.Engine:
    return allm.Engine(adapter=OpenAICompatible(url, headers=headers), model="m", retry=FAST)


async def both_ways(call: Callable[[], Awaitable[object]], rec: Recorder) -> tuple[bytes, bytes]:
    """The bytes of ``call``'s request sent directly, then through httpx's client."""
    assert _transport._loop_pool().direct
    await call()
    previous = _transport.set_exchange_hook(PassThrough())
    try:
        await call()
    finally:
        _transport.set_exchange_hook(previous)
    assert len(rec.requests) == 2
    return rec.requests[0], rec.requests[1]


async def test_a_streamed_call_sends_the_bytes_httpx_sends(fresh_pool: None) -> None:
    rec = await Recorder(sse_answer()).start()
    try:
        eng = engine(rec.url, **{"X-Tenant": "t1", "user-agent": "custom/1", "ACCEPT": "text/event-stream"})
        direct, through_httpx = await both_ways(lambda: allm.agenerate(eng, "hi", api_key="sk-abc"), rec)
        assert direct == through_httpx
        assert b"user-agent: custom/1\r\n" in direct and b"python-httpx" not in direct
        assert direct.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
    finally:
        await rec.stop()


async def test_a_bodiless_call_sends_the_bytes_httpx_sends(fresh_pool: None) -> None:
    rec = await Recorder(json_answer({"object": "list", "data": [{"id": "a"}, {"id": "b"}]})).start()
    try:
        eng = engine(rec.url)
        direct, through_httpx = await both_ways(lambda: allm.alist_models(eng, api_key="sk-abc"), rec)
        assert direct == through_httpx and direct.startswith(b"GET /v1/models HTTP/1.1\r\n")
        assert b"content-length" not in direct.lower()
        assert await allm.alist_models(eng) == ["a", "b"]
    finally:
        await rec.stop()


async def test_a_gzip_body_is_decoded(fresh_pool: None) -> None:
    body = gzip.compress(orjson.dumps({"object": "list", "data": [{"id": "zipped"}]}))
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    rec = await Recorder(answer).start()
    try:
        assert await allm.alist_models(engine(rec.url)) == ["zipped"]
    finally:
        await rec.stop()


async def test_a_corrupt_gzip_body_is_a_malformed_response(fresh_pool: None) -> None:
    body = b"not gzip at all"
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    rec = await Recorder(answer).start()
    try:
        with pytest.raises(allm.AdapterError) as info:
            await allm.alist_models(engine(rec.url))
        assert info.value.reason == "malformed_response"
    finally:
        await rec.stop()


async def test_sync_calls_send_the_bytes_httpx_sends_and_read_gzip(fresh_pool: None) -> None:
    """The sync shell takes the same straight road: a streamed call's and a model list's request
    bytes equal what httpx's client sends (through a hook), a gzip body is decoded and a
    corrupt one is a malformed response."""
    assert _transport._sync_core(_transport.sync_client()) is not None
    rec = await Recorder(sse_answer()).start()
    try:
        eng = engine(rec.url, **{"X-Tenant": "t1", "user-agent": "custom/1"})
        assert (await asyncio.to_thread(allm.generate, eng, "hi", api_key="sk-abc")).output_text == "Hello"
        previous = _transport.set_exchange_hook(PassThrough())
        try:
            await asyncio.to_thread(allm.generate, eng, "hi", api_key="sk-abc")
        finally:
            _transport.set_exchange_hook(previous)
        assert len(rec.requests) == 2 and rec.requests[0] == rec.requests[1]
        assert b"user-agent: custom/1\r\n" in rec.requests[0]
    finally:
        await rec.stop()
    rec = await Recorder(json_answer({"object": "list", "data": [{"id": "a"}]})).start()
    try:
        await asyncio.to_thread(allm.list_models, engine(rec.url))
        previous = _transport.set_exchange_hook(PassThrough())
        try:
            await asyncio.to_thread(allm.list_models, engine(rec.url))
        finally:
            _transport.set_exchange_hook(previous)
        assert rec.requests[0] == rec.requests[1] and rec.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")
    finally:
        await rec.stop()
    for body, want in ((gzip.compress(orjson.dumps({"object": "list", "data": [{"id": "zipped"}]})), ["zipped"]),
                       (b"not gzip at all", None)):
        answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        rec = await Recorder(answer).start()
        try:
            if want is not None:
                assert await asyncio.to_thread(allm.list_models, engine(rec.url)) == want
            else:
                with pytest.raises(allm.AdapterError) as info:
                    await asyncio.to_thread(allm.list_models, engine(rec.url))
                assert info.value.reason == "malformed_response"
        finally:
            await rec.stop()


async def test_no_cookie_is_kept_from_one_call_for_the_next(fresh_pool: None) -> None:
    """The pools serve every caller of the process: a cookie an answer sets is never sent on a
    later call (another tenant's, perhaps), sync or async, direct or through httpx's client."""
    rec = await Recorder(json_answer({"object": "list", "data": []}, b"Set-Cookie: session=s1; Path=/\r\n")).start()
    try:
        eng = engine(rec.url)
        await allm.alist_models(eng)
        await allm.alist_models(eng)
        previous = _transport.set_exchange_hook(PassThrough())
        try:
            await allm.alist_models(eng)
            await allm.alist_models(eng)
        finally:
            _transport.set_exchange_hook(previous)
        await asyncio.to_thread(allm.list_models, eng)
        await asyncio.to_thread(allm.list_models, eng)
        assert len(rec.requests) == 6
        assert not any(b"cookie:" in r.lower() for r in rec.requests), rec.requests
        assert not _transport._loop_pool().client.cookies and not _transport.sync_client().cookies
    finally:
        await rec.stop()


class Counting(PassThrough):
    """A pass-through exchange hook that counts the requests it sees."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
        self.seen.append(str(request.url))
        return send(request)

    async def ahandle(self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> httpx.Response:
        self.seen.append(str(request.url))
        return await send(request)


async def _with_proxy_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], body: Callable[[], Awaitable[None]]) -> None:
    """``body`` with ``env`` set and both pooled clients made anew from it, then both dropped."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    await _transport.aclose()
    _transport.close()
    try:
        await body()
    finally:
        for name in env:
            monkeypatch.delenv(name, raising=False)
        await _transport.aclose()
        _transport.close()


async def test_a_proxy_in_the_environment_carries_sync_and_async_calls(monkeypatch: pytest.MonkeyPatch, fresh_pool: None) -> None:
    # The "proxy" is the recorder: it answers the absolute-form request a client sends a
    # forwarding proxy, so the call succeeds only through it (the provider's host does not exist).
    proxy = await Recorder(sse_answer()).start()
    eng = engine("http://provider.invalid/v1")

    async def body() -> None:
        hook = Counting()
        assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
        assert (await asyncio.to_thread(allm.generate, eng, "hi")).output_text == "Hello"
        previous = _transport.set_exchange_hook(hook)
        try:
            assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
            assert (await asyncio.to_thread(allm.generate, eng, "hi")).output_text == "Hello"
        finally:
            _transport.set_exchange_hook(previous)
        assert hook.seen == ["http://provider.invalid/v1/chat/completions"] * 2  # the hook sees proxied calls
        assert len(proxy.requests) == 4
        assert all(r.startswith(b"POST http://provider.invalid/v1/chat/completions HTTP/1.1\r\n") for r in proxy.requests)

    try:
        await _with_proxy_env(monkeypatch, {"HTTP_PROXY": proxy.url.removesuffix("/v1")}, body)
    finally:
        await proxy.stop()


class ConnectProxy(Loopback):
    """A loopback HTTPS proxy: answers ``CONNECT host:port`` and pipes the tunnel's bytes both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.connects: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            self.connects.append(line)
            host, _, port = line.split()[1].decode().rpartition(":")
            ur, uw = await asyncio.open_connection(host, int(port))
            w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await w.drain()

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


async def test_https_calls_tunnel_through_the_environments_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool: None) -> None:
    rec, cert_file = await _tls_recorder(tmp_path)
    proxy = await ConnectProxy().start()
    eng = engine(rec.url)

    async def body() -> None:
        for _ in range(2):
            assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
            assert (await asyncio.to_thread(allm.generate, eng, "hi")).output_text == "Hello"
        assert len(rec.requests) == 4 and all(r.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") for r in rec.requests)
        # one tunnel per pool (sync, async), each kept and reused for the second call
        assert proxy.connects == [f"CONNECT 127.0.0.1:{rec.port} HTTP/1.1".encode()] * 2

    try:
        await _with_proxy_env(monkeypatch, {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(cert_file)}, body)
    finally:
        await proxy.stop()
        await rec.stop()


async def test_no_proxy_hosts_are_called_directly(monkeypatch: pytest.MonkeyPatch, fresh_pool: None) -> None:
    rec = await Recorder(sse_answer()).start()
    eng = engine(rec.url)

    async def body() -> None:
        assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
        assert (await asyncio.to_thread(allm.generate, eng, "hi")).output_text == "Hello"
        assert len(rec.requests) == 2 and all(r.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") for r in rec.requests)

    try:  # the proxy's port has nothing listening: a call sent to it would fail
        await _with_proxy_env(monkeypatch, {"ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "localhost,127.0.0.1"}, body)
    finally:
        await rec.stop()


async def test_without_a_proxy_in_the_environment_calls_take_the_straight_road(monkeypatch: pytest.MonkeyPatch, fresh_pool: None) -> None:
    async def body() -> None:
        assert _transport._loop_pool().direct
        assert _transport._sync_core(_transport.sync_client()) is not None

    await _with_proxy_env(monkeypatch, {}, body)

    async def proxied() -> None:
        assert not _transport._loop_pool().direct
        assert _transport._sync_core(_transport.sync_client()) is None

    await _with_proxy_env(monkeypatch, {"HTTPS_PROXY": "http://127.0.0.1:9"}, proxied)


async def test_a_pooled_connection_the_server_closed_is_not_reused(fresh_pool: None) -> None:
    rec = Recorder(sse_answer())
    rec.close_after = True
    await rec.start()
    try:
        eng = engine(rec.url)  # one attempt: a stale connection would fail the call
        for _ in range(3):
            assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
            await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
        assert rec.connections == 3
    finally:
        await rec.stop()


async def test_many_calls_at_once_share_the_pool_within_its_keep_alive_limit(fresh_pool: None) -> None:
    rec = await Recorder(sse_answer()).start()
    try:
        eng = engine(rec.url)
        pool = _transport.async_client()._transport._pool  # type: ignore[attr-defined]
        for n in (150, 30):
            results = await asyncio.gather(*(allm.agenerate(eng, "hi") for _ in range(n)))
            assert all(r.output_text == "Hello" for r in results)
            open_ = [c for c in pool.connections if not c.is_closed()]
            assert 0 < len(open_) <= 100 and all(c.is_idle() for c in open_)  # the keep-alive limit
        assert rec.connections <= 150 + 30 and len(rec.requests) == 180
    finally:
        await rec.stop()


def _certificate(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def _tls_recorder(tmp: Path) -> tuple[Recorder, Path]:
    """A started TLS :class:`Recorder` with a self-signed certificate, and the certificate's file."""
    pytest.importorskip("cryptography")
    cert_file, key_file = _certificate(tmp)
    rec = Recorder(sse_answer())
    rec.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    rec.ssl.load_cert_chain(cert_file, key_file)
    return await rec.start(), cert_file


async def test_tls_on_the_asyncio_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool: None) -> None:
    rec, cert_file = await _tls_recorder(tmp_path)
    try:
        # Not trusted: the handshake fails as a network error.
        with pytest.raises(allm.AdapterError) as info:
            await allm.agenerate(engine(rec.url), "hi")
        assert info.value.reason == "network_error" and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
        # Trusted (httpx reads SSL_CERT_FILE when its pool is made): the call goes through, reusing its connection.
        await _transport.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        eng = engine(rec.url)
        for _ in range(3):
            assert (await allm.agenerate(eng, "hi")).output_text == "Hello"
        assert len(rec.requests) == 3
        conns = [c for c in _transport.async_client()._transport._pool.connections if not c.is_closed()]  # type: ignore[attr-defined]
        assert len(conns) == 1
    finally:
        await rec.stop()
