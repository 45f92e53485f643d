"""The `hybridllm` command. Every command that reports prints one JSON object on its last stdout line
and exits non-zero with a one-line error on bad input (see ARCHITECTURE.md, "The command line")."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from services.core.errors import HybridError
from services.core.settings import Settings, load_settings

# Offline by construction: nothing here may reach a model hub, whatever the caller's environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"hybridllm: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str))


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


def _existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {value}")
    return path


def _existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"path not found: {value}")
    return path


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, got {value!r}")
    return int(value)


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    if getattr(args, "index", None) is not None:
        overrides.setdefault("rag", {})["index_dir"] = str(args.index)
    return load_settings(getattr(args, "config", None), **overrides)


# ----------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from services.gateway.logging_setup import configure_logging

    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    settings = _settings(args, **({"server": server} if server else {}))
    configure_logging(settings.observability.log_level, json_lines=settings.observability.log_json)
    print(
        f"hybridllm: serving on http://{settings.server.host}:{settings.server.port} "
        f"(auth {'ON' if settings.auth.enabled else 'OFF: set auth.enabled to require API keys'})",
        file=sys.stderr,
    )
    if settings.server.workers > 1:
        # Several workers re-import the app from the environment; each builds its own models.
        os.environ["HYBRIDLLM_CONFIG"] = str(args.config or "")
        if args.index is not None:
            os.environ["HYBRID_RAG__INDEX_DIR"] = str(args.index)
        uvicorn.run(
            "services.gateway.asgi:app",
            host=settings.server.host,
            port=settings.server.port,
            workers=settings.server.workers,
            log_config=None,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_s),
        )
        return
    from services.gateway.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s),
    )
    _serve_draining(config, app.state.gateway)


def _serve_draining(config: Any, state: Any) -> None:
    """Run uvicorn; a stop signal marks the gateway draining at once, so /readyz answers 503 while
    in-flight requests finish (the app's lifespan shutdown runs only after they have)."""
    import signal

    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.draining = True
            super().handle_exit(sig, frame)

    # uvicorn re-raises the stop signal after draining; a clean drain on SIGTERM exits 0, not 143.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    server = DrainingServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C during the drain: stop, as uvicorn.run does
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:  # start-up failed (logged): uvicorn.run's exit status for that
        raise SystemExit(3)


def cmd_ingest(args: argparse.Namespace) -> None:
    from services.rag.ingest import ingest

    settings = _settings(args)
    report = ingest(list(args.paths), settings.rag, progress=sys.stderr.isatty())
    _emit(report.as_dict())


def cmd_prepare(args: argparse.Namespace) -> None:
    from services.llm.model_prep import prepare

    _emit(prepare(_settings(args)))


def cmd_route(args: argparse.Namespace) -> None:
    from services.router.classifier import IntentRouterModel
    from services.router.policy import RoutingPolicy

    settings = _settings(args)
    model_dir = args.model or settings.router.model_dir
    model = IntentRouterModel(
        model_dir,
        threads=settings.router.threads,
        max_length=settings.router.max_length,
        quantized=settings.router.precision == "int8",
    )
    model.warm_up()
    policy = RoutingPolicy(settings.router, threshold=getattr(model, "oos_threshold", None))
    _emit(policy.decide(model.predict(args.text)).as_dict())


def _training_progress() -> bool:
    """A progress bar on a terminal; elsewhere (nohup, CI, a pipe) the training loggers' lines instead.

    A redirected 40-minute run with neither would print nothing until its metrics line at the end.
    """
    if sys.stderr.isatty():
        return True
    import logging

    training = logging.getLogger("training")
    if not any(getattr(h, "hybridllm_progress", False) for h in training.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handler.hybridllm_progress = True  # type: ignore[attr-defined]
        training.addHandler(handler)
    training.setLevel(logging.INFO)
    return False


def cmd_train_router(args: argparse.Namespace) -> None:
    from training.train_router import train_router

    metrics = train_router(
        args.data,
        args.out,
        text_col=args.text_col,
        label_col=args.label_col,
        eval_file=args.eval,
        config=args.router_config,
        max_steps=args.max_steps,
        progress=_training_progress(),
        teachers=args.teacher or (),
        seed=args.seed,
    )
    # The per-step history is in DIR/metrics.json; the summary line stays readable.
    metrics.pop("history", None)
    _emit(metrics)


def cmd_soup_router(args: argparse.Namespace) -> None:
    from training.soup_router import soup_routers

    metrics = soup_routers(
        args.member,
        args.data,
        args.out,
        text_col=args.text_col,
        label_col=args.label_col,
        eval_file=args.eval,
        threshold_max_in_scope_drop=args.threshold_budget,
    )
    metrics.pop("history", None)
    _emit(metrics)


def cmd_train_generator(args: argparse.Namespace) -> None:
    from training.train_generator import train_generator

    settings = _settings(args)
    _emit(
        train_generator(
            args.data,
            args.out,
            config=args.generator_config,
            base=args.base or settings.generator.model,
            max_steps=args.max_steps,
            progress=_training_progress(),
            data_dir=settings.data_dir,
            onnx_adapter=settings.generator.backend == "onnx",
            onnx_precision=settings.generator.onnx_precision,
        )
    )


def cmd_eval_generator(args: argparse.Namespace) -> None:
    from training.train_generator import evaluate_generator

    settings = load_settings()
    _emit(
        evaluate_generator(
            args.model, args.data, base=settings.generator.model, data_dir=settings.data_dir, limit=args.limit
        )
    )


def cmd_eval_router(args: argparse.Namespace) -> None:
    from services.router.evaluation import evaluate_router

    _emit(evaluate_router(args.model, args.data, text_col=args.text_col, label_col=args.label_col))


def cmd_eval_retrieval(args: argparse.Namespace) -> None:
    from services.rag.evaluation import evaluate_beir

    settings = _settings(args)
    _emit(evaluate_beir(args.beir, split=args.split, settings=settings.rag, mode=args.mode))


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
            )
        )
    else:
        from services.evaluation.local_server import evaluate_e2e_local

        result = evaluate_e2e_local(
            args.data, args.corpus, pipeline=args.pipeline, concurrency=args.concurrency, out=args.out
        )
    # Per-item records go to --out; the summary line stays one readable JSON object.
    result.pop("items", None)
    _emit(result)


def cmd_bench(args: argparse.Namespace) -> None:
    rest: list[str] = list(args.rest)
    if args.kind == "load":
        from benchmarks.load import bench_load_main

        raise SystemExit(bench_load_main(rest))
    if args.kind == "overhead":
        from benchmarks.overhead import bench_overhead_main

        raise SystemExit(bench_overhead_main(rest))
    from benchmarks.compare import bench_compare_main

    raise SystemExit(bench_compare_main(rest))


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridllm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], None], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", type=_existing_file, default=None, help="YAML settings file")
        p.set_defaults(handler=handler)
        return p

    serve = command("serve", cmd_serve, "run the OpenAI-compatible service")
    serve.add_argument("--index", type=Path, default=None, help="index directory")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=_port, default=None)

    ingest = command("ingest", cmd_ingest, "ingest documents into a new index version")
    ingest.add_argument("paths", nargs="+", type=_existing_path)
    ingest.add_argument("--index", type=Path, default=None)

    command("prepare", cmd_prepare, "convert and cache the configured generator models")

    route = command("route", cmd_route, "print the routing decision for a text")
    route.add_argument("text")
    route.add_argument("--model", type=_existing_dir, default=None, help="router model directory")

    train = command("train-router", cmd_train_router, "train the LoRA intent router")
    train.add_argument("--data", type=_existing_file, required=True)
    train.add_argument("--text-col", default="text")
    train.add_argument("--label-col", default="label")
    train.add_argument("--eval", type=_existing_file, default=None)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--router-config", type=_existing_file, default=None, help="LoRA training YAML")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--seed", type=int, default=None, help="replaces the config's seed (runs to soup)")
    train.add_argument(
        "--teacher",
        type=_existing_dir,
        action="append",
        default=None,
        help="trained router to distill from (repeat to average several; needs distill_weight > 0)",
    )

    soup = command(
        "soup-router", cmd_soup_router, "average routers trained with one recipe and several seeds"
    )
    soup.add_argument("--member", type=_existing_dir, action="append", required=True, help="repeat per run")
    soup.add_argument("--data", type=_existing_file, required=True, help="the members' training data")
    soup.add_argument("--text-col", default="text")
    soup.add_argument("--label-col", default="label")
    soup.add_argument("--eval", type=_existing_file, default=None)
    soup.add_argument("--out", type=Path, required=True)
    soup.add_argument(
        "--threshold-budget",
        type=float,
        default=None,
        help="max validation in-scope accuracy the threshold may cost, e.g. 0.002 (default: the members')",
    )

    train_gen = command("train-generator", cmd_train_generator, "train a LoRA adapter for the tuned pipeline")
    train_gen.add_argument(
        "--data", type=_existing_path, required=True, help="JSONL, or a folder with train/val"
    )
    train_gen.add_argument("--out", type=Path, required=True)
    train_gen.add_argument("--generator-config", type=_existing_file, default=None, help="LoRA training YAML")
    train_gen.add_argument("--base", default=None, help="base model (default: generator.model)")
    train_gen.add_argument("--max-steps", type=int, default=None)

    evaluate = sub.add_parser("eval", help="evaluate a component").add_subparsers(dest="what", required=True)
    ev_router = evaluate.add_parser("router")
    ev_router.add_argument("--model", type=_existing_dir, required=True)
    ev_router.add_argument("--data", type=_existing_file, required=True)
    ev_router.add_argument("--text-col", default="text")
    ev_router.add_argument("--label-col", default="label")
    ev_router.set_defaults(handler=cmd_eval_router, config=None)
    ev_generator = evaluate.add_parser("generator")
    ev_generator.add_argument("--model", type=_existing_dir, required=True, help="adapter directory")
    ev_generator.add_argument("--data", type=_existing_path, required=True)
    ev_generator.add_argument("--limit", type=int, default=12)
    ev_generator.set_defaults(handler=cmd_eval_generator, config=None)
    ev_retrieval = evaluate.add_parser("retrieval")
    ev_retrieval.add_argument("--beir", type=_existing_dir, required=True)
    ev_retrieval.add_argument("--split", default="test")
    ev_retrieval.add_argument("--mode", choices=["dense", "sparse", "fused"], default="fused")
    ev_retrieval.add_argument("--config", type=_existing_file, default=None)
    ev_retrieval.set_defaults(handler=cmd_eval_retrieval)
    ev_e2e = evaluate.add_parser("e2e")
    ev_e2e.add_argument("--data", type=_existing_file, required=True)
    ev_e2e.add_argument("--corpus", type=_existing_dir, default=Path("corpus/handbook"))
    ev_e2e.add_argument("--base-url", default=None)
    ev_e2e.add_argument("--api-key", default=None)
    ev_e2e.add_argument("--pipeline", default="hybrid")
    ev_e2e.add_argument("--concurrency", type=int, default=2)
    ev_e2e.add_argument("--out", type=Path, default=None, help="write per-item results (JSONL) here")
    ev_e2e.set_defaults(handler=cmd_eval_e2e, config=None)

    bench = sub.add_parser("bench", help="load generator and architecture comparison (benchmarks/)")
    bench.add_argument("kind", choices=["load", "compare", "overhead"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=cmd_bench, config=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except HybridError as exc:
        _fail(exc.message)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
