"""The ``r2ec`` command line: one-line errors with exit code 2, and the ``--json`` shape of evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2ec.baselines.popularity import PRIOR_WEIGHTS
from services.cli import EXIT_USAGE, build_parser, main
from services.jobs.evaluate import MODELS


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse exits on bad arguments
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "nope"],
        ["evaluate"],
        ["data", "prepare", "--dataset", "no-such-dataset"],
        ["evaluate", "--model", "popularity", "--dataset", "synthetic"],  # not prepared in this home
        ["data", "prepare", "--dataset", "amazon"],  # needs --reviews and --meta
        ["data", "prepare", "--dataset", "amazon", "--reviews", "missing.jsonl", "--meta", "missing.jsonl"],
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    argv: list[str], r2ec_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "error" in err, err
    assert "Traceback" not in err


def test_prepare_then_evaluate_json_shape(r2ec_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["data", "prepare", "--dataset", "synthetic"], capsys)
    assert code == 0 and "train" in out
    assert (r2ec_home / "data" / "synthetic" / "interactions.parquet").exists()

    path = tmp_path / "out" / "popularity.json"
    code, out, _ = run(["evaluate", "--model", "popularity", "--dataset", "synthetic", "--json", str(path)], capsys)
    assert code == 0 and "ndcg@10" in out
    result = json.loads(path.read_text())
    assert (result["model"], result["dataset"]) == ("popularity", "synthetic")
    for block in ("test", "test_cold"):
        assert {f"{m}@{k}" for m in ("ndcg", "hr") for k in (5, 10, 20)} <= result[block].keys()
        assert all(0.0 <= result[block][f"hr@{k}"] <= 1.0 for k in (5, 10, 20))
    assert result["test"]["n"] > 0 and result["test_cold"]["n"] <= result["test"]["n"]

    code, _, _ = run(
        ["evaluate", "--model", "popularity", "--dataset", "synthetic", "--popularity-prior", "--json", str(path)],
        capsys,
    )
    with_prior = json.loads(path.read_text())
    assert code == 0 and with_prior["model"] == "popularity+popularity-prior"
    assert with_prior["budget"]["prior_weight"] in PRIOR_WEIGHTS

    slots = ["evaluate", "--model", "popularity", "--dataset", "synthetic", "--new-item-slots"]
    code, _, _ = run([*slots, "1", "--json", str(path)], capsys)
    slotted = json.loads(path.read_text())
    assert code == 0 and slotted["model"] == "popularity+new-item-slots"
    assert slotted["budget"]["new_item_slots"] == 1
    code, _, err = run([*slots, "11"], capsys)
    assert code != 0 and "slots" in err and "Traceback" not in err
    code, _, err = run([*slots, "1", "--new-item-max-age-years", "1"], capsys)  # the synthetic catalogue has no years
    assert code == 2 and "no 'year' column" in err and "Traceback" not in err
    code, _, err = run([*slots, "0", "--new-item-max-age-years", "1"], capsys)
    assert code == 2 and "only applies with new-item slots" in err and "Traceback" not in err


def test_evaluate_offers_every_model_the_evaluate_job_builds() -> None:
    """The parser keeps its own list (so that ``r2ec --help`` does not import torch); it must not fall behind."""
    for model in MODELS:
        assert build_parser().parse_args(["evaluate", "--model", model]).model == model


def test_the_readmes_settings_table_is_generated_from_the_settings() -> None:
    """The README's settings table is ``settings_table()`` verbatim, so it cannot drift from the code."""
    from services.settings import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start, end = "<!-- settings:start -->\n", "<!-- settings:end -->"
    assert readme[readme.index(start) + len(start) : readme.index(end)].strip() == settings_table()
