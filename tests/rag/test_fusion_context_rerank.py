from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.core.types import Chunk, ScoredChunk
from services.rag.context import render_numbered_context, select_context_within_budget
from services.rag.fusion import fuse, reciprocal_rank_fusion, weighted_score_fusion
from services.rag.rerank import Candidates, CrossEncoderReranker, MmrReranker, NoReranker, build_reranker

pytestmark = pytest.mark.unit


def test_rrf_rewards_agreement_between_lists() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    sparse = [(3, 12.0), (4, 9.0), (1, 3.0)]
    fused = reciprocal_rank_fusion([dense, sparse], rrf_k=60)
    assert [row for row, _ in fused][:2] == [1, 3]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_weighted_fusion_scales_each_list() -> None:
    dense = [(1, 0.9), (2, 0.5)]
    sparse = [(2, 20.0), (3, 10.0)]
    assert weighted_score_fusion(dense, sparse, dense_weight=1.0)[0] == (1, 1.0)
    assert weighted_score_fusion(dense, sparse, dense_weight=0.0)[0] == (2, 1.0)
    mixed = dict(weighted_score_fusion(dense, sparse, dense_weight=0.5))
    assert mixed == {1: 0.5, 2: 0.5, 3: 0.0}


def test_single_list_modes_and_bad_mode() -> None:
    dense, sparse = [(1, 0.9)], [(2, 5.0)]
    assert fuse(dense, sparse, mode="dense") == dense
    assert fuse(dense, sparse, mode="sparse") == sparse
    with pytest.raises(ValueError, match="fusion mode"):
        fuse(dense, sparse, mode="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dense_weight"):
        weighted_score_fusion(dense, sparse, dense_weight=1.5)


def scored(chunk_id: str, text: str, tokens: int, score: float = 0.5) -> ScoredChunk:
    chunk = Chunk(chunk_id=chunk_id, source=f"{chunk_id}.md", text=text, token_count=tokens)
    return ScoredChunk(chunk, score)


def test_context_dedupes_keeps_order_and_stops_at_budget() -> None:
    chunks = [
        scored("a", "vacation is 27 days per year for everyone", 10, 0.9),
        scored("a", "vacation is 27 days per year for everyone", 10, 0.9),
        scored("b", "vacation is 27 days per year for everyone!", 10, 0.8),
        scored("c", "receipts within 30 days", 10, 0.7),
        scored("d", "laptops ship a week early", 10, 0.6),
    ]
    selection = select_context_within_budget(chunks, 25)
    assert [s.chunk.chunk_id for s in selection.chunks] == ["a", "c"]
    assert selection.token_count == 20
    rendered = render_numbered_context(selection)
    assert rendered.startswith("[1] a.md\n") and "\n\n[2] c.md\n" in rendered


def test_context_counts_with_a_given_tokenizer_and_validates() -> None:
    selection = select_context_within_budget([scored("a", "one two three", 0)], 2, count_tokens=lambda t: 3)
    assert selection.chunks == []
    with pytest.raises(ValueError, match="budget_tokens"):
        select_context_within_budget([], 0)


def test_mmr_skips_a_near_duplicate() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    vectors = np.array([[0.9, 0.43, 0.0], [0.9, 0.43, 0.01], [0.8, 0.0, 0.6]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = MmrReranker(lambda_=0.5).rerank(Candidates("q", query, ["a", "b", "c"], vectors), 2)
    assert order == [0, 2]
    assert NoReranker().rerank(Candidates("q", query, ["a", "b", "c"], vectors), 2) == [0, 1]


def test_build_reranker_names() -> None:
    assert isinstance(build_reranker("none"), NoReranker)
    assert isinstance(build_reranker("mmr"), MmrReranker)
    assert isinstance(build_reranker("some/cross-encoder"), CrossEncoderReranker)


@pytest.mark.integration
def test_cross_encoder_code_path_with_a_tiny_model_built_from_minilm(tmp_path: Path) -> None:
    """No CrossEncoder weights exist offline: build one from the packaged MiniLM (untrained, num_labels=1).

    Its scores are meaningless, so this checks the code path (load by folder, score pairs, reorder), and that
    the order follows the model's own scores.
    """
    from sentence_transformers import CrossEncoder

    from services.core.packaged import minilm_dir

    folder = tmp_path / "tiny-cross-encoder"
    CrossEncoder(str(minilm_dir()), num_labels=1, device="cpu").save(str(folder))
    reranker = CrossEncoderReranker(str(folder))
    reranker.warm_up()
    texts = ["vacation days per year", "the printer on floor 2", "carry over unused vacation"]
    unused = np.zeros((3, 3), dtype=np.float32)
    order = reranker.rerank(Candidates("how much vacation", unused[0], texts, unused), 3)
    assert sorted(order) == [0, 1, 2]
    model = CrossEncoder(str(folder), num_labels=1, device="cpu")
    scores = model.predict([("how much vacation", t) for t in texts])
    assert order == [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
