"""`make clinc150` trains one router per seed, soups them, distils them and writes the report (dry run)."""

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_clinc150_target_trains_each_seed_soups_every_run_and_distils_them_all() -> None:
    done = subprocess.run(
        ["make", "-n", "clinc150", "CLINC_SEEDS=3 5", "CLINC_KD_SEEDS=7", "DATA_DIR=/tmp/x",
         "CLINC150=data.json"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    script = done.stdout
    assert "for seed in 3 5" in script and "--seed $seed" in script
    assert "soup-router --data data.json --out /tmp/x/router-clinc150-soup" in script
    assert "--member /tmp/x/router-clinc150-s3 --member /tmp/x/router-clinc150-s5" in script
    assert "--model soup=/tmp/x/router-clinc150-soup" in script
    assert "for seed in 7" in script and "router_clinc150_distilled.yaml" in script
    assert "--teacher /tmp/x/router-clinc150-s3 --teacher /tmp/x/router-clinc150-s5" in script
    assert "--model kd-s7=/tmp/x/router-clinc150-kd-s7" in script
