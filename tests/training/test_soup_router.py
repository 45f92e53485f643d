"""The adapter soup is exact: its LoRA update is the mean of the members' updates, its head their mean."""

import pytest
import torch

from services.core.errors import ConfigError
from training.soup_router import average_adapter_states

pytestmark = pytest.mark.unit

A = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"
B = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight"
HEAD = "base_model.model.classifier.weight"


def _member(seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        A: torch.randn(rank, 12, generator=g),
        B: torch.randn(10, rank, generator=g),
        HEAD: torch.randn(3, 10, generator=g),
    }


def test_the_soup_update_is_the_mean_of_the_members_updates() -> None:
    members = [_member(seed) for seed in (1, 2, 3)]
    soup = average_adapter_states(members)
    assert soup[A].shape == (12, 12) and soup[B].shape == (10, 12)  # rank 3 x 4
    expected = sum(m[B] @ m[A] for m in members) / 3
    torch.testing.assert_close(soup[B] @ soup[A], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(soup[HEAD], sum(m[HEAD] for m in members) / 3)


def test_a_soup_of_one_run_with_itself_is_that_run() -> None:
    member = _member(7)
    soup = average_adapter_states([member, member])
    torch.testing.assert_close(soup[B] @ soup[A], member[B] @ member[A], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(soup[HEAD], member[HEAD])


def test_members_with_different_weights_are_refused() -> None:
    other = _member(2)
    del other[HEAD]
    with pytest.raises(ConfigError, match="different weights"):
        average_adapter_states([_member(1), other])
