"""The read API over real HTTP: a user's list from the published run, errors as JSON, the bearer token."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from services.settings import Settings
from tests.e2e.conftest import ALICE, serving


def test_user_recommendations_come_from_the_published_run(api_url: str) -> None:
    response = httpx.get(f"{api_url}/v1/users/alice/recommendations")
    assert response.status_code == 200
    body = response.json()
    assert (body["run_id"], body["model_version"], body["status"]) == ("run-new", "7", "scored")
    assert body["generated_at"].startswith("2024-06-02T00:00:00")
    assert body["history"] == ALICE.history and body["rationale"] == ALICE.rationale
    assert body["items"] == [
        {"rank": i.rank, "item_id": i.item_id, "title": i.title, "score": i.score} for i in ALICE.items
    ]
    bob = httpx.get(f"{api_url}/v1/users/bob/recommendations").json()
    assert (bob["status"], bob["items"], bob["detail"]) == ("no_history", [], "no interactions before the snapshot")


def test_unknown_users_and_runs_are_json_404s(api_url: str) -> None:
    for path in ("/v1/users/nobody/recommendations", "/v1/users/%27%20OR%201=1--/recommendations", "/v1/runs/nope"):
        response = httpx.get(api_url + path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"error"}
    assert httpx.get(f"{api_url}/v1/users?limit=0").json()["error"].startswith("query.limit")


def test_users_runs_health_and_openapi(api_url: str) -> None:
    assert httpx.get(f"{api_url}/v1/users").json() == {"users": ["alice", "bob", "carol"]}
    assert httpx.get(f"{api_url}/v1/users", params={"q": "AR", "limit": 5}).json() == {"users": ["carol"]}
    assert httpx.get(f"{api_url}/v1/users", params={"offset": 1, "limit": 1}).json() == {"users": ["bob"]}
    current = httpx.get(f"{api_url}/v1/runs/current").json()
    assert (current["run_id"], current["status"], current["model_version"]) == ("run-new", "published", "7")
    assert (current["users_scored"], current["users_skipped"], current["rows"]) == (2, 1, 8)
    assert current["summary"] == {"wall_s": 1.5}
    assert httpx.get(f"{api_url}/v1/runs/run-old").json()["status"] == "superseded"
    assert httpx.get(f"{api_url}/healthz").json() == {"status": "ok", "run_id": "run-new"}
    paths = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    assert "/v1/users/{user_id}/recommendations" in paths and "/v1/runs/current" in paths
    page = httpx.get(api_url)
    assert page.status_code == 200 and "script-src" not in page.headers["content-security-policy"]
    assert "explorer.js" in page.text and httpx.get(f"{api_url}/static/explorer.js").status_code == 200


def test_a_token_guards_every_v1_route(settings: Settings) -> None:
    with serving(settings.model_copy(update={"api_token": SecretStr("s3cret")})) as url:
        for path in ("/v1/users/alice/recommendations", "/v1/users", "/v1/runs/current"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                response = httpx.get(url + path, headers=headers)
                assert response.status_code == 401 and set(response.json()) == {"error"}, (path, headers)
            assert httpx.get(url + path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no token
        assert httpx.get(url).status_code == 200  # the page asks for the token itself


def test_health_is_503_when_the_database_does_not_answer(settings: Settings) -> None:
    broken = settings.model_copy(update={"recstore_reader_url": "sqlite:////nonexistent/folder/recs.db"})
    with serving(broken) as url:
        response = httpx.get(f"{url}/healthz")
    assert response.status_code == 503 and "database unavailable" in response.json()["error"]


def test_r2ec_serve_runs_the_api_on_the_state_folder(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [Path(sys.executable).with_name("r2ec"), "--home", settings.root, "serve", "--port", str(port)]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/runs/current")
                break
            except httpx.ConnectError:
                assert server.poll() is None and time.monotonic() < deadline, "r2ec serve did not start"
                time.sleep(0.2)
        assert response.json()["run_id"] == "run-new"
    finally:
        server.terminate()
        server.wait(30)
