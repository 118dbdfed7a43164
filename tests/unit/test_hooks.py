"""The MLflow webhook receiver without Airflow: what it refuses, what it ignores, and that it acts once per delivery.

Calls are signed with MLflow's own signing function, so the receiver is held to the format MLflow sends
(tests/dags/test_airflow_live.py checks the whole path with a real MLflow server and Airflow).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.webhooks.delivery import _generate_hmac_signature

from services.hooks import create_hooks_app, verify
from services.recstore import RecStore
from services.settings import Settings, load_settings

SECRET = "s3cret-for-tests"


def signed(payload: dict, secret: str = SECRET, stamp: int | None = None, delivery: str | None = None) -> dict:
    """Body and headers as MLflow's server sends them."""
    body = json.dumps(payload)
    delivery = delivery or str(uuid.uuid4())
    stamp_text = str(int(time.time()) if stamp is None else stamp)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp_text,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, stamp_text, body),
    }
    return {"content": body.encode(), "headers": headers}


def alias_set(alias: str = "champion", name: str = "r2ec", version: str = "3") -> dict:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-12-04T00:00:00+00:00",
        "data": {"name": name, "alias": alias, "version": version},
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # an Airflow that nobody listens on: an event that should reach it fails visibly (502)
    return load_settings(home=tmp_path / "var", webhook_secret=SECRET, airflow_api_url="http://127.0.0.1:9")


def deliveries(settings: Settings) -> int:
    import sqlalchemy as sa

    with RecStore.from_settings(settings).engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM webhook_deliveries")).scalar_one()


def test_verify_accepts_mlflows_signature_and_refuses_any_change() -> None:
    call = signed(alias_set())
    headers = {k.lower(): v for k, v in call["headers"].items()}
    now = int(headers["x-mlflow-timestamp"])
    assert verify(SECRET.encode(), headers, call["content"], now, 300) == headers["x-mlflow-delivery-id"]

    def refused(secret: bytes, headers: dict, body: bytes, now: float) -> str:
        with pytest.raises(Exception) as caught:
            verify(secret, headers, body, now, 300)
        return str(caught.value)

    assert "does not match" in refused(b"another secret", headers, call["content"], now)
    assert "does not match" in refused(SECRET.encode(), headers, call["content"].replace(b'"3"', b'"4"'), now)
    assert "does not match" in refused(SECRET.encode(), headers | {"x-mlflow-delivery-id": "other"},
                                       call["content"], now)  # fmt: skip
    assert "more than 300 s from now" in refused(SECRET.encode(), headers, call["content"], now + 301)
    assert "unsigned" in refused(SECRET.encode(), {"content-type": "application/json"}, call["content"], now)
    v2 = headers | {"x-mlflow-signature": headers["x-mlflow-signature"].replace("v1,", "v2,")}
    assert "does not match" in refused(SECRET.encode(), v2, call["content"], now)


def test_forged_stale_and_unsigned_calls_are_refused_and_leave_no_trace(settings: Settings) -> None:
    client = TestClient(create_hooks_app(settings))
    unsigned = client.post("/hooks/mlflow", json=alias_set())
    forged = client.post("/hooks/mlflow", **signed(alias_set(), secret="guessed"))
    stale = client.post("/hooks/mlflow", **signed(alias_set(), stamp=int(time.time()) - 3600))
    assert [r.status_code for r in (unsigned, forged, stale)] == [401, 401, 401]
    assert "unsigned call" in unsigned.json()["error"]
    assert "signature does not match" in forged.json()["error"]
    assert "from now" in stale.json()["error"]
    assert deliveries(settings) == 0


def test_other_events_are_ignored_and_a_replay_is_refused(settings: Settings) -> None:
    client = TestClient(create_hooks_app(settings))
    call = signed(alias_set(alias="challenger"))
    first = client.post("/hooks/mlflow", **call)
    assert first.status_code == 202 and first.json()["action"] == "ignored"
    again = client.post("/hooks/mlflow", **call)
    assert again.status_code == 409 and "received before" in again.json()["error"]
    other_model = client.post("/hooks/mlflow", **signed(alias_set(name="someone-elses-model")))
    assert other_model.json()["action"] == "ignored"
    store = RecStore.from_settings(settings)
    assert store.delivery(call["headers"]["X-MLflow-Delivery-Id"])["outcome"] == "ignored"


def test_a_champion_move_that_cannot_reach_airflow_is_forgotten_so_a_redelivery_may_act(settings: Settings) -> None:
    client = TestClient(create_hooks_app(settings))
    call = signed(alias_set())
    failed = client.post("/hooks/mlflow", **call)
    assert failed.status_code == 502 and "Airflow at http://127.0.0.1:9 did not answer" in failed.json()["error"]
    assert deliveries(settings) == 0
    assert client.post("/hooks/mlflow", **call).status_code == 502  # retried: tried again, not refused as a replay


def test_without_a_secret_every_call_is_refused(tmp_path: Path) -> None:
    client = TestClient(create_hooks_app(load_settings(home=tmp_path / "var")))
    response = client.post("/hooks/mlflow", **signed(alias_set()))
    assert response.status_code == 503 and "R2EC_WEBHOOK_SECRET" in response.json()["error"]
