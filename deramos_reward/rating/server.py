"""The rating web app: a standard-library HTTP server in front of a :class:`RatingLog`.

Routes (nothing else exists; every other path is 404):

- ``GET /``, ``/app.js``, ``/app.css``: the page (static, holds no data, needs no token);
- ``GET /api/next?rater=ID``: the rater's progress and next item
  (``{"mode", "rater", "done", "total", "item": {"id", "prompt", "clips": [{"label", "audio", "judge"?}]}}``,
  ``item`` is null when the rater is finished);
- ``POST /api/rate`` with ``{"rater", "item", "answer"}`` (``Content-Type: application/json``):
  appends one line; 409 if the rater already answered the item;
- ``GET /audio/N``: the N-th clip of the manifest (byte ranges supported). URLs carry a clip
  index, never a path, so only listed files can be asked for; the real path is checked against
  the audio root again on every request (a file swapped for a symlink after start gets 404).

With a token, ``/api/*`` and ``/audio/*`` need it as ``?token=`` or an ``X-Deramos-Token`` header
(401 otherwise). Bound to a loopback address, requests must name that address in ``Host``
(defeats DNS rebinding). Bad requests get a 4xx with ``{"error": "..."}`` and write nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .clips import AUDIO_TYPES, check_rater, inside
from .page import APP_CSS, APP_JS, PAGE_HTML
from .storage import AlreadyRated, RatingLog, UnknownItem

MAX_BODY = 16 * 1024
AUDIO_ROUTE = re.compile(r"/audio/(\d{1,9})")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = {
    "/": (PAGE_HTML, "text/html; charset=utf-8"),
    "/app.js": (APP_JS, "text/javascript; charset=utf-8"),
    "/app.css": (APP_CSS, "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class HTTPError(Exception):
    """A 4xx answer with a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RatingApp:
    """What the handlers share: the open log, the audio root and the session's options.

    judge: per clip index, ``(mi, ta)`` or None; shown only when ``show_judge``.
    raters: the allowed rater ids (None: any valid id).
    """

    log: RatingLog
    audio_root: str  # a real path (see clips.resolve_root)
    token: str | None = None
    show_judge: bool = False
    judge: list[tuple[float, float] | None] = field(default_factory=list)
    raters: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self.audio_root = os.path.realpath(self.audio_root)

    def check_token(self, query: dict[str, list[str]], header: str | None) -> None:
        if self.token is None:
            return
        given = header if header is not None else (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPError(401, "missing or wrong token: open the URL printed by deramos rate")

    def check_rater(self, rater: Any) -> str:
        try:
            check_rater(rater)
        except ValueError as err:
            raise HTTPError(400, str(err)) from None
        if self.raters is not None and rater not in self.raters:
            raise HTTPError(403, f"rater {rater!r} is not one of this session's raters")
        return rater

    def next_payload(self, rater: str) -> dict[str, Any]:
        item = self.log.next_item(rater)
        done, total = self.log.progress(rater)
        payload: dict[str, Any] = {"mode": self.log.mode, "rater": rater, "done": done, "total": total}
        if item is None:
            return {**payload, "item": None}
        clips = []
        for label, clip in zip("AB", self.log.shown(rater, item)):
            entry: dict[str, Any] = {"label": label, "audio": f"/audio/{clip.index}"}
            judge = self.judge[clip.index] if clip.index < len(self.judge) else None
            if self.show_judge and judge is not None:
                entry["judge"] = {"mi": round(judge[0], 2), "ta": round(judge[1], 2)}
            clips.append(entry)
        return {**payload, "item": {"id": item.id, "prompt": item.prompt, "clips": clips}}

    def rate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or sorted(body) != ["answer", "item", "rater"]:
            raise HTTPError(400, 'the body must be {"rater": ..., "item": ..., "answer": {...}}')
        rater = self.check_rater(body["rater"])
        try:
            done, total = self.log.record(rater, body["item"], body["answer"])
        except UnknownItem:
            raise HTTPError(404, f"no item {body['item']!r} in this session") from None
        except AlreadyRated:
            raise HTTPError(409, f"rater {rater!r} already answered item {body['item']!r}") from None
        except ValueError as err:
            raise HTTPError(400, str(err)) from None
        return {"done": done, "total": total}

    def audio_file(self, index: int) -> str:
        clips = self.log.clips
        if index >= len(clips):
            raise HTTPError(404, "not found")
        path = clips[index].file
        if not inside(path, self.audio_root) or not os.path.isfile(path):
            raise HTTPError(404, "not found")
        return path


class RatingServer(ThreadingHTTPServer):
    """A threading HTTP server holding a :class:`RatingApp`.

    ``server_close`` returns within about ``stop_grace_s``: it hangs up connections that have not sent a
    request (a browser's idle or speculative ones would otherwise hold it for the handler's 30 s
    timeout), gives requests in flight ``stop_grace_s`` to finish, cuts the rest and waits for every
    handler thread. An answer being recorded is never cut: recording does no socket I/O.
    """

    daemon_threads = False
    block_on_close = True
    stop_grace_s = 2.0

    def __init__(self, address: tuple[str, int], app: RatingApp) -> None:
        self.app = app
        self._connections: dict[socket.socket, bool] = {}  # open connection -> a request has arrived
        self._changed = threading.Condition()
        self._closing = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RatingHandler)
        host, port = self.server_address[:2]
        loopback = host in LOOPBACK or host.startswith("127.")
        names = {host, "127.0.0.1", "localhost"} if loopback else None
        self.allowed_hosts = None if names is None else {f"{h}:{port}" for h in names} | {f"[::1]:{port}"}

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._changed:
            self._connections[request] = False
        super().process_request(request, client_address)

    def request_arrived(self, request: Any) -> None:
        """Called by the handler once a request line is in: from now on ``server_close`` lets it finish."""
        with self._changed:
            if request in self._connections:
                self._connections[request] = True

    def shutdown_request(self, request: Any) -> None:
        with self._changed:
            self._connections.pop(request, None)
            self._changed.notify_all()
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self._closing:  # a connection cut by server_close is not worth a traceback
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        self.socket.close()  # no new connections
        with self._changed:
            self._closing = True
            self._hang_up(busy=False)
            self._changed.wait_for(lambda: not any(self._connections.values()), timeout=self.stop_grace_s)
            self._hang_up(busy=True)
        super().server_close()  # joins the handler threads, which now end promptly

    def _hang_up(self, busy: bool) -> None:
        """Shut down the connections whose request state is ``busy`` (their handlers see EOF / EPIPE)."""
        for sock, has_request in self._connections.items():
            if has_request == busy:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` -> (start, end inclusive); None for the whole file; 416 when unsatisfiable."""
    if header is None:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(0) == "bytes=-":
        return None  # several ranges or another unit: send the whole file (allowed by RFC 9110)
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise HTTPError(416, f"range {header!r} is outside the file ({size} bytes)")
    return start, end


class RatingHandler(BaseHTTPRequestHandler):
    """One request; routes and checks as in the module doc."""

    server: RatingServer
    server_version = "deramos-rate"
    sys_version = ""
    timeout = 30  # seconds a slow client may hold a connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def parse_request(self) -> bool:
        self.server.request_arrived(self.connection)
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the request parser: an unknown method is 405 and a bad HTTP version 400 (not 5xx),
        since both are the client's fault."""
        if code == 501:
            code, message = 405, f"method {self.command!r} is not allowed"
        elif code >= 500:
            code = 400
        self.request_version = "HTTP/1.0"  # answer with a status line even to a malformed request line
        super().send_error(code, message, explain)

    # ---- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
        }
        for key, value in {**headers, **SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    # ---- methods ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _not_allowed(self) -> None:
        self._json(405, {"error": f"method {self.command} is not allowed"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _dispatch(self) -> None:
        try:
            self._route()
        except HTTPError as err:
            extra = {"WWW-Authenticate": "Token"} if err.status == 401 else None
            if err.status == 405:
                extra = {"Allow": "POST" if urlsplit(self.path).path == "/api/rate" else "GET, HEAD"}
            body = json.dumps({"error": str(err)}).encode()
            self._send(err.status, body, "application/json", extra)
        except (BrokenPipeError, ConnectionResetError):  # the browser closed the connection
            pass

    def _route(self) -> None:
        app = self.server.app
        allowed = self.server.allowed_hosts
        if allowed is not None and self.headers.get("Host") not in allowed:
            raise HTTPError(400, "unexpected Host header")
        url = urlsplit(self.path)
        route = url.path
        if route in STATIC:
            if self.command not in ("GET", "HEAD"):
                raise HTTPError(405, "only GET")
            text, kind = STATIC[route]
            return self._send(200, text.encode(), kind)
        if not (route.startswith("/api/") or route.startswith("/audio/")):
            raise HTTPError(404, "not found")
        try:
            query = parse_qs(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
        except ValueError:
            raise HTTPError(400, "malformed query string") from None
        app.check_token(query, self.headers.get("X-Deramos-Token"))
        if route == "/api/next":
            if self.command not in ("GET", "HEAD"):
                raise HTTPError(405, "only GET")
            rater = app.check_rater((query.get("rater") or [None])[0])
            return self._json(200, app.next_payload(rater))
        if route == "/api/rate":
            if self.command != "POST":
                raise HTTPError(405, "only POST")
            return self._json(200, app.rate(self._body()))
        match = AUDIO_ROUTE.fullmatch(route)
        if match is None:
            raise HTTPError(404, "not found")
        if self.command not in ("GET", "HEAD"):
            raise HTTPError(405, "only GET")
        self._audio(app.audio_file(int(match.group(1))))

    def _body(self) -> Any:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HTTPError(415, "send the answer as application/json")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HTTPError(411, "a Content-Length header is required")
        if int(length) > MAX_BODY:
            raise HTTPError(413, f"the body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HTTPError(400, "the body is not valid JSON") from None

    def _audio(self, path: str) -> None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            raise HTTPError(404, "not found") from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            span = parse_range(self.headers.get("Range"), size)
            start, end = span if span is not None else (0, size - 1)
            self.send_response(206 if span is not None else 200)
            kind = AUDIO_TYPES[os.path.splitext(path)[1].lower()]
            headers = {"Content-Type": kind, "Content-Length": str(end - start + 1), "Accept-Ranges": "bytes"}
            if span is not None:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            for key, value in {**headers, "Cache-Control": "no-store", **SECURITY_HEADERS}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def start_server(app: RatingApp, host: str = "127.0.0.1", port: int = 7860) -> RatingServer:
    """Bind (``port=0``: a free port) and serve in a background thread; stop with :func:`stop_server`."""
    server = RatingServer((host, port), app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="deramos-rate", daemon=True
    )
    thread.start()
    server.thread = thread  # type: ignore[attr-defined]
    return server


def stop_server(server: RatingServer) -> None:
    """Stop serving, let requests in flight finish (see :class:`RatingServer`), release the socket
    (the log stays open)."""
    server.shutdown()
    server.server_close()
    server.thread.join(timeout=30)  # type: ignore[attr-defined]
