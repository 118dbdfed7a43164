"""Job: encode the catalogue with one registered model version and switch the ``items`` alias to it."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from services import registry, vectors
from services.datastore import read_dataset
from services.jobs.resources import inference_model
from services.settings import Settings

log = logging.getLogger(__name__)


def run(
    settings: Settings, run_id: str, model_version: str | None = None, dataset: str | None = None
) -> dict[str, Any]:
    """Resolve the version (default: champion) once, then build, verify and publish its item collection.

    Idempotent: when ``items`` already serves this version, template and catalogue, nothing is encoded.
    """
    started = time.perf_counter()
    version = registry.resolve(settings, model_version or registry.CHAMPION)
    _, items = read_dataset(settings, dataset)
    wanted = vectors.IndexVersion(
        model_version=str(version.version),
        template_version=version.tags.get("template_version", "unknown"),
        catalogue_digest=vectors.catalogue_digest(items),
        n_items=len(items),
    )
    client = vectors.connect(settings)
    try:
        live = vectors.find_live(client, wanted)
        if live is not None:
            return {
                "run_id": run_id,
                "model_version": wanted.model_version,
                "collection": live,
                "changed": False,
                "encoded": 0,
            }
        table, encode_s = _encode(settings, version, items)
        result = vectors.publish(
            client, table, items, wanted, settings.index_batch_size, settings.index_keep_collections
        )
    finally:
        client.close()
    return {
        "run_id": run_id,
        "model_version": wanted.model_version,
        "template_version": wanted.template_version,
        **result,
        "encoded": len(items),
        "encode_s": round(encode_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def _encode(settings: Settings, version: Any, items: pd.DataFrame) -> tuple[np.ndarray, float]:
    """(n_items, d) unit item vectors of a registered version, and the seconds encoding took."""
    with registry.checkpoint_of(settings, version) as checkpoint:
        model = inference_model(settings, checkpoint)
    started = time.perf_counter()
    log.info("encoding %d items with v%s (one log line when done)", len(items), version.version)
    table = model.encode_items(items, progress=settings.show_progress, states=settings.item_states_dir)
    seconds = time.perf_counter() - started
    log.info("encoded %d items in %.0f s", len(items), seconds)
    return table, seconds
