"""`make clinc150` trains the CLINC150 recipe once per seed and writes the report (dry run only)."""

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_clinc150_target_trains_each_seed_and_reports_every_run() -> None:
    done = subprocess.run(
        ["make", "-n", "clinc150", "CLINC_SEEDS=3 5", "DATA_DIR=/tmp/x", "CLINC150=data.json"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    script = done.stdout
    assert "for seed in 3 5" in script and "--seed $seed" in script
    assert "--router-config training/configs/router_clinc150.yaml" in script
    assert "--model seed3=/tmp/x/router-clinc150-s3 --model seed5=/tmp/x/router-clinc150-s5" in script
