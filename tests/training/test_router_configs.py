"""Every router recipe shipped in training/configs loads, and the fast profile is what its comment says."""

from pathlib import Path

import pytest

from services.core.errors import ConfigError
from training.router_config import load_config

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("router_*.yaml")), ids=lambda p: p.name)
def test_shipped_router_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.base_model.startswith("packaged:")  # offline by construction


def test_fast_profile_is_three_mean_pooled_layers_with_lora_on_every_linear_layer() -> None:
    cfg = load_config(CONFIGS / "router_fast.yaml")
    assert (cfg.encoder_layers, cfg.pooling) == (3, "mean")
    assert set(cfg.target_modules) == {"query", "key", "value", "dense"}
    assert "pooler" not in cfg.modules_to_save  # a mean-pooled head never reads the pooler


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"weight_average_decay": 1.0}, "weight_average_decay"),
        ({"weight_average_decay": 0.0}, "weight_average_decay"),
    ],
)
def test_bad_head_options_are_config_errors(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "router_lora.yaml", **override)
