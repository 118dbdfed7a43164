"""Read API of the published recommendations, and the explorer page at ``/`` (``r2ec serve`` runs it).

It reads through ``recstore_reader_url`` (else the writer's URL) in read-only transactions: a role that may read
the tables, or a replica; the view-only role of downstream apps is not enough. With ``api_token`` set, every
``/v1`` route wants ``Authorization: Bearer <token>``. Every error body is JSON: ``{"error": "..."}``.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations, some name locals of create_app
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.recstore import RecStore
from services.settings import Settings

STATIC = Path(__file__).with_name("static")
# the page runs only its own script file: even text that slipped into the markup could not execute
CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


class Error(BaseModel):
    error: str


class HistoryItem(BaseModel):
    item_id: str
    title: str


class Item(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float | None


class UserRecommendations(BaseModel):
    """One user's result in the published run; ``items`` is empty unless ``status`` is ``scored``."""

    user_id: str
    run_id: str
    model_name: str
    model_version: str
    published_at: datetime | None
    generated_at: datetime
    status: str
    detail: str
    history: list[HistoryItem]
    rationale: str
    items: list[Item]


class Users(BaseModel):
    users: list[str]


class Run(BaseModel):
    run_id: str
    status: str
    model_name: str
    model_version: str
    item_collection: str
    feature_snapshot: datetime
    top_k: int
    n_shards: int
    started_at: datetime
    finished_at: datetime | None
    published_at: datetime | None
    users_scored: int | None
    users_skipped: int | None
    rows: int | None
    errors: str | None
    summary: dict[str, Any] | None


class Health(BaseModel):
    status: str
    run_id: str | None


NOT_FOUND = {404: {"model": Error}}


def create_app(settings: Settings) -> FastAPI:
    """The application over the configured store (tests build it directly)."""
    store = RecStore(settings.recstore_reader_url or settings.recstore_uri, read_only=True)
    token = settings.api_token.get_secret_value().encode() if settings.api_token else None
    bearer = HTTPBearer(auto_error=False, description="the service's api_token, when it has one")

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is not None and (
            credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token)
        ):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="r2ec recommendations", summary="Published recommendations of the nightly runs.")
    v1 = [Depends(authorized)]
    denied = {401: {"model": Error}}

    @app.exception_handler(StarletteHTTPException)
    async def error_body(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": text}, 422)

    @app.get("/v1/users/{user_id}/recommendations", dependencies=v1, responses=NOT_FOUND | denied)
    def user_recommendations(user_id: str) -> UserRecommendations:
        """The user's history, rationale and ranked items in the published run."""
        found = store.user_recommendations(user_id)
        if found is None:
            raise HTTPException(404, f"user {user_id!r} is not in the published run")
        return UserRecommendations(**found)

    @app.get("/v1/users", dependencies=v1, responses=denied)
    def list_users(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        q: Annotated[str, Query(max_length=256, description="part of the user id, any case")] = "",
    ) -> Users:
        """User ids of the published run, sorted."""
        return Users(users=store.list_users(limit, offset, q))

    @app.get("/v1/runs/current", dependencies=v1, responses=NOT_FOUND | denied)
    def current_run() -> Run:
        """The published run: model version, counts, timings and quality figures."""
        run = store.current_run()
        if run is None:
            raise HTTPException(404, "no run is published yet")
        return Run(**run)

    @app.get("/v1/runs/{run_id}", dependencies=v1, responses=NOT_FOUND | denied)
    def get_run(run_id: str) -> Run:
        """Any run, whatever its status."""
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return Run(**run)

    @app.get("/healthz", responses={503: {"model": Error}})
    def healthz() -> Health:
        """Ok when the database answers (the published run may still be none)."""
        try:
            run = store.current_run()
        except SQLAlchemyError as error:
            raise HTTPException(503, f"database unavailable ({type(error).__name__})") from error
        return Health(status="ok", run_id=run and run["run_id"])

    @app.get("/", include_in_schema=False)
    def explorer() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
