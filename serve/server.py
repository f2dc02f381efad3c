"""Policy server: FastAPI + uvicorn over a `Policy`.

    POST /v1/act    ActRequest  -> UI or robot action (+ raw model text)
    POST /v1/chat   ChatRequest -> free text (optionally parsed as marks/points/traces)
    WS   /v1/ws     msgpack frames {"type": "act"|"chat"|"info", ...} -> msgpack replies
    GET  /healthz   liveness (no auth)      GET /v1/info  model, action space, statistics and
                                            the checkpoint's inference settings (chunk, proprio, ...)

Every error is JSON `{"code", "message"}` with a 4xx status (408 when generation exceeds the
per-request timeout, 429 when too many requests are in flight); no stack trace reaches a client.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgpack
from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.api import ActRequest, ChatRequest, ChatResponse, ErrorInfo, InfoResponse, RobotActResponse, UIActResponse
from serve.errors import ServeError
from serve.policy import Policy

log = logging.getLogger("magma.serve")


@dataclass
class ServerSettings:
    token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 60.0
    max_in_flight: int = 256
    ws_max_frame_bytes: int = 16 * 1024 * 1024
    graceful_shutdown_s: float = 10.0
    extra: dict = field(default_factory=dict)


def error_json(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message})


class BodyLimitMiddleware:
    """Rejects bodies over `limit` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = error_json(413, "body_too_large", f"request body exceeds {self.limit} bytes")
        if length is not None:
            try:
                if int(length) > self.limit:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await error_json(400, "bad_content_length", "Content-Length is not a number")(
                    scope, receive, send)
        seen = 0
        exceeded = False

        async def limited_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            if not exceeded:  # FastAPI turns a failed body read into its own 400: drop it
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded:
            await too_big(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if not errors:
        return "invalid_request", "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "malformed_json", "request body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return "invalid_request", f"{where}: {first.get('msg', 'invalid value')}"[:500]


def create_app(policy: Policy, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    in_flight = {"n": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(policy.close)  # finishes queued work, stops the engine worker

    app = FastAPI(title="Magma policy server", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError):
        return error_json(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        code, message = _validation_message(exc)
        return error_json(400 if code == "malformed_json" else 422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
        return error_json(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unexpected error")  # the trace stays in the server log
        return error_json(500, "internal_error", f"unexpected {type(exc).__name__}; see the server log")

    def check_token(presented: str | None) -> None:
        if settings.token and not (presented and secrets.compare_digest(presented.encode(), settings.token.encode())):
            raise ServeError(401, "unauthorized", "missing or wrong bearer token")

    async def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_token(creds.credentials if creds else None)

    async def run(prepare, request) -> dict:
        if in_flight["n"] >= settings.max_in_flight:
            raise ServeError(429, "busy", f"{settings.max_in_flight} requests in flight; retry later")
        in_flight["n"] += 1
        try:
            gen, finish = await run_in_threadpool(prepare, request)
            try:
                outs = await asyncio.wait_for(policy.engine.generate([gen]), settings.request_timeout_s)
            except asyncio.TimeoutError:
                raise ServeError(408, "timeout", f"generation took over {settings.request_timeout_s} s") from None
            return await run_in_threadpool(finish, outs[0])
        finally:
            in_flight["n"] -= 1

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "engine": policy.engine.name}

    @app.get("/v1/info", response_model=InfoResponse, dependencies=[Depends(auth)])
    async def info() -> dict:
        return policy.info()

    @app.post("/v1/act", response_model=UIActResponse | RobotActResponse, dependencies=[Depends(auth)],
              responses={code: {"model": ErrorInfo} for code in (400, 401, 408, 413, 422, 429)})
    async def act(request: ActRequest) -> dict:
        return await run(policy.prepare_act, request)

    @app.post("/v1/chat", response_model=ChatResponse, dependencies=[Depends(auth)],
              responses={code: {"model": ErrorInfo} for code in (400, 401, 408, 413, 422, 429)})
    async def chat(request: ChatRequest) -> dict:
        return await run(policy.prepare_chat, request)

    @app.websocket("/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        header = websocket.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else websocket.query_params.get("token")
        try:
            check_token(token)
        except ServeError:
            await websocket.close(code=1008, reason="missing or wrong bearer token")
            return
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                reply = await _ws_reply(message.get("bytes"), run, policy, settings)
                await websocket.send_bytes(msgpack.packb(reply, use_bin_type=True))
        except (WebSocketDisconnect, RuntimeError):
            return  # client went away mid-stream; its queued generation is simply dropped

    return app


async def _ws_reply(data: bytes | None, run, policy: Policy, settings: ServerSettings) -> dict:
    """One msgpack frame -> one reply dict; errors become {"error": {code, message}}."""
    try:
        if data is None:
            raise ServeError(400, "bad_frame", "send binary msgpack frames")
        if len(data) > settings.ws_max_frame_bytes:
            raise ServeError(413, "frame_too_large", f"frame exceeds {settings.ws_max_frame_bytes} bytes")
        try:
            frame = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception:
            raise ServeError(400, "bad_frame", "frame is not valid msgpack") from None
        if not isinstance(frame, dict):
            raise ServeError(400, "bad_frame", "frame must be a msgpack map")
        kind = frame.pop("type", "act")
        for key in ("image",):  # raw image bytes are accepted over the socket
            if isinstance(frame.get(key), (bytes, bytearray)):
                frame[key] = base64.b64encode(frame[key]).decode("ascii")
        if isinstance(frame.get("images"), list):
            frame["images"] = [base64.b64encode(i).decode("ascii") if isinstance(i, (bytes, bytearray)) else i
                               for i in frame["images"]]
        if kind == "act":
            return await run(policy.prepare_act, frame)
        if kind == "chat":
            return await run(policy.prepare_chat, frame)
        if kind == "info":
            return policy.info()
        raise ServeError(400, "bad_frame", f"unknown frame type {kind!r}; use act, chat or info")
    except ServeError as exc:
        return {"error": exc.to_dict(), "status": exc.status}
    except Exception as exc:
        log.exception("unexpected error on the websocket")
        return {"error": {"code": "internal_error", "message": f"unexpected {type(exc).__name__}"}, "status": 500}


def serve_forever(policy: Policy, host: str, port: int, settings: ServerSettings) -> None:
    import uvicorn

    uvicorn.run(create_app(policy, settings), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(settings.graceful_shutdown_s), access_log=False)
