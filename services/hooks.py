"""Receiver of the MLflow registry webhook: moving ``champion`` in MLflow starts ``items_reindex`` at once.

MLflow 3 (SQL backend, a tracking server) POSTs ``model_version_alias.created`` when an alias is set, signed with
the webhook's secret: header ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over
``<delivery id>.<unix timestamp>.<body>``, with ``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp``. A call is
acted on only when the signature matches ``webhook_secret``, the timestamp lies within ``webhook_max_age_s``
of now and the delivery id was never claimed before (``RecStore.claim_delivery``); anything else is refused
with 401 or 409 and changes nothing. A champion move of our registered model becomes an event of the asset
``r2ec://registry/champion`` through Airflow's REST API (``services.orchestrator``), which starts
``items_reindex``; other events are acknowledged and ignored. When Airflow cannot take the event the delivery is
forgotten and 502 returned, so MLflow's retry can deliver it again.

A process of its own (``r2ec hooks``), apart from the read API: it holds the webhook secret and Airflow
credentials and writes its ledger, while the read API stays read-only.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations
import base64
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.orchestrator import AirflowClient, AirflowUnavailable
from services.recstore import RecStore
from services.settings import Settings

log = logging.getLogger(__name__)

CHAMPION_ASSET = "r2ec://registry/champion"  # the asset items_reindex is scheduled on
ALIAS_CREATED = "model_version_alias.created"
SIGNATURE, TIMESTAMP, DELIVERY = "X-MLflow-Signature", "X-MLflow-Timestamp", "X-MLflow-Delivery-Id"
MAX_BODY_BYTES = 64 * 1024


class Refusal(Exception):
    """A call that is not acted on: HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def verify(secret: bytes, headers: dict[str, str], body: bytes, now: float, max_age_s: int) -> str:
    """The delivery id of an authentic, fresh call; :class:`Refusal` (401) otherwise."""
    signature, stamp, delivery = (headers.get(name.lower(), "") for name in (SIGNATURE, TIMESTAMP, DELIVERY))
    if not (signature and stamp and delivery):
        raise Refusal(401, f"unsigned call: {SIGNATURE}, {TIMESTAMP} and {DELIVERY} are required")
    version, _, given = signature.partition(",")
    signed = f"{delivery}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    if version != "v1" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refusal(401, "the signature does not match the webhook secret")
    if not stamp.isdigit() or abs(now - int(stamp)) > max_age_s:
        raise Refusal(401, f"timestamp {stamp[:20]!r} is more than {max_age_s} s from now (a replay?)")
    if len(delivery) > 64:
        raise Refusal(401, "delivery id longer than 64 characters")
    return delivery


def champion_move(payload: dict[str, Any], model_name: str) -> str | None:
    """The version that became champion of ``model_name``, or None when the event is something else."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    event = f"{payload.get('entity')}.{payload.get('action')}"
    if event == ALIAS_CREATED and data.get("name") == model_name and data.get("alias") == "champion":
        return str(data.get("version"))
    return None


def create_hooks_app(settings: Settings) -> FastAPI:
    """The receiver over the configured store and Airflow (tests build it directly)."""
    store = RecStore.from_settings(settings)
    store.upgrade()
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
    app = FastAPI(title="r2ec webhook receiver", summary="MLflow registry events -> Airflow asset events.")

    @app.exception_handler(StarletteHTTPException)
    async def error_body(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, error.status_code)

    @app.post("/hooks/mlflow", status_code=202)
    async def mlflow_registry(request: Request) -> dict[str, Any]:
        """Verify a registry webhook call; a champion move becomes an asset event that starts items_reindex."""
        if secret is None:
            raise HTTPException(503, "R2EC_WEBHOOK_SECRET is not set: every call is refused")
        body = await request.body()
        try:
            if len(body) > MAX_BODY_BYTES:
                raise Refusal(413, f"body larger than {MAX_BODY_BYTES} bytes")
            delivery = verify(secret, dict(request.headers), body, time.time(), settings.webhook_max_age_s)
            try:
                payload = json.loads(body)
            except ValueError as error:
                raise Refusal(400, f"body is not JSON ({error})") from error
            if not isinstance(payload, dict):
                raise Refusal(400, "body is not a JSON object")
        except Refusal as refusal:
            log.warning("webhook refused: %s", refusal)
            raise HTTPException(refusal.status, str(refusal)) from refusal
        event = f"{payload.get('entity')}.{payload.get('action')}"[:128]
        if not store.claim_delivery(delivery, event, datetime.now(UTC)):
            log.warning("webhook refused: delivery %s was received before", delivery)
            raise HTTPException(409, f"delivery {delivery} was received before; ignored")
        version = champion_move(payload, settings.registry_model_name)
        if version is None:
            store.settle_delivery(delivery, "ignored")
            return {"delivery": delivery, "event": event, "action": "ignored"}
        extra = {"model": settings.registry_model_name, "version": version, "delivery": delivery, "via": "mlflow"}
        try:
            with AirflowClient.from_settings(settings) as airflow:
                sent = airflow.send_asset_event(CHAMPION_ASSET, extra)
        except AirflowUnavailable as error:
            store.settle_delivery(delivery, None)
            log.error("webhook %s: champion v%s not passed on: %s", delivery, version, error)
            raise HTTPException(502, f"could not send the asset event: {error}") from error
        store.settle_delivery(delivery, f"asset event {sent.get('id')}: champion v{version}")
        log.info("webhook %s: champion v%s -> asset event %s", delivery, version, sent.get("id"))
        return {"delivery": delivery, "event": event, "action": "asset_event", "version": version,
                "asset_event": sent.get("id")}  # fmt: skip

    return app
