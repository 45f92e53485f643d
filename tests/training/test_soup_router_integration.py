"""Two briefly trained routers of one recipe souped into one folder that both engines serve."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from services.core.errors import ConfigError
from services.router.artifacts import read_artifacts
from services.router.classifier import IntentRouterModel, load_merged_torch_model
from tests.training.router_runs import short_runs
from training.soup_router import soup_routers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """Two 15-step runs that differ only in seed, on one training file and one validation file."""
    return short_runs(tmp_path_factory.mktemp("soup"), (1, 2), max_steps=15)


def test_the_soup_serves_the_mean_of_its_members_weights(
    members: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, val = members
    out = tmp_path / "soup"
    metrics = soup_routers(runs, train, out, eval_file=val, threshold_max_in_scope_drop=0.002)
    assert metrics["soup"]["seeds"] == [1, 2]
    stored = yaml.safe_load((out / "router_config.yaml").read_text())
    assert (stored["lora_r"], stored["threshold_max_in_scope_drop"]) == (16, 0.002)  # 2 x r8
    assert metrics["export"]["onnx_max_abs_logit_diff"] < 1e-3
    assert "Weight soup" in (out / "MODEL_CARD.md").read_text()

    soup = load_merged_torch_model(read_artifacts(out)).state_dict()
    merged = [load_merged_torch_model(read_artifacts(run)).state_dict() for run in runs]
    for name, tensor in soup.items():
        if tensor.is_floating_point():
            expected = (merged[0][name] + merged[1][name]) / 2
            np.testing.assert_allclose(tensor.numpy(), expected.numpy(), atol=1e-5, err_msg=name)

    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()][:16]
    onnx, torch_engine = IntentRouterModel(out, engine="onnx"), IntentRouterModel(out, engine="torch")
    onnx.warm_up()
    torch_engine.warm_up()
    np.testing.assert_allclose(onnx.logits(texts), torch_engine.logits(texts), atol=1e-3)


def test_members_of_different_recipes_are_refused(
    members: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, val = members
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    config = yaml.safe_load((other / "router_config.yaml").read_text())
    config["learning_rate"] = 0.5
    (other / "router_config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="learning_rate"):
        soup_routers([runs[0], other], train, tmp_path / "soup", eval_file=val)
    assert not (tmp_path / "soup").exists()


def test_members_validated_on_different_held_out_splits_are_refused(
    members: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, _ = members
    # Without --eval each seed holds out its own 15 % of the training file.
    with pytest.raises(ConfigError, match="different validation splits"):
        soup_routers(runs, train, tmp_path / "soup")


def test_a_folder_that_is_not_a_router_is_refused(
    members: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, val = members
    with pytest.raises(ConfigError, match="not a trained router folder"):
        soup_routers([runs[0], tmp_path], train, tmp_path / "soup", eval_file=val)
    with pytest.raises(ConfigError, match="threshold_max_in_scope_drop"):
        soup_routers(runs, train, tmp_path / "soup", eval_file=val, threshold_max_in_scope_drop=1.5)
    broken = tmp_path / "broken"
    shutil.copytree(runs[1], broken)
    (broken / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(ConfigError, match="adapter weights missing"):
        soup_routers([runs[0], broken], train, tmp_path / "soup", eval_file=val)
    with pytest.raises(ConfigError, match="at least 2"):
        soup_routers([runs[0]], train, tmp_path / "soup", eval_file=val)
