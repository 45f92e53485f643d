"""The crash matrix's cheap rows against real processes: a killed ingest, a killed server during an index
swap and a full disk lose nothing, and clients see no 5xx. (The damaged-cache row converts the generator
twice, so it runs in the bench, not here; tests/core/test_artifact_cache.py covers its policy.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness.steady_load import CONNECTION_FAILED
from benchmarks.system import crash_matrix
from benchmarks.system.crash_matrix import Workbench
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    with crash_matrix.workbench(
        tmp_path_factory.mktemp("faults"), REPO_ROOT / "corpus" / "handbook"
    ) as bench:
        yield bench


def test_killed_ingest_keeps_the_served_version(bench: Workbench) -> None:
    row = crash_matrix.row_ingest_kill(bench, trials=1)
    assert row.data_lost == [] and row.target_met, row
    assert row.detail["kills"][0]["staging_seen"], "the first kill must land while files are written"
    assert set(row.user_saw) == {"200"}


def test_server_killed_during_an_index_swap_restarts_on_the_new_version(bench: Workbench) -> None:
    row = crash_matrix.row_server_kill_during_swap(bench)
    assert row.data_lost == [] and row.target_met, row
    assert set(row.user_saw) <= {"200", CONNECTION_FAILED}
    assert row.recovery_s is not None


def test_full_disk_fails_the_ingest_with_one_line_and_keeps_serving(bench: Workbench) -> None:
    row = crash_matrix.row_disk_full(bench)
    assert row.data_lost == [] and row.target_met, row
    assert row.detail["ingest_exit"] != 0
    assert row.detail["ingest_error"].startswith("hybridllm: error: cannot write index version")
    assert set(row.user_saw) == {"200"}


def test_report_lists_every_row(tmp_path: Path) -> None:
    row = crash_matrix.Row("r", "a fault", {"200": 3, "500": 1}, [], 1.5, "restart")
    payload = {"rows": [{**row.__dict__, "target_met": row.target_met}], "load_average": [0.5, 0.4, 0.3]}
    crash_matrix.write_report(payload, tmp_path)
    text = (tmp_path / "faults.md").read_text(encoding="utf-8")
    assert "a fault" in text and "3x 200, 1x 500" in text and "**no**" in text
