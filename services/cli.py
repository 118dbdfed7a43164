"""The ``r2ec`` command line: one subcommand per job; bad input is one clear line and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from services.formatting import format_result
from services.jobs import new_run_id
from services.settings import Settings, load_settings

if TYPE_CHECKING:
    from r2ec.training.recipes import Recipe

EXIT_USAGE = 2
EXIT_REFUSED = 1  # the input was read but rejected (e.g. too many bad rows)


class UsageError(Exception):
    """A problem the user can fix (bad argument, missing dataset); printed without a traceback."""


def _print_json_or_table(result: dict[str, Any], json_path: str | None) -> None:
    """Print the result, then write it as JSON where asked: a failed write loses nothing already computed."""
    print(format_result(result))
    if json_path:
        try:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as error:
            raise UsageError(f"cannot write {json_path} ({error.strerror}); the result is printed above") from None


def cmd_data_prepare(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import prepare_data

    sources = {k: v for k, v in (("reviews", args.reviews), ("meta", args.meta)) if v is not None}
    _print_json_or_table(prepare_data.run(settings, new_run_id("prepare"), args.dataset, **sources), None)
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import evaluate

    if args.checkpoint is not None and args.model != "r2ec":
        raise UsageError("--checkpoint only applies to --model r2ec")
    result = evaluate.run(
        settings,
        new_run_id("evaluate"),
        args.model,
        args.dataset,
        checkpoint=args.checkpoint,
        max_samples=args.max_samples,
        popularity_prior=args.popularity_prior,
        new_item_slots=args.new_item_slots,
        new_item_max_age_years=args.new_item_max_age_years,
    )
    _print_json_or_table(result, args.json)
    return 0


def training_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe ``r2ec train`` runs: the named (or file) recipe, its selected phases, the budget overrides."""
    from r2ec.training.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    if args.phases:
        recipe = recipe.only(args.phases.split(","))
    return recipe.with_budget(
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        max_samples=args.max_samples,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        seed=args.seed,
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from r2ec.training.recipes import RECIPES

    if args.list_recipes:
        for recipe in RECIPES.values():
            print(f"{recipe.label}: {recipe.description}")
        return 0
    if args.out is None and args.run_id is None:
        raise UsageError("train needs --out DIR or --run-id ID (the run then lands in <state>/runs/ID)")
    recipe = training_recipe(args)
    model_changes = {key: value for key, value in (("backbone", args.backbone), ("dtype", args.dtype)) if value}
    run_id = args.run_id or new_run_id("train")
    options = {"out_dir": args.out, "dataset": args.dataset, "init_checkpoint": args.init}
    options["model_changes"] = model_changes
    if args.register:
        from services.jobs import model_admin

        summary = model_admin.train_and_register(settings, run_id, recipe, samples_from=args.samples_from, **options)
    else:
        from services.jobs import train

        data = train.training_data(settings, args.dataset, args.samples_from)[0]
        summary = train.run(settings, run_id, recipe, data=data, **options)
    _print_json_or_table(summary, None)
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    from services import registry

    try:
        if args.model_command == "list":
            rows = registry.list_versions(settings)
            tag = registry.metric_key(f"valid_{settings.gate_metric}")
            print(format_versions(rows, tag) if rows else "no registered versions")
        elif args.model_command == "promote":
            from services.jobs import pipeline

            try:
                _print_json_or_table(pipeline.promote(settings, new_run_id("promote"), args.version, args.force), None)
            except pipeline.Refused as error:
                print(f"r2ec: {error}", file=sys.stderr)
                return EXIT_REFUSED
        elif args.model_command == "register":
            from services.jobs import model_admin

            run_id = f"register-{args.checkpoint.name}"
            summary = model_admin.register_shipped(settings, run_id, args.checkpoint, args.dataset, args.promote)
            _print_json_or_table(summary, None)
        elif args.model_command == "webhook":
            _print_json_or_table(registry.ensure_webhook(settings, args.url), None)
        else:
            _print_json_or_table(registry.rollback(settings), None)
    except registry.RegistryError as error:
        raise UsageError(str(error)) from error
    return 0


def format_versions(rows: list[dict[str, Any]], metric_tag: str) -> str:
    """``r2ec model list``: one line per version, newest first, with its gate metric and verdict."""

    def line(version: str, aliases: str, gate: str, value: str, created: str, detail: str) -> str:
        return f"{version:>7}  {aliases:<20}  {gate:<6}  {value:>18}  {created:<16}  {detail}"

    lines = [line("version", "aliases", "gate", metric_tag, "created", "detail")]
    for row in rows:
        aliases = ",".join(row["aliases"]) or "-"
        value = row["metrics"].get(metric_tag, "-")
        lines.append(line(row["version"], aliases, row["gate"], value, row["created"], row["gate_detail"]))
    return "\n".join(lines)


def cmd_index(settings: Settings, args: argparse.Namespace) -> int:
    from services import registry, vectors

    try:
        if args.index_command == "refresh":
            from services.jobs import index_refresh

            result = index_refresh.run(settings, new_run_id("index"), args.model_version, args.dataset)
        else:
            client = vectors.connect(settings)
            try:
                result = {"collection": vectors.rollback(client)}
            finally:
                client.close()
    except (registry.RegistryError, vectors.VectorIndexError) as error:
        raise UsageError(str(error)) from error
    _print_json_or_table(result, None)
    return 0


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import explain

    result = explain.run(settings, new_run_id("explain"), args.checkpoint, args.user, args.dataset)
    print("history (oldest first):")
    print("\n".join(f"  {title}" for title in result["history"]))
    print(f"reasoning: {result['reasoning'] or '(none: model trained without reasoning)'}")
    print("top-10:")
    print("\n".join(f"  {r['rank']:>2}. {r['title']}  ({r['score']:.2f})" for r in result["recommendations"]))
    print(f"actual next: {result['actual_next']}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import demo

    if args.retrain_steps < 0:
        raise UsageError("--retrain-steps must be >= 0 (0 skips the retrain)")
    from services.orchestrator import DagRunFailed

    try:
        demo.run(settings, args.run_id or new_run_id("demo"), args.users, args.retrain_steps, echo=print)
    except DagRunFailed as error:
        print(f"r2ec: demo stopped: {error}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import ingest

    summary = ingest.run(settings, new_run_id("ingest"), args.path, args.dataset)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_result(summary))
        print("\n".join(f"{reason:>34}: {count}" for reason, count in summary["reasons"].items()))
    if not summary["accepted"]:
        print(f"r2ec: {summary['message']}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_features(settings: Settings, args: argparse.Namespace) -> int:
    from services.jobs import features

    job = {"apply": features.apply, "materialize": features.materialize}[args.features_command]
    print(
        json.dumps(job(settings, new_run_id(f"features-{args.features_command}"), args.dataset), indent=2, default=str)
    )
    return 0


def cmd_recommend(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from services import registry
    from services.jobs import recommend

    run_id = args.run_id or new_run_id("recommend")
    as_of = args.as_of
    try:
        if args.publish:
            summary = recommend.publish(settings, run_id, args.users, args.dataset)
        else:
            summary = recommend.run(settings, run_id, args.users, args.shard, args.top_k, as_of, args.dataset)
    except registry.RegistryError as error:
        hint = "register a model and promote it (`r2ec model register models/<name> --promote`)"
        raise UsageError(f"{error}: {hint}") from None
    except OperationalError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        raise UsageError(f"cannot reach the recommendations database (R2EC_RECSTORE_URL): {reason}") from None
    except recommend.RunRefused as error:
        print(f"r2ec: {error}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_result(summary))
    return 0


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of samples, say)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def check_state_folder(root: Path) -> None:
    """The state folder must be a folder this process can write (created when absent)."""
    where = f"state folder {root} (--home or R2EC_HOME)"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{where} is not a folder: it, or a folder above it, is a file") from None
    except OSError as error:
        raise UsageError(f"{where} cannot be created: {error.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"{where} is not writable by this user")


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` -> (i, n) with 0 <= i < n."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"shard must be i/n with 0 <= i < n, not {text!r}")
    return int(index), int(count)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time; naive means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from services.api import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port)
    return 0


def cmd_hooks(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from services.hooks import create_hooks_app

    if settings.webhook_secret is None:
        raise UsageError("set R2EC_WEBHOOK_SECRET: the receiver refuses every call without it")
    uvicorn.run(create_hooks_app(settings), host=args.host, port=args.port)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one line on stderr for bad arguments (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="r2ec", description=__doc__)
    parser.add_argument("--home", type=Path, help="state folder (default: $R2EC_HOME or ./var)")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    prep = data.add_parser("prepare", help="write a dataset's canonical parquet files and print counts")
    prep.add_argument("--dataset", default=None)
    prep.add_argument("--reviews", type=Path, help="amazon: the category's reviews .jsonl[.gz]")
    prep.add_argument("--meta", type=Path, help="amazon: the category's meta .jsonl[.gz]")
    prep.set_defaults(handler=cmd_data_prepare)

    ev = sub.add_parser("evaluate", help="fit a recommender and print its test metrics")
    ev.add_argument("--model", required=True, choices=["popularity", "sasrec", "content", "r2ec"])
    ev.add_argument("--dataset", default=None)
    ev.add_argument("--checkpoint", type=Path, help="r2ec checkpoint folder (none = zero-shot backbone)")
    ev.add_argument("--max-samples", type=positive_int, help="seeded subset of the split, plus all cold-start samples")
    ev.add_argument(
        "--popularity-prior",
        action="store_true",
        help="add weight * log(1 + training count) to the scores, the weight picked on validation (own row name)",
    )
    ev.add_argument(
        "--new-item-slots",
        type=int,
        default=0,
        metavar="N",
        help="give N places of every top 10 to the best-scored items nobody chose in training (own row name)",
    )
    ev.add_argument(
        "--new-item-max-age-years",
        type=int,
        default=None,
        metavar="Y",
        help="with --new-item-slots: only items released at most Y years before the training window's last year",
    )
    ev.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    ev.set_defaults(handler=cmd_evaluate)

    tr = sub.add_parser("train", help="train R2ec with a recipe; each phase's best adapter lands in OUT/<mode>/best")
    tr.add_argument("--recipe", default="smollm2-cpu", help="a named recipe (--list-recipes) or a recipe .json file")
    tr.add_argument("--list-recipes", action="store_true", help="print the named recipes and exit")
    tr.add_argument("--phases", help="run only these phases of the recipe, e.g. 'recpo' (with --init)")
    tr.add_argument("--dataset", default=None)
    tr.add_argument(
        "--samples-from",
        choices=["prepared", "feast"],
        default="prepared",
        help="prepared: the dataset's tables in memory (benchmarks); feast: the lake's clean log through the "
        "training feature service (what recpo_retrain uses)",
    )
    tr.add_argument("--out", type=Path, help="output folder (default: <state>/runs/RUN_ID)")
    tr.add_argument("--run-id", help="name of the run (default: train-<UTC time>)")
    tr.add_argument("--init", type=Path, help="continue from this checkpoint: its adapter and its own model config")
    tr.add_argument("--backbone", help="override the model's backbone (HF causal-LM folder/id, or 'tiny')")
    tr.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], help="override the weights dtype")
    tr.add_argument("--max-minutes", type=float, help="override every phase's time budget")
    tr.add_argument("--max-steps", type=int, help="override every phase's step budget")
    tr.add_argument("--max-samples", type=positive_int, help="override every phase's sample budget")
    tr.add_argument("--eval-every", type=int, help="override steps between validations")
    tr.add_argument("--eval-samples", type=int, help="override the validation subset size")
    tr.add_argument("--seed", type=int, help="override the recipe's seed")
    tr.add_argument("--register", action="store_true", help="track the run in MLflow and register the best adapter")
    tr.set_defaults(handler=cmd_train)

    model = sub.add_parser("model", help="the MLflow model registry (aliases champion / challenger)")
    model = model.add_subparsers(dest="model_command", required=True)
    model.add_parser("list", help="versions, aliases and gate results").set_defaults(handler=cmd_model)
    promote = model.add_parser("promote", help="move alias champion to VERSION (refused if its gate failed)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote a version whose gate failed")
    promote.set_defaults(handler=cmd_model)
    model.add_parser("rollback", help="move champion back to the version it replaced").set_defaults(handler=cmd_model)
    shipped = model.add_parser("register", help="register a shipped checkpoint (models/<name>) as a version")
    shipped.add_argument("checkpoint", type=Path)
    shipped.add_argument("--dataset", default=None, help="catalogue the version serves (default: the settings')")
    shipped.add_argument("--promote", action="store_true", help="also move champion to it")
    shipped.set_defaults(handler=cmd_model)
    webhook = model.add_parser(
        "webhook", help="register the MLflow server's webhook that posts champion moves to `r2ec hooks` at URL"
    )
    webhook.add_argument(
        "--url", required=True, help="the receiver's address, e.g. http://r2ec-hooks:8001/hooks/mlflow"
    )
    webhook.set_defaults(handler=cmd_model)

    index = sub.add_parser("index", help="the Qdrant item index (alias items)")
    index = index.add_subparsers(dest="index_command", required=True)
    refresh = index.add_parser("refresh", help="encode the catalogue with a model version and switch alias items")
    refresh.add_argument("--model-version", default=None, help="version number or alias (default: champion)")
    refresh.add_argument("--dataset", default=None)
    refresh.set_defaults(handler=cmd_index)
    index.add_parser("rollback", help="point items back at the previous collection").set_defaults(handler=cmd_index)

    ex = sub.add_parser("explain", help="print a user's history, the model's reasoning and its top-10")
    ex.add_argument("--checkpoint", type=Path, required=True)
    ex.add_argument("--user", required=True)
    ex.add_argument("--dataset", default=None)
    ex.set_defaults(handler=cmd_explain)

    ing = sub.add_parser("ingest", help="validate one interaction-log file and land it (exit 1 when refused)")
    ing.add_argument("path", type=Path, help="CSV, parquet or JSON-lines file")
    ing.add_argument("--dataset", default=None, help="catalogue and lake to use (default: the settings' dataset)")
    ing.add_argument("--json", action="store_true", help="print the summary as JSON")
    ing.set_defaults(handler=cmd_ingest)

    feats = sub.add_parser("features", help="Feast feature store")
    feats = feats.add_subparsers(dest="features_command", required=True)
    for name, text in (("apply", "register the definitions over the lake"), ("materialize", "load the online store")):
        cmd = feats.add_parser(name, help=text)
        cmd.add_argument("--dataset", default=None)
        cmd.set_defaults(handler=cmd_features)

    demo = sub.add_parser("demo", help="the main job end to end on embedded defaults")
    demo.add_argument("--users", default="100", help="users to recommend for: a number, 'all' or a file")
    demo.add_argument("--run-id", help="name of the registration run (default: demo-<UTC time>)")
    demo.add_argument(
        "--retrain-steps", type=int, default=8, help="RecPO steps (4 users each) from the shipped champion (0: none)"
    )
    demo.set_defaults(handler=cmd_demo)

    rec = sub.add_parser("recommend", help="score users with the champion and publish their lists and rationales")
    rec.add_argument("--run-id", help="name of the run; the same id again resumes or repeats it (default: new)")
    rec.add_argument("--users", default="all", help="'all', the first N users by id, or a file of user ids")
    rec.add_argument("--shard", type=parse_shard, help="score only shard i of n (then publish with --publish)")
    rec.add_argument("--publish", action="store_true", help="publish a run whose shards are all written")
    rec.add_argument("--top-k", type=int, help="items per user (default: R2EC_RECOMMEND_TOP_K)")
    rec.add_argument("--as-of", type=parse_time, help="histories as of this time (default: now)")
    rec.add_argument("--dataset", default=None)
    rec.add_argument("--json", action="store_true", help="print the summary as JSON")
    rec.set_defaults(handler=cmd_recommend)

    serve = sub.add_parser("serve", help="the read API and the explorer page of the published recommendations")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=cmd_serve)

    hooks = sub.add_parser("hooks", help="the MLflow webhook receiver: a champion move starts items_reindex")
    hooks.add_argument("--host", default="127.0.0.1")
    hooks.add_argument("--port", type=int, default=8001)
    hooks.set_defaults(handler=cmd_hooks)
    return parser


Handler = Callable[[Settings, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r2ec`` console script."""
    from r2ec.data.movielens import DatasetUnavailable
    from r2ec.data.schema import SchemaError

    args = build_parser().parse_args(argv)
    settings = load_settings(home=args.home)
    handler: Handler = args.handler
    try:
        check_state_folder(settings.root)
        return handler(settings, args)
    except (UsageError, DatasetUnavailable, SchemaError, OSError, ValueError) as error:
        print(f"r2ec: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
