"""The decoder's ONNX Runtime session options: what genai_config receives, and the defaults the TTFT report
chose (benchmarks/results/ttft.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.core.settings import OnnxGeneratorSettings
from services.llm.onnx_backend import SessionOptions

pytestmark = pytest.mark.unit

TTFT_REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "ttft.json"


def test_the_options_become_genai_session_options_and_ort_config_entries() -> None:
    settings = OnnxGeneratorSettings(
        threads=3, intra_op_spinning=False, inter_op_spinning=True, graph_optimization="basic"
    )
    assert SessionOptions.of(settings).genai_session_options() == {
        "intra_op_num_threads": 3,
        "inter_op_num_threads": 1,
        "session.intra_op.allow_spinning": "0",
        "session.inter_op.allow_spinning": "1",
        "graph_optimization_level": "ORT_ENABLE_BASIC",
    }


def test_threads_0_leaves_the_thread_counts_to_the_library() -> None:
    options = SessionOptions(threads=0, graph_optimization="disable_all").genai_session_options()
    assert "intra_op_num_threads" not in options and "inter_op_num_threads" not in options
    assert options["graph_optimization_level"] == "ORT_DISABLE_ALL"


def test_the_defaults_are_the_option_set_the_ttft_report_chose() -> None:
    report = json.loads(TTFT_REPORT.read_text(encoding="utf-8"))
    chosen_name = report["summary"]["chosen"]
    chosen = next(o for o in report["config"]["options"] if o["name"] == chosen_name)
    defaults = SessionOptions.of(OnnxGeneratorSettings(threads=report["config"]["threads"]))
    assert chosen["session"] == {
        "threads": defaults.threads,
        "intra_op_spinning": defaults.intra_op_spinning,
        "inter_op_spinning": defaults.inter_op_spinning,
        "graph_optimization": defaults.graph_optimization,
    }
    assert chosen["accuracy_level"] is None  # the model keeps the MatMul accuracy level it was built with


def test_an_unknown_optimisation_level_is_refused() -> None:
    with pytest.raises(ValueError, match="graph_optimization"):
        OnnxGeneratorSettings(graph_optimization="fastest")
