"""The `hybridllm` command. Every command that reports prints one JSON object on its last stdout line
and exits non-zero with a one-line error on bad input (see ARCHITECTURE.md, "The command line")."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, NoReturn

from services.core.errors import HybridError
from services.core.settings import Settings, load_settings

# Offline by construction: nothing here may reach a model hub, whatever the caller's environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Training and benchmark commands are plugins: entry points in this group (pyproject.toml), each a
# `register(subparsers)` that lives with its code, adds one command and returns its parser. An entry named
# `eval.generator` adds `generator` under `eval`. A plugin missing its extra fails with one line naming it.
PLUGIN_GROUP = "hybridllm.commands"
# Ingestion embeds documents with sentence-transformers, and first-run conversion needs torch: the
# `convert` extra. Serving a prepared var/ needs neither.
CONVERT_HINT = "pip install 'hybridllm[convert]'"
Handler = Callable[[argparse.Namespace], None]
# What argparse's add_subparsers returns; its class is private to argparse.
Subparsers = Any
# The corpus `eval e2e` ingests when neither --corpus nor a --config project names one.
DEFAULT_E2E_CORPUS = Path("corpus/handbook")


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"hybridllm: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str))


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


def existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {value}")
    return path


def existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"path not found: {value}")
    return path


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, got {value!r}")
    return int(value)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the command's --config file (every command has one; None when not given)."""
    config: Path | None = args.config
    return load_settings(config, **overrides)


def add_command(subparsers: Subparsers, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
    """A command with the common --config option, run by `handler`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_)
    parser.add_argument("--config", type=existing_file, default=None, help="YAML settings file")
    parser.set_defaults(handler=handler)
    return parser


def _missing_module(name: str | None, hint: str) -> NoReturn:
    fail(f"this command needs {name!r}, which is not installed: {hint}")


def _needing(hint: str, handler: Handler) -> Handler:
    """`handler`, failing with one line that names what to install when one of its imports is missing."""

    def run_needing(args: argparse.Namespace) -> None:
        try:
            handler(args)
        except ModuleNotFoundError as exc:
            _missing_module(exc.name, hint)

    return run_needing


def _unavailable(exc: ImportError, hint: str) -> Handler:
    def missing(_: argparse.Namespace) -> None:
        _missing_module(exc.name, hint)

    return missing


def _index_override(index: Path | None) -> dict[str, Any]:
    return {"rag": {"index_dir": str(index)}} if index is not None else {}


# ----------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from services.gateway.draining import CLOSE_AFTER_DRAIN_S
    from services.gateway.logging_setup import configure_logging

    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    settings = settings_from(args, **_index_override(args.index), **({"server": server} if server else {}))
    configure_logging(settings.observability.log_level, json_lines=settings.observability.log_json)
    if args.config is not None:
        _prepare_project(args.config, settings)
    print(
        f"hybridllm: serving on http://{settings.server.host}:{settings.server.port} "
        f"(auth {'ON' if settings.auth.enabled else 'OFF: set auth.enabled to require API keys'})",
        file=sys.stderr,
    )
    # Each serving process drains by itself on a stop signal for up to server.shutdown_grace_s
    # (services.gateway.draining); uvicorn's own wait afterwards only closes what is left.
    if settings.server.workers > 1:
        # Several workers re-import the app from the environment; each builds its own models. The
        # supervisor passes SIGTERM on to every worker.
        os.environ["HYBRIDLLM_CONFIG"] = str(args.config or "")
        if args.index is not None:
            os.environ["HYBRID_RAG__INDEX_DIR"] = str(args.index)
        uvicorn.run(
            "services.gateway.asgi:app",
            host=settings.server.host,
            port=settings.server.port,
            workers=settings.server.workers,
            log_config=None,
            timeout_graceful_shutdown=CLOSE_AFTER_DRAIN_S,
        )
        return
    from services.gateway.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=CLOSE_AFTER_DRAIN_S,
    )
    _serve_one_process(config)


def _prepare_project(config_file: Path, settings: Settings) -> None:
    """A project's config: train its router and ingest its corpus first where they are missing or stale."""
    from services.project.layout import ProjectLayout, is_project_config
    from services.project.prepare import prepare_project

    if not is_project_config(config_file):
        return
    report = prepare_project(ProjectLayout.of_config(config_file), settings, progress=sys.stderr.isatty())
    print(
        f"hybridllm: project {report['project']}: router {report['router']}, index {report['index']}",
        file=sys.stderr,
    )


def _serve_one_process(config: Any) -> None:
    """Run one uvicorn server in this process; exit 0 after a clean drain on SIGTERM."""
    import signal

    import uvicorn

    # uvicorn re-raises the stop signal after shutting down; a clean drain on SIGTERM exits 0, not 143.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: stop, as uvicorn.run does
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:  # start-up failed (logged): uvicorn.run's exit status for that
        raise SystemExit(3)


def cmd_init(args: argparse.Namespace) -> None:
    from services.project.init import init_project

    if args.corpus is None:
        fail("--corpus is required: the folder of documents (markdown, HTML or PDF)")
    emit(init_project(args.dir, args.corpus, args.org, args.description, force=args.force))


def cmd_ingest(args: argparse.Namespace) -> None:
    from services.rag.ingest import ingest
    from services.rag.progress import progress_bars_or_log_lines

    settings = settings_from(args, **_index_override(args.index))
    report = ingest(list(args.paths), settings.rag, progress=progress_bars_or_log_lines())
    emit(report.as_dict())


def cmd_prepare(args: argparse.Namespace) -> None:
    from services.llm.model_prep import prepare

    emit(prepare(settings_from(args)))


def cmd_route(args: argparse.Namespace) -> None:
    from services.router.build import build_router

    model_dir: Path | None = args.model
    settings = settings_from(args, **({"router": {"model_dir": str(model_dir)}} if model_dir else {}))
    router = build_router(settings.router)
    if not args.explain:
        emit(router.policy.decide(router.classifier.predict(args.text)).as_dict())
        return
    from services.rag.embedder import build_query_embedder
    from services.router.explain import (
        TrainingDataVectors,
        explain_route,
        explanation_table,
        recorded_training_data,
    )

    data: Path | None = args.data or recorded_training_data(settings.router.model_dir)
    if data is None:
        raise ValueError(
            f"router {settings.router.model_dir} does not record its training data: pass --data FILE"
        )
    embedder = build_query_embedder(settings.rag)
    embedder.warm_up()
    vectors = TrainingDataVectors(data, embedder, cache_dir=settings.router.model_dir)
    explanation = explain_route(router, args.text, vectors, k=args.k)
    print(explanation_table(explanation))
    emit({**explanation.decision.as_dict(), "explanation": explanation.as_dict()})


def cmd_eval_router(args: argparse.Namespace) -> None:
    from services.router.evaluation import evaluate_router

    emit(evaluate_router(args.model, args.data, text_col=args.text_col, label_col=args.label_col))


def cmd_eval_retrieval(args: argparse.Namespace) -> None:
    from services.rag.evaluation import evaluate_beir

    settings = settings_from(args)
    emit(evaluate_beir(args.beir, split=args.split, settings=settings.rag, mode=args.mode))


def cmd_eval_e2e(args: argparse.Namespace) -> None:
    if args.base_url:
        from services.evaluation.e2e import evaluate_e2e

        result = asyncio.run(
            evaluate_e2e(
                args.data,
                base_url=args.base_url,
                api_key=args.api_key,
                pipeline=args.pipeline,
                concurrency=args.concurrency,
                out=args.out,
                allow_drafts=args.allow_drafts,
            )
        )
    else:
        from services.evaluation.local_server import evaluate_e2e_local

        corpus, index_dir = _e2e_corpus_and_index(args)
        result = evaluate_e2e_local(
            args.data,
            corpus,
            config=args.config,
            index_dir=index_dir,
            pipeline=args.pipeline,
            concurrency=args.concurrency,
            out=args.out,
            allow_drafts=args.allow_drafts,
        )
    # Per-item records go to --out; the summary line stays one readable JSON object.
    result.pop("items", None)
    emit(result)


def _e2e_corpus_and_index(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """What the local server of `eval e2e` serves: the --config project's index when it has one and no
    --corpus is given; otherwise a corpus (--corpus, the project's, or the handbook), ingested."""
    from services.rag.index_store import read_current

    corpus: Path | None = args.corpus
    if args.config is None:
        return corpus or DEFAULT_E2E_CORPUS, None
    settings = settings_from(args)
    if corpus is None and read_current(settings.rag.index_dir) is not None:
        return None, settings.rag.index_dir
    project_corpus = getattr(getattr(settings, "project", None), "corpus", None)
    corpus = corpus or (Path(project_corpus) if project_corpus else None)
    if corpus is None:
        raise ValueError(
            f"{args.config}: rag.index_dir {settings.rag.index_dir} holds no index and no corpus is set: "
            "pass --corpus DIR"
        )
    return corpus, None


# ----------------------------------------------------------------------------- parser


def _add_core_commands(sub: Subparsers) -> Subparsers:
    """The service's commands; returns the `eval` group's subparsers, where plugins may add more."""
    serve = add_command(sub, "serve", cmd_serve, "run the OpenAI-compatible service")
    serve.add_argument("--index", type=Path, default=None, help="index directory")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=_port, default=None)

    init = add_command(sub, "init", cmd_init, "write a project folder for your own documents")
    init.add_argument("dir", type=Path, help="the project folder to create")
    init.add_argument("--corpus", type=Path, default=None, help="the folder of documents")
    init.add_argument("--org", default=None, help="the organisation's name, used in every template")
    init.add_argument("--description", default=None, help="what the assistant answers questions about")
    init.add_argument("--force", action="store_true", help="write over an existing folder")

    ingest = add_command(
        sub, "ingest", _needing(CONVERT_HINT, cmd_ingest), "ingest documents into a new index version"
    )
    ingest.add_argument("paths", nargs="+", type=existing_path)
    ingest.add_argument("--index", type=Path, default=None)

    add_command(
        sub,
        "prepare",
        _needing(CONVERT_HINT, cmd_prepare),
        "convert and cache the configured generator models",
    )

    route = add_command(sub, "route", cmd_route, "print the routing decision for a text")
    route.add_argument("text")
    route.add_argument("--model", type=existing_dir, default=None, help="router model directory")
    route.add_argument(
        "--explain",
        action="store_true",
        help="also print the scores, the rule that decided and the nearest training examples",
    )
    route.add_argument(
        "--data",
        type=existing_file,
        default=None,
        help="the router's training data (default: the file its training recorded)",
    )
    route.add_argument("--k", type=_positive_int, default=5, help="nearest training examples to show")

    evaluate = sub.add_parser("eval", help="evaluate a component").add_subparsers(dest="what", required=True)
    ev_router = evaluate.add_parser("router")
    ev_router.add_argument("--model", type=existing_dir, required=True)
    ev_router.add_argument("--data", type=existing_file, required=True)
    ev_router.add_argument("--text-col", default="text")
    ev_router.add_argument("--label-col", default="label")
    ev_router.set_defaults(handler=cmd_eval_router, config=None)
    ev_retrieval = add_command(evaluate, "retrieval", cmd_eval_retrieval, "retrieval quality on a BEIR set")
    ev_retrieval.add_argument("--beir", type=existing_dir, required=True)
    ev_retrieval.add_argument("--split", default="test")
    ev_retrieval.add_argument("--mode", choices=["dense", "sparse", "fused"], default="fused")
    ev_e2e = add_command(evaluate, "e2e", cmd_eval_e2e, "score an e2e eval set (JSONL) through the service")
    ev_e2e.add_argument("--data", type=existing_file, required=True)
    ev_e2e.add_argument(
        "--corpus",
        type=existing_dir,
        default=None,
        help=f"corpus to ingest (default: the --config project's index or corpus, else {DEFAULT_E2E_CORPUS})",
    )
    ev_e2e.add_argument("--base-url", default=None)
    ev_e2e.add_argument("--api-key", default=None)
    ev_e2e.add_argument("--pipeline", default="hybrid")
    ev_e2e.add_argument("--concurrency", type=int, default=2)
    ev_e2e.add_argument("--out", type=Path, default=None, help="write per-item results (JSONL) here")
    ev_e2e.add_argument(
        "--allow-drafts", action="store_true", help='score rows still marked "draft": true (scaffold output)'
    )
    return evaluate


def plugin_commands() -> Iterable[EntryPoint]:
    return entry_points(group=PLUGIN_GROUP)


def _install_hint(extras: Sequence[str]) -> str:
    return f"pip install 'hybridllm[{','.join(extras)}]'" if extras else "pip install hybridllm"


def _add_plugin(groups: dict[str, Subparsers], entry: EntryPoint) -> None:
    parent, _, name = entry.name.rpartition(".")
    if parent not in groups:
        return  # a plugin for a command group this version does not have
    hint = _install_hint(entry.extras)
    try:
        register = entry.load()
    except ImportError as exc:
        # The plugin's package itself is missing: keep the command name, and say what to install.
        placeholder = groups[parent].add_parser(name, help=f"needs {hint}", add_help=False)
        placeholder.add_argument("rest", nargs=argparse.REMAINDER)
        placeholder.set_defaults(handler=_unavailable(exc, hint), config=None)
        return
    parser: argparse.ArgumentParser = register(groups[parent])
    parser.set_defaults(handler=_needing(hint, parser.get_default("handler")))


def build_parser() -> argparse.ArgumentParser:
    """The command line: the core commands, then the installed plugins."""
    parser = argparse.ArgumentParser(prog="hybridllm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    groups = {"": sub, "eval": _add_core_commands(sub)}
    for entry in sorted(plugin_commands(), key=lambda e: e.name):
        _add_plugin(groups, entry)
    return parser


def run(handler: Handler, args: argparse.Namespace) -> None:
    """Run a command; a known failure becomes one line on stderr and a non-zero exit."""
    try:
        handler(args)
    except HybridError as exc:
        fail(exc.message)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run(args.handler, args)


if __name__ == "__main__":
    main()
