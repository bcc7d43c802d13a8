"""The aiohttp app: a thin HTTP layer over Router with the contract of DESIGN.md."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from suanli.config import Config
from suanli.router.core.context import RequestContext
from suanli.router.core.keys import CLIENT_KEY, MASTER_KEY_ID, KeyRing, visible_models
from suanli.router.core.results import Completion, CompletionStream
from suanli.router.core.router import Router
from suanli.router.errors import ApiError, BadRequestError, ModelNotFoundError
from suanli.router.http.admin_keys import add_admin_routes
from suanli.router.http.admin_ops import add_ops_routes
from suanli.router.http.admin_regions import add_exhaustion_routes
from suanli.router.http.alert_routes import add_alert_routes
from suanli.router.http.reconcile_routes import add_reconcile_routes
from suanli.router.http.request_routes import add_request_routes, submit_async, wants_async
from suanli.router.http.status_routes import add_status_routes
from suanli.router.http.workloads import install_workloads

__all__ = ["CONFIG_SOURCE", "ROUTER", "create_app"]

log = logging.getLogger("suanli.app")

ROUTER = web.AppKey("router", Router)
MASTER_KEY = web.AppKey("master_key", str)
KEYRING = web.AppKey("keyring", KeyRing)
CONFIG_SOURCE = web.AppKey("config_source", object)  # Callable[[], Config] | None: what a reload re-reads
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    config: Config,
    *,
    clock: Callable[[], datetime] | None = None,
    session: aiohttp.ClientSession | None = None,
    master_key: str | None = None,
    sim_latency_scale: float = 1.0,
    config_source: Callable[[], Config] | None = None,
    routes: Sequence[Callable[[web.Application, Router], None]] = (),
) -> web.Application:
    """The suanli HTTP app; the Router starts and stops with the app.

    ``config_source`` re-reads the config for ``POST /admin/reload`` (None: the server cannot
    reload). ``routes``: more routes from the layers above this one (``ops`` adds
    ``/admin/whatif``), each called with the app and its Router; admin paths are behind the
    master key like the rest.
    """
    app = web.Application(middlewares=[_errors, _auth], client_max_size=config.max_body_bytes)
    router = Router(config, clock=clock, session=session, sim_latency_scale=sim_latency_scale)
    app[ROUTER] = router
    app[MASTER_KEY] = master_key or config.master_key or ""
    accounts = router.accounts
    app[KEYRING] = KeyRing(
        config,
        master_key=app[MASTER_KEY],
        keys=lambda: accounts.ledger.port if accounts.is_open else None,
        clock=router.clock,
    )

    async def lifecycle(app: web.Application):
        await router.start()
        yield
        await router.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", _endpoint("chat/completions"))
    app.router.add_post("/v1/completions", _endpoint("completions"))
    app.router.add_post("/v1/embeddings", _endpoint("embeddings"))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_get("/health", _health)
    app.router.add_get("/admin/vouchers", _vouchers)
    install_workloads(app, router)  # /v1/files, /v1/batches, /v1/fine_tuning/jobs
    add_admin_routes(app, app[KEYRING], router)
    add_exhaustion_routes(app, app[KEYRING], router)  # /admin/exhausted, /admin/{regions,vouchers}/{id}/clear
    board = add_status_routes(app, router)  # /admin/status and /metrics
    add_request_routes(app, router)  # /v1/requests/{id}
    board.reconciler = add_reconcile_routes(app, router)  # /admin/reconcile, /admin/regions/{id}/balance
    add_alert_routes(app, router, board)  # /admin/alerts; posts to alerts.webhook_url
    add_ops_routes(app, app[KEYRING], router, config_source)  # /admin/vouchers/{id}/adjust, /admin/reload
    app[CONFIG_SOURCE] = config_source
    router.reload_listeners += [app[KEYRING].reconfigure, board.reconfigure]
    for add in routes:
        add(app, router)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as OpenAI-shaped JSON; the only bare ``except Exception``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place that renders any error
        if not getattr(exc, "status", None):
            log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(exc)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/health":
        return await handler(request)
    ring = request.app[KEYRING]
    if request.path.startswith(("/admin", "/metrics")):
        if ring.locked:  # unlocked (no master key), the read-only admin views stay open, as in the demo
            ring.require_master(_bearer(request))
        return await handler(request)
    key = await ring.authenticate(_bearer(request))
    if key is not None:
        request[CLIENT_KEY] = key
    return await handler(request)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _endpoint(endpoint: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        key = request.get(CLIENT_KEY)
        context = RequestContext(
            work_class=request.headers.get("X-Suanli-Class") or None,
            origin=request.headers.get("X-Suanli-Origin") or (key.origin if key else None),
            request_id=_request_id(request),
            key_id=key.key_id if key else (MASTER_KEY_ID if request.app[KEYRING].locked else None),
            allowed_regions=key.allowed_regions if key else None,
            default_class=key.default_class if key else None,
            key=key,
            session=request.headers.get("X-Suanli-Session") or None,
        )
        if wants_async(request):  # batch work answered later at GET /v1/requests/{id}
            return submit_async(request, endpoint, body, context)
        result = await request.app[ROUTER].handle(endpoint, body, context)
        if isinstance(result, Completion):
            return web.Response(
                body=result.raw, content_type="application/json", headers=result.routing.headers()
            )
        return await _relay(request, result)

    return handle


# A client's own request id: printable ASCII, as it is echoed in a header and kept on the ledger.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def _request_id(request: web.Request) -> str | None:
    value = request.headers.get("X-Request-Id")
    if not value:
        return None
    if _REQUEST_ID.fullmatch(value) is None:
        raise BadRequestError(
            "X-Request-Id must be 1-128 printable ASCII characters without spaces",
            param="X-Request-Id",
            code="invalid_request_id",
        )
    return value


async def _json_body(request: web.Request) -> object:
    if request.content_type != "application/json":
        raise BadRequestError(
            f"unsupported content type {request.content_type!r}: send application/json",
            param=None,
            code="unsupported_media_type",
            status=415,
        )
    raw = await request.read()  # client_max_size turns an oversized body into 413 here
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}", param=None, code="invalid_json") from exc


async def _relay(request: web.Request, stream: CompletionStream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**stream.routing.headers(), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    # The headers leave with the first chunk, and the cost comment, [DONE] and the end of the
    # body in one last write: fewer syscalls, the largest cost of a streamed request.
    response._send_headers_immediately = False
    last = b""
    try:
        await response.prepare(request)
        async for chunk in stream.raw():
            if chunk.startswith(b": suanli ") or chunk.endswith(b"data: [DONE]\n\n"):
                last += chunk
                continue
            await response.write(last + chunk if last else chunk)
            last = b""
        await response.write_eof(last)
    except (ConnectionResetError, asyncio.CancelledError):
        # The client went away: stop the upstream call and settle what it consumed.
        await asyncio.shield(stream.aclose())
        raise
    finally:
        await stream.aclose()
    return response


def _key_models(request: web.Request) -> dict:
    router = request.app[ROUTER]
    return visible_models(router.models(), router.config, request.get(CLIENT_KEY))


async def _models(request: web.Request) -> web.Response:
    return web.json_response(_key_models(request), dumps=_dumps)


async def _model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    for entry in _key_models(request)["data"]:
        if entry["id"] == name:
            return web.json_response(entry, dumps=_dumps)
    raise ModelNotFoundError(f"the model {name!r} does not exist")


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _vouchers(request: web.Request) -> web.Response:
    rows = request.app[ROUTER].voucher_report()
    return web.json_response({"object": "list", "data": rows}, dumps=_dumps)


# aiohttp's own refusals, as (type, code) of the OpenAI error shape
_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_response(exc: BaseException) -> web.Response:
    """Render any exception as ``{"error": {"message", "type", "param", "code"}}``."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, kind, code, param, message = exc.status, exc.type, exc.code, exc.param, exc.message
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
            headers["x-should-retry"] = "true"
        if exc.should_retry is not None:
            headers["x-should-retry"] = "true" if exc.should_retry else "false"
    elif isinstance(exc, web.HTTPException):
        status = exc.status
        kind, code = _HTTP_ERRORS.get(status, ("invalid_request_error", "http_error"))
        param = None
        message = (
            f"the request body is too large: {exc.text}"
            if isinstance(exc, web.HTTPRequestEntityTooLarge)
            else exc.reason
        )
    elif isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
        # aiohttp's parser refusing what the client sent (a bad multipart part header)
        status, kind, code, param = exc.code, "invalid_request_error", "malformed_request", None
        message = f"the request could not be parsed ({type(exc).__name__})"
    else:
        status, kind, code, param = 500, "server_error", "internal_error", None
        message = "internal error; see the server log"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
