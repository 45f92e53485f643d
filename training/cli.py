"""The training commands of `hybridllm` (entry points in the `hybridllm.commands` group, extra `train`).

Each `register_*` adds one command and its arguments; the handler imports torch and the trainers only
when the command runs, so listing the commands needs none of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from services.cli import (
    Subparsers,
    add_command,
    emit,
    existing_dir,
    existing_file,
    existing_path,
    settings_from,
)
from services.core.settings import OnnxGeneratorSettings, load_settings
from services.core.stderr_log import log_to_stderr
from services.router.artifacts import OOS_METHODS


def training_progress() -> bool:
    """A progress bar on a terminal; elsewhere (nohup, CI, a pipe) the training loggers' lines instead.

    A redirected 40-minute run with neither would print nothing until its metrics line at the end.
    """
    if sys.stderr.isatty():
        return True
    log_to_stderr(logging.getLogger("training"))
    return False


# ----------------------------------------------------------------------------- train-router


def add_train_router_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=existing_file, required=True)
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--label-col", default="label")
    parser.add_argument("--eval", type=existing_file, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--router-config", type=existing_file, default=None, help="LoRA training YAML")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="replaces the config's seed (runs to soup)")
    parser.add_argument(
        "--teacher",
        type=existing_dir,
        action="append",
        default=None,
        help="trained router to distill from (repeat to average several; needs distill_weight > 0)",
    )
    # Each replaces the config's field of the same name.
    parser.add_argument("--oos-method", choices=list(OOS_METHODS), default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None)


def train_router_command(args: argparse.Namespace) -> None:
    from training.train_router import train_router

    metrics = train_router(
        args.data,
        args.out,
        text_col=args.text_col,
        label_col=args.label_col,
        eval_file=args.eval,
        config=args.router_config,
        max_steps=args.max_steps,
        progress=training_progress(),
        teachers=args.teacher or (),
        seed=args.seed,
        oos_method=args.oos_method,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        torch_threads=args.torch_threads,
    )
    # The per-step history is in DIR/metrics.json; the summary line stays readable.
    metrics.pop("history", None)
    emit(metrics)


def register_train_router(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "train-router", train_router_command, "train the LoRA intent router")
    add_train_router_arguments(parser)
    return parser


# ----------------------------------------------------------------------------- soup-router


def soup_router_command(args: argparse.Namespace) -> None:
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
    emit(metrics)


def register_soup_router(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "soup-router",
        soup_router_command,
        "average routers trained with one recipe and several seeds",
    )
    parser.add_argument("--member", type=existing_dir, action="append", required=True, help="repeat per run")
    parser.add_argument("--data", type=existing_file, required=True, help="the members' training data")
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--label-col", default="label")
    parser.add_argument("--eval", type=existing_file, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--threshold-budget",
        type=float,
        default=None,
        help="max validation in-scope accuracy the threshold may cost, e.g. 0.002 (default: the members')",
    )
    return parser


# ----------------------------------------------------------------------------- train-generator


def train_generator_command(args: argparse.Namespace) -> None:
    from training.train_generator import train_generator

    settings = settings_from(args)
    generator = settings.generator
    # An onnx generator serves the adapter as an ONNX copy, converted at the generator's own precision.
    onnx = generator if isinstance(generator, OnnxGeneratorSettings) else OnnxGeneratorSettings()
    onnx_adapter = generator.backend == "onnx"
    emit(
        train_generator(
            args.data,
            args.out,
            config=args.generator_config,
            base=args.base or generator.model,
            max_steps=args.max_steps,
            progress=training_progress(),
            data_dir=settings.data_dir,
            onnx_adapter=onnx_adapter,
            onnx_precision=onnx.onnx_precision,
        )
    )


def register_train_generator(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "train-generator", train_generator_command, "train a LoRA adapter for the tuned pipeline"
    )
    parser.add_argument("--data", type=existing_path, required=True, help="JSONL, or a folder with train/val")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generator-config", type=existing_file, default=None, help="LoRA training YAML")
    parser.add_argument("--base", default=None, help="base model (default: generator.model)")
    parser.add_argument("--max-steps", type=int, default=None)
    return parser


# ----------------------------------------------------------------------------- train-reranker

# `hybridllm train-reranker` option -> RerankerConfig field; each replaces the default when given.
RERANKER_OPTIONS: dict[str, type] = {
    "epochs": int,
    "batch_queries": int,
    "negatives": int,
    "learning_rate": float,
    "max_length": int,
    "val_fraction": float,
    "seed": int,
    "torch_threads": int,
}


def add_train_reranker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=existing_path,
        required=True,
        help="queries.jsonl, or the folder build_rerank_data wrote",
    )
    parser.add_argument("--out", type=Path, required=True, help="the reranker folder (rag.rerank.reranker)")
    parser.add_argument("--max-steps", type=int, default=None)
    for name, kind in RERANKER_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)


def train_reranker_command(args: argparse.Namespace) -> None:
    from training.train_reranker import RerankerConfig, train_reranker

    training_progress()
    given = {name: getattr(args, name) for name in RERANKER_OPTIONS if getattr(args, name) is not None}
    metrics = train_reranker(args.data, args.out, config=RerankerConfig(**given), max_steps=args.max_steps)
    metrics.pop("history", None)
    metrics.pop("val_sources", None)
    emit(metrics)


def register_train_reranker(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "train-reranker",
        train_reranker_command,
        "train the cross-encoder reranker (MiniLM) on python -m training.build_rerank_data's queries",
    )
    add_train_reranker_arguments(parser)
    return parser


# ----------------------------------------------------------------------------- eval generator


def eval_generator_command(args: argparse.Namespace) -> None:
    from training.train_generator import evaluate_generator

    settings = load_settings()
    emit(
        evaluate_generator(
            args.model, args.data, base=settings.generator.model, data_dir=settings.data_dir, limit=args.limit
        )
    )


def register_eval_generator(subparsers: Subparsers) -> argparse.ArgumentParser:
    """`hybridllm eval generator` (registered under `eval`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser("generator")
    parser.add_argument("--model", type=existing_dir, required=True, help="adapter directory")
    parser.add_argument("--data", type=existing_path, required=True)
    parser.add_argument("--limit", type=int, default=12)
    parser.set_defaults(handler=eval_generator_command, config=None)
    return parser
