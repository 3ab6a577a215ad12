"""Remote codec server so the Temporal Web UI and CLI can show decrypted payloads.

Implements Temporal's codec-server HTTP protocol: ``POST .../encode`` and
``POST .../decode`` with a JSON body ``{"payloads": [...]}`` in the protobuf
JSON form of ``temporal.api.common.v1.Payloads``.  Only the last path segment
selects the operation, so the endpoints may be mounted under any prefix.

Run it (keys come from ``COLLECTIONS_ENCRYPTION_KEYS``, see ``infra.codec``)::

    export COLLECTIONS_CODEC_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    python -m infra.codec_server --port 8081
    # on the local stack (`make run`) the key comes from $STATE_DIR/encryption.key by itself

Authorisation: every request except the CORS preflight (``OPTIONS``) needs
``Authorization: Bearer $COLLECTIONS_CODEC_TOKEN``; otherwise 401.  The server
refuses to start without a token unless ``--insecure-dev`` is given.

Point the CLI at it::

    temporal workflow show --workflow-id <id> --detailed \\
        --codec-endpoint http://localhost:8081 \\
        --codec-auth "Bearer $COLLECTIONS_CODEC_TOKEN"

Point the Web UI at it::

    temporal server start-dev --ui-codec-endpoint http://localhost:8081

(or set the endpoint under "Codec Server" in the Web UI settings).  The Web UI
origin must be allowed for CORS: ``--cors-origin http://localhost:8233`` is the
default; add more with repeated ``--cors-origin`` or
``COLLECTIONS_CODEC_CORS_ORIGINS=a,b``.  The browser only sends an
``Authorization`` header when the UI is configured to pass its (OIDC) access
token; a local dev UI without auth cannot send the bearer token, so for that
case the token may instead be put in the endpoint path — configure the UI with
``http://localhost:8081/t/<token>`` (requests go to ``/t/<token>/decode``).
Paths are never written to the access log.  Keep the server bound to
``127.0.0.1`` (the default) unless it sits behind TLS.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from infra.codec import CodecError, codec_from_env
from infra.settings import Settings
from infra.stack import KEY_FILE

__all__ = [
    "DEFAULT_CORS_ORIGIN",
    "ENV_CORS_ORIGINS",
    "ENV_TOKEN",
    "build_app",
    "main",
]

log = logging.getLogger(__name__)

ENV_TOKEN = "COLLECTIONS_CODEC_TOKEN"
ENV_CORS_ORIGINS = "COLLECTIONS_CODEC_CORS_ORIGINS"
DEFAULT_CORS_ORIGIN = "http://localhost:8233"
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
_MAX_BODY = 32 * 1024 * 1024
_OPS = ("encode", "decode")


def _path_parts(request: web.Request) -> list[str]:
    return [p for p in request.path.split("/") if p]


def _op(request: web.Request) -> str | None:
    parts = _path_parts(request)
    if parts and parts[-1] in _OPS:
        return parts[-1]
    return None


def _path_token(request: web.Request) -> str | None:
    """Token given as ``/t/<token>/(encode|decode)`` (for browsers that cannot send a header)."""
    parts = _path_parts(request)
    if len(parts) >= 3 and parts[-3] == "t":
        return parts[-2]
    return None


def build_app(
    codec: PayloadCodec,
    token: str | None,
    cors_origins: Iterable[str] = (DEFAULT_CORS_ORIGIN,),
) -> web.Application:
    """aiohttp app serving ``/encode`` and ``/decode`` for ``codec``.

    ``token=None`` disables authorisation (only for ``--insecure-dev``).
    ``cors_origins`` are the exact browser origins allowed (e.g. the Web UI).
    """
    origins = frozenset(o.rstrip("/") for o in cors_origins if o)
    expected = f"Bearer {token}".encode() if token else None

    def cors_headers(request: web.Request) -> dict[str, str]:
        origin = request.headers.get(hdrs.ORIGIN)
        if not origin or origin.rstrip("/") not in origins:
            return {}
        return {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "POST, OPTIONS",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: _ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
            hdrs.VARY: "Origin",
        }

    def authorised(request: web.Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get(hdrs.AUTHORIZATION, "").strip().encode()
        if hmac.compare_digest(header, expected):
            return True
        path_token = _path_token(request)
        return path_token is not None and hmac.compare_digest(
            f"Bearer {path_token}".encode(), expected
        )

    def error(request: web.Request, status: int, message: str, **extra: str) -> web.Response:
        return web.json_response(
            {"error": message}, status=status, headers={**cors_headers(request), **extra}
        )

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            return web.Response(status=204, headers=cors_headers(request))
        if request.path == "/healthz":
            return await handler(request)
        if not authorised(request):
            return error(request, 401, "unauthorized", **{hdrs.WWW_AUTHENTICATE: "Bearer"})
        return await handler(request)

    async def apply(request: web.Request) -> web.Response:
        op = _op(request)
        if op is None:
            return error(request, 404, "not found")
        if request.content_type != "application/json":
            return error(request, 415, "content type must be application/json")
        try:
            payloads = json_format.Parse(await request.read(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            return error(request, 400, "body is not a JSON Payloads message")
        fn: Callable[[Sequence[Payload]], Awaitable[list[Payload]]] = (
            codec.encode if op == "encode" else codec.decode
        )
        try:
            result = await fn(payloads.payloads)
        except CodecError as e:  # messages name key ids only, never content
            log.warning("codec %s failed: %s", op, e)
            return error(request, 400, str(e))
        return web.Response(
            text=json_format.MessageToJson(Payloads(payloads=result)),
            content_type="application/json",
            headers=cors_headers(request),
        )

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[guard], client_max_size=_MAX_BODY)
    app.router.add_get("/healthz", health)
    app.router.add_post("/{tail:.*}", apply)
    return app


class _NoPathAccessLogger(AbstractAccessLogger):
    """Access log without the request path (it may carry the ``/t/<token>`` form)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        op = _op(request) or "-"  # type: ignore[arg-type]
        self.logger.info(
            "%s %s %s %s %.1fms", request.remote, request.method, op, response.status, time * 1000
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m infra.codec_server",
        description="Temporal remote codec server "
                    "(AES-256-GCM, keys from COLLECTIONS_ENCRYPTION_KEYS).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        help=f"allowed browser origin (repeatable; default {DEFAULT_CORS_ORIGIN})",
    )
    p.add_argument(
        "--dev-key-file",
        type=Path,
        default=None,
        help="key file of the embedded local stack, used when COLLECTIONS_ENCRYPTION_KEYS is "
             f"unset (default: the state folder's {KEY_FILE}, if it exists)",
    )
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help=f"allow running without {ENV_TOKEN} (no authorisation!); local development only",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parse_args(argv)
    key_file = args.dev_key_file
    if key_file is None:  # the local stack's key, never a new one (that would decode nothing)
        local = Settings().state_dir / KEY_FILE
        key_file = local if local.is_file() else None
    try:
        codec = codec_from_env(os.environ, dev_key_file=key_file)
    except ValueError as e:
        sys.exit(f"codec server: {e}")
    if codec is None:
        sys.exit(
            "codec server: no encryption keys; set COLLECTIONS_ENCRYPTION_KEYS "
            "(see infra.codec.generate_key), start the local stack (make run: it writes "
            f"{Settings().state_dir / KEY_FILE}) or pass --dev-key-file"
        )
    token = os.environ.get(ENV_TOKEN, "").strip() or None
    if token is None:
        if not args.insecure_dev:
            sys.exit(f"codec server: {ENV_TOKEN} is not set; refusing to start "
                     "(or pass --insecure-dev)")
        log.warning("running WITHOUT authorisation (--insecure-dev); "
                    "anyone reaching %s:%s can decrypt", args.host, args.port)
    origins = args.cors_origin
    if not origins:
        env_origins = [o.strip() for o in os.environ.get(ENV_CORS_ORIGINS, "").split(",")
                       if o.strip()]
        origins = env_origins or [DEFAULT_CORS_ORIGIN]
    log.info("codec server on http://%s:%s keys=%s active=%s cors=%s",
             args.host, args.port, codec.key_ids, codec.active_key_id, json.dumps(origins))
    web.run_app(
        build_app(codec, token, origins),
        host=args.host,
        port=args.port,
        access_log_class=_NoPathAccessLogger,
        print=None,
    )


if __name__ == "__main__":
    main()
