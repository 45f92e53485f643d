"""Every benchmark that writes a results JSON records `environment()` in it and opens its report with it."""

import ast
import json
from pathlib import Path

import pytest

from benchmarks.harness.environment import environment
from benchmarks.harness.report import write_load_report

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
BENCH_MODULES = sorted(
    p
    for p in [
        *BENCHMARKS.glob("components/*.py"),
        *BENCHMARKS.glob("system/*.py"),
        BENCHMARKS / "harness/load.py",
    ]
    if p.name != "__init__.py"
)
# A report module writes the JSON of results its bench module assembles (and records the environment in).
RECORDED_BY = {"system/compare_report.py": "system/compare.py"}


def _called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
    return names


def _writes_json(tree: ast.AST) -> bool:
    """A call of write_json / write_load_report, or `.write_text(json.dumps(...))`."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in ("write_json", "write_load_report"):
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr == "write_text" and node.args:
            first = node.args[0]
            if isinstance(first, ast.BinOp):
                first = first.left
            if isinstance(first, ast.Call) and ast.unparse(first.func) == "json.dumps":
                return True
    return False


def _module(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"))


RESULT_WRITERS = [p.relative_to(BENCHMARKS).as_posix() for p in BENCH_MODULES if _writes_json(_module(p))]


def test_the_scan_finds_the_result_writers():
    assert {"components/router.py", "components/embedder.py", "system/compare_report.py"} <= set(
        RESULT_WRITERS
    )
    assert "system/sweep.py" not in RESULT_WRITERS  # the threshold sweep writes nothing of its own
    assert len(RESULT_WRITERS) >= 15


@pytest.mark.parametrize("name", RESULT_WRITERS)
def test_every_results_writer_records_and_renders_the_environment(name):
    recorder = RECORDED_BY.get(name, name)
    assert "environment" in _called_names(_module(BENCHMARKS / recorder)), (
        f"{recorder} never calls environment()"
    )
    report_renderers = {"environment_markdown", "write_load_report", "write_compare_report"}
    assert report_renderers & _called_names(_module(BENCHMARKS / name)), (
        f"{name} writes a report without the environment header"
    )


def test_load_report_carries_the_environment_in_json_and_header(tmp_path):
    env = environment()
    write_load_report(
        {"name": "t", "base_url": "http://x", "config": {}, "runs": [], "environment": env}, tmp_path
    )
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["environment"]["packages"]["onnxruntime"] == env["packages"]["onnxruntime"]
    header = (tmp_path / "report.md").read_text().splitlines()[2]
    assert (
        header.startswith("Environment (")
        and f"onnxruntime {written['environment']['packages']['onnxruntime']}" in header
    )
