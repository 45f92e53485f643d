"""The distillation loss: its two terms, their weighting, and where its soft term is minimal."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from training.distill import distillation_loss

pytestmark = pytest.mark.unit


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(8, 5, generator=generator)
    teacher = torch.randn(8, 5, generator=generator) * 3
    gold = torch.randint(0, 5, (8,), generator=generator)
    return student, teacher, gold


def test_weight_zero_is_plain_cross_entropy() -> None:
    student, teacher, gold = _batch()
    loss = distillation_loss(student, teacher, gold, weight=0.0, temperature=2.0, label_smoothing=0.1)
    assert loss.item() == pytest.approx(F.cross_entropy(student, gold, label_smoothing=0.1).item())


def test_weight_one_is_t_squared_kl_from_the_teacher_and_blends_linearly() -> None:
    student, teacher, gold = _batch()
    t = 3.0
    teacher_p = F.softmax(teacher / t, dim=-1)
    kl = (teacher_p * (teacher_p.log() - F.log_softmax(student / t, dim=-1))).sum(-1).mean()
    soft = distillation_loss(student, teacher, gold, weight=1.0, temperature=t)
    assert soft.item() == pytest.approx(t**2 * kl.item(), rel=1e-5)
    hard = F.cross_entropy(student, gold)
    blended = distillation_loss(student, teacher, gold, weight=0.25, temperature=t)
    assert blended.item() == pytest.approx(0.75 * hard.item() + 0.25 * soft.item(), rel=1e-5)


def test_the_soft_term_vanishes_and_has_no_gradient_where_the_student_matches_the_teacher() -> None:
    _, teacher, gold = _batch()
    # Softmax is shift-invariant: a student off by a constant per row already matches the teacher.
    student = (teacher + 7.0).clone().requires_grad_(True)
    loss = distillation_loss(student, teacher, gold, weight=1.0, temperature=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert student.grad is not None and student.grad.abs().max().item() < 1e-6
