"""The plate page's HTTP server: an aiohttp app on its own event loop, in a thread of the service.

Routes (all JSON but the page, its three static files, thumbnails and the event stream):

    GET  /                                 the page (static/index.html)
    GET  /static/{app.js,style.css,favicon.svg}   only these names: anything else is 404
    GET  /api/state                        every plate: wells as [fields, flagged, corrected]
    GET  /api/events?since=VERSION         server-sent events: "wells" (what changed since),
                                           "status" (each second), "reset" (reload the state)
    GET  /api/well?plate=P&well=C07        a well's fields
    GET  /api/frames/ROW/thumbnail.png     a field's thumbnail, ?outlines=0 without outlines
    POST /api/corrections                  {"row": ROW, "label": "clean" | "artifact"}

Requests never read the store's tables: the page is drawn from daemon.web.summary, and only
a thumbnail (one chunk) or a correction (one append) touches the store, on a worker thread so
the event loop never waits for the disk.

Writes (corrections) are protected. From another machine they need `Authorization: Bearer
TOKEN`, one of `web.tokens`, and are recorded with its name; a wrong token is refused (403)
wherever it comes from. From this machine (a loopback peer) no token is needed: recorded as
"loopback". Against other web pages in the operator's browser: a write must be JSON (a form
cannot send that cross-site without the browser asking first, and nothing here says yes), its
Origin, when sent, must be this page, and the Host must name this machine unless a token is
given (so a DNS-rebound name cannot borrow the loopback exemption). On a loopback bind every
request must name this machine in its Host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from daemon.config import WebConfig, is_loopback
from daemon.results.corrections import LABELS, LOOPBACK, Correction
from daemon.web.images import thumbnail_png
from daemon.web.summary import PlateSummary
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

STATIC = {  # name -> content type; nothing else is ever served from the static folder
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
POLL_S = 0.25  # how often an event stream looks for changes (the page updates within this)
STATUS_EVERY_S = 1.0
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


class PlatePage:
    """Start with start() (raises OSError when the port cannot be bound), stop with stop()."""

    def __init__(self, config: WebConfig, summary: PlateSummary, store: Any,
                 status: Callable[[], dict[str, Any]] = dict) -> None:
        self.config = config
        self.summary = summary
        self.store = store
        self._status = status
        self._tokens = config.token_names()
        static = files("daemon.web") / "static"
        self._pages = {name: (static / name).read_bytes() for name in STATIC}
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="web-io")
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self.port = 0
        self._png = lru_cache(maxsize=128)(self._render)  # ~60 kB each: a few wells

    # ------------------------------------------------------------------ lifetime

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._io.shutdown()
            raise self._error
        host = self.config.host
        if not is_loopback(host):
            logger.warning("plate page bound to %s, not loopback, as configured: any machine that "
                           "can reach port %d can view it; corrections need one of the %d "
                           "configured token(s)", host or "all interfaces", self.port,
                           len(self._tokens))
        shown = f"[{host}]" if ":" in host else host
        logger.info("plate page at http://%s:%d/", shown, self.port)

    def stop(self) -> None:
        if self._loop is not None and self._closing is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._closing.set)
        self._thread.join(10)
        self._io.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(); never a silent dead page
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                logger.exception("the plate page stopped")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._closing = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host or None, self.config.port,
                               shutdown_timeout=1.0)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(exc.errno, f"web.port: cannot listen on {self.config.host}:"
                          f"{self.config.port} ({exc.strerror}); expected a free port") from None
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._closing.wait()
        await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/well", self._well)
        app.router.add_get(r"/api/frames/{row:\d{1,12}}/thumbnail.png", self._thumbnail)
        app.router.add_post("/api/corrections", self._correction)
        return app

    # ------------------------------------------------------------------ protection

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if is_loopback(self.config.host) and _host_name(request.host) not in LOCAL_NAMES:
            # A loopback page is only ever asked for by this machine's own names.
            response: web.StreamResponse = _problem(403, f"Host {request.host!r} is not this "
                                                    "machine; expected localhost or 127.0.0.1")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # every refusal as JSON, its headers kept
                response = _problem(exc.status, exc.text or exc.reason)
                for name in ("WWW-Authenticate", "Allow"):
                    if name in exc.headers:
                        response.headers[name] = exc.headers[name]
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _who(self, request: web.Request) -> str:
        """Who records a correction: a token's name, or "loopback"; raises when refused."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            for known, name in self._tokens.items():
                if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(),
                                                                      known.encode()):
                    return name
            logger.warning("plate page: a correction from %s with a wrong token was refused",
                           request.remote)
            raise web.HTTPForbidden(text="the token was refused; expected one of web.tokens")
        if is_loopback(request.remote or "") and _host_name(request.host) in LOCAL_NAMES:
            return LOOPBACK
        raise web.HTTPUnauthorized(text="a token is needed to record corrections from another "
                                   "machine; expected Authorization: Bearer TOKEN",
                                   headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="expected a JSON body (application/json)")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text=f"Origin {origin!r} is not this page; expected "
                                    f"http://{request.host}")

    # ------------------------------------------------------------------ pages

    async def _index(self, _request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound(text="no such file")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        kind, _, charset = STATIC[name].partition("; charset=")
        return web.Response(body=self._pages[name], content_type=kind, charset=charset or None,
                            headers={"Cache-Control": "no-cache"})

    async def _state(self, request: web.Request) -> web.Response:
        return _json({**self.summary.state(), "status": self._full_status(),
                      "access": self._access(request)})

    def _access(self, request: web.Request) -> dict[str, Any]:
        local = is_loopback(request.remote or "") and _host_name(request.host) in LOCAL_NAMES
        return {"local": local, "token_needed": not local, "tokens": bool(self._tokens)}

    def _full_status(self) -> dict[str, Any]:
        return {**self.summary.status(), **self._status()}

    async def _well(self, request: web.Request) -> web.Response:
        found = self.summary.well(request.query.get("plate", ""), request.query.get("well", ""))
        if found is None:
            raise web.HTTPNotFound(text="no such well on a plate seen")
        return _json(found)

    async def _thumbnail(self, request: web.Request) -> web.Response:
        row = int(request.match_info["row"])
        outlines = request.query.get("outlines", "1") != "0"
        if row >= len(self.store):
            raise web.HTTPNotFound(text=f"no frame row {row}")
        png = await asyncio.get_running_loop().run_in_executor(self._io, self._png, row, outlines)
        if png is None:
            raise web.HTTPNotFound(text=f"frame row {row} has no thumbnail")
        # A row's thumbnail never changes, but another store may later serve this port.
        return web.Response(body=png, content_type="image/png",
                            headers={"Cache-Control": "private, max-age=600"})

    def _render(self, row: int, outlines: bool) -> bytes | None:
        thumbnail = self.store.thumbnail(row)
        return None if thumbnail is None else thumbnail_png(thumbnail, outlines=outlines)

    # ------------------------------------------------------------------ corrections

    async def _correction(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        who = self._who(request)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="the body is not JSON; expected "
                                     '{"row": ROW, "label": "clean" or "artifact"}') from None
        row, label = _correction_fields(body)
        view = self.summary.field(row)
        if view is None:
            raise web.HTTPNotFound(text=f"frame row {row} is not a field the page shows")
        correction = Correction(row, view.identity, view.source, label, who, timestamp())
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._io, self.store.record_corrections, [correction])
        except Exception as exc:  # the disk, mostly: the operator must know it was not kept
            logger.error("plate page: a correction of %s could not be stored: %s", view.source, exc)
            raise web.HTTPServiceUnavailable(text=f"the correction could not be stored ({exc}); "
                                             "try again") from None
        logger.info("correction: %s marked %s by %s", view.source, label, who)
        shown = self.summary.correct(row, view.identity, label, who, correction.at)
        return _json(shown or {})

    # ------------------------------------------------------------------ live updates

    async def _events(self, request: web.Request) -> web.StreamResponse:
        since = _version(request.headers.get("Last-Event-ID") or request.query.get("since", ""))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        last_status = -math.inf
        assert self._closing is not None
        try:
            await response.write(b"retry: 1000\n\n")
            while not self._closing.is_set():
                changes = self.summary.changes(since)
                if changes is None:
                    since = self.summary.version
                    await _send(response, "reset", {"version": since}, since)
                elif changes["wells"]:
                    since = changes["version"]
                    await _send(response, "wells", changes, since)
                if loop.time() - last_status >= STATUS_EVERY_S:
                    last_status = loop.time()
                    await _send(response, "status", self._full_status())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), POLL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away
        return response


async def _send(response: web.StreamResponse, event: str, data: Any,
                version: int | None = None) -> None:
    head = f"id: {version}\n" if version is not None else ""
    await response.write(f"{head}event: {event}\ndata: {_dumps(data)}\n\n".encode())


def _correction_fields(body: Any) -> tuple[int, str]:
    expected = '; expected {"row": ROW, "label": "clean" or "artifact"}'
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object" + expected)
    row, label = body.get("row"), body.get("label")
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise web.HTTPBadRequest(text=f"row {row!r} is not a frame row" + expected)
    if label not in LABELS:
        raise web.HTTPBadRequest(text=f"label {label!r} is not clean or artifact" + expected)
    return row, label


def _version(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1  # unknown: the page gets a reset and reloads


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:9753" -> "::1"."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _problem(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _json(body: Any) -> web.Response:
    return web.Response(text=_dumps(body), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
