"""A portal backend embedding pds: the host serves grantees' invocations over HTTP.

The host process holds the store and its host key, never an owner's secret. A grantee
POSTs an invocation (the bytes of ``pds.Invocation``) to ``/serve`` and receives the
response bytes, which only the grantee's private key can open.

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
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pds

MAX_BODY = 256 * 1024


def make_app(store_path: Path) -> Callable[..., Iterable[bytes]]:
    """A WSGI application. Each request opens its own store (a Store is per thread)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] != "/serve" or environ["REQUEST_METHOD"] != "POST":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not 0 < length <= MAX_BODY:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad request\n"]
        body = environ["wsgi.input"].read(length)
        try:
            with pds.open_store(store_path, create=False) as store:
                response = store.serve(body)
        except pds.errors.FormatError:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"malformed invocation\n"]
        except pds.errors.AccessDenied as denied:
            # The reason code is safe to return; it names the rule, never data.
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [f"denied: {denied.reason}\n".encode()]
        start_response("200 OK", [("Content-Type", "application/msgpack")])
        return [response.to_bytes()]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the access log in the vault is the record."""


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
        server = make_server("127.0.0.1", 0, make_app(store_path), handler_class=_QuietHandler)
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
    with make_server(
        "127.0.0.1", args.serve, make_app(args.store), handler_class=_QuietHandler
    ) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
