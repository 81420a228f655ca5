"""An aiohttp.web application calling Capillary from its handlers, one client for all.

The client is made once, in the application's ``cleanup_ctx``, shared by every
request, and closed at shutdown. Handlers vary the attribution header per
request with ``with_options``, which shares the pool. To try it against a
local emulator:

    capillary-async emulator --port 8080
    export CAPILLARY_BASE_URL=http://127.0.0.1:8080 CAPILLARY_USERNAME=demo CAPILLARY_PASSWORD=demo
    python examples/webapp.py --port 8000
    curl -X PUT localhost:8000/redemptions/Hcmxfn \\
        -d '{"mobile": "910000100067", "bill_number": "txn-80"}'

Against a real cluster, set ``CAPILLARY_CLUSTER`` (or ``CAPILLARY_BASE_URL``)
and your credentials instead.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from capillary_async import (
    APIError,
    CapillaryClient,
    DeadlineExceededError,
    Entity,
    ExpiryUpdateEntry,
    ItemFailure,
    OutcomeUnknownError,
    RedemptionUpdate,
    TransportError,
    ValidationError,
)

CLIENT = web.AppKey("capillary", CapillaryClient)


async def capillary(app: web.Application) -> AsyncIterator[None]:
    """One pooled client for the application's lifetime."""
    async with CapillaryClient.from_env(deadline=5) as client:  # 5 s per call, retries included
        app[CLIENT] = client
        yield


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 saying it is not one."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):  # not JSON, or not UTF-8
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "the body must be a JSON object"}', content_type="application/json"
        )
    return body


def _client(request: web.Request) -> CapillaryClient:
    store = request.headers.get("X-Store", "web")
    return request.app[CLIENT].with_options(headers={"X-CAP-API-ATTRIBUTION-ENTITY-CODE": store})


async def update_redemption(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body.get("mobile"), str):
        raise web.HTTPBadRequest(
            text='{"error": "mobile: a string is required"}', content_type="application/json"
        )
    redemption = await _client(request).points.update_redemption(
        RedemptionUpdate(
            redemption_id=request.match_info["redemption_id"],
            bill_number=body.get("bill_number"),
            purpose=body.get("purpose"),
            entity=Entity(
                type="CUSTOMER", identifier_type="mobile", identifier_value=body["mobile"]
            ),
        )
    )
    return web.json_response(
        {
            "redemption_id": redemption.redemption_id,
            "bill_number": redemption.bill_number,
            "request_id": redemption.request_id,
        }
    )


async def extend_expiry(request: web.Request) -> web.Response:
    """Body: ``{"items": [...]}``, each item an ``expiryDateUpdateRequest`` entry."""
    items = (await _body(request)).get("items")
    if not isinstance(items, list):
        raise web.HTTPBadRequest(
            text='{"error": "items: a list is required"}', content_type="application/json"
        )
    result = await _client(request).points.update_expiry(items)
    updated = [
        entry.ref[0]  # the points-awarded ref id
        for entry in result.updates
        if isinstance(entry, ExpiryUpdateEntry)  # an entry Capillary garbled stays raw JSON
    ]
    refused = [
        {"ref_id": f.points_awarded_ref_id, "code": f.error_code, "message": f.error_message}
        for f in result.failures
        if isinstance(f, ItemFailure)
    ]
    return web.json_response(
        {"updated": updated, "refused": refused, "request_id": result.request_id}
    )


async def ready(request: web.Request) -> web.Response:
    """A readiness probe: the target answers and takes our credentials."""
    try:
        await request.app[CLIENT].check(deadline=2)
    except (APIError, TransportError, DeadlineExceededError) as exc:
        return web.json_response({"ready": False, "why": str(exc)}, status=503)
    return web.json_response({"ready": True})


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Capillary's errors as answers: bad input 4xx, a refusal 502, slow 504.

    An update that may have been applied (``OutcomeUnknownError``: a FIXED_DAYS
    extension whose answer was lost) is a 409 that says not to resend it, never
    a 5xx that a caller would retry into a second extension.
    """
    try:
        response: web.StreamResponse = await handler(request)
    except ValidationError as exc:  # caught before anything was sent
        return web.json_response({"field": exc.field, "reason": exc.reason}, status=422)
    except OutcomeUnknownError as exc:
        unsure = {"error": "it may have been applied: check before resending", "cause": str(exc)}
        return web.json_response(unsure, status=409)
    except DeadlineExceededError as exc:
        if exc.sent:
            late = {"error": "Capillary did not answer in time; it may have been applied"}
            return web.json_response(late, status=504)
        return web.json_response({"error": "Capillary could not be reached in time"}, status=503)
    except APIError as exc:
        body = {"codes": list(exc.codes), "message": exc.message, "request_id": exc.request_id}
        return web.json_response(body, status=502)
    except TransportError as exc:
        return web.json_response({"error": str(exc)}, status=502)
    return response


def make_app() -> web.Application:
    app = web.Application(middlewares=[errors])
    app.cleanup_ctx.append(capillary)
    app.router.add_put("/redemptions/{redemption_id}", update_redemption)
    app.router.add_post("/expiry", extend_expiry)
    app.router.add_get("/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A web app calling Capillary.")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (default: 8000)")
    web.run_app(make_app(), host="127.0.0.1", port=parser.parse_args().port)


if __name__ == "__main__":
    main()
