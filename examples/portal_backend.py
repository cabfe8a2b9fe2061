"""A portal backend embedding pds: the host serves grantees' invocations over HTTP.

The host process holds the store and its host key, never an owner's secret. A grantee
POSTs an invocation (the bytes of ``pds.Invocation``) to ``/serve`` and receives the
response bytes, which only the grantee's private key can open.

This is an example, not a production server: behind it put TLS (the invocation carries
the token, its purpose, collection names and record ids in the clear; record contents
stay sealed to the grantee), a real WSGI server and rate limiting (anyone who knows a
vault id can have refusals logged in it). It serves each request in its own thread with
its own store (a ``Store`` belongs to one thread), drops connections idle for
``TIMEOUT`` seconds, and answers every failure with a status and one line, never a
traceback.

Run ``python examples/portal_backend.py`` for a self-contained demonstration: it starts the
server on a free local port, plays the owner (grant) and an agency (read over HTTP), and
stops. ``--serve PORT --store PATH`` runs only the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pds

MAX_BODY = 256 * 1024
TIMEOUT = 10.0
"""Seconds a connection may stay silent (an idle client must not hold a worker)."""


def make_app(store_path: Path) -> Callable[..., Iterable[bytes]]:
    """A WSGI application. Each request opens its own store (a Store is per thread)."""

    def reply(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        return [f"{text}\n".encode()]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] != "/serve":
            return reply(start_response, "404 Not Found", "not found")
        if environ["REQUEST_METHOD"] != "POST":
            return reply(start_response, "405 Method Not Allowed", "POST an invocation")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return reply(start_response, "400 Bad Request", "bad request")
        try:
            body = environ["wsgi.input"].read(length)
            with pds.open_store(store_path, create=False) as store:
                response = store.serve(body)
        except pds.errors.FormatError:
            return reply(start_response, "400 Bad Request", "malformed invocation")
        except pds.errors.AccessDenied as denied:
            # The reason code is safe to return; it names the rule, never data.
            return reply(start_response, "403 Forbidden", f"denied: {denied.reason}")
        except (pds.errors.NotFound, pds.errors.VaultDestroyed):
            # As a refusal: a caller without a valid token learns nothing about which
            # vault ids exist.
            return reply(start_response, "403 Forbidden", "denied: vault")
        except TimeoutError:  # the client stopped sending its body
            return reply(start_response, "408 Request Timeout", "request timeout")
        except pds.errors.StoreBusy:
            start_response("503 Service Unavailable", [("Retry-After", "1")])
            return [b"busy, retry\n"]
        except Exception:  # the last line of defence: no traceback leaves the server
            return reply(start_response, "500 Internal Server Error", "internal error")
        start_response("200 OK", [("Content-Type", "application/msgpack")])
        return [response.to_bytes()]

    return app


class _QuietHandler(WSGIRequestHandler):
    timeout = TIMEOUT  # a connection silent this long is closed

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the access log in the vault is the record."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per connection (each opens its own store), so a slow client does not
    hold the others; threads do not outlive the server."""

    daemon_threads = True
    request_queue_size = 64


def serve(port: int, store_path: Path) -> WSGIServer:
    return make_server(
        "127.0.0.1",
        port,
        make_app(store_path),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )


def post(url: str, data: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def demonstrate() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        store_path = Path(workdir) / "portal.db"
        owner_key = Path(workdir) / "owner.key"
        pds.SymmetricKey.create_file(owner_key)
        agency_key = pds.PrincipalKey.generate()
        with pds.open_store(store_path) as store:
            vault = store.open_vault(store.create_vault(key_file=owner_key))
            vault.unlock(key_file=owner_key)
            vault.put("income/payslips", {"employer": "ACME", "net": 2450.0})
            token = vault.grant(
                agency_key.did,
                collections=["income/*"],
                purpose="housing benefit",
                expires=dt.timedelta(days=7),
            )
        server = serve(0, store_path)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}/serve"
        try:
            agency = pds.Grantee(agency_key)
            invocation = agency.invoke(token)
            status, body = post(url, invocation.to_bytes())
            print("serve:", status)
            read = agency.open(token, body, invocation=invocation)
            print("the agency read over HTTP:", [record.data for record in read.records])
            status, body = post(url, invocation.to_bytes())
            print("the same invocation again:", status, body.decode().strip())
        finally:
            server.shutdown()
            server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", type=int, metavar="PORT")
    parser.add_argument("--store", type=Path)
    args = parser.parse_args()
    if args.serve is None:
        demonstrate()
        return
    if args.store is None:
        parser.error("--serve needs --store")
    try:
        pds.open_store(args.store, create=False).close()  # fail now, not on every request
    except pds.errors.PDSError as exc:
        parser.error(f"--store: {exc}")
    with serve(args.serve, args.store) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
