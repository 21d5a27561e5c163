"""Sequences for autoregressive training: id layout, round trips, padding, packing and masks."""

from __future__ import annotations

import pytest
import torch

from pipeline.loader import TokenDataset, TokenLoader
from pipeline.loader.sequences import (
    PackCollator,
    SequenceSpec,
    clip_sequence,
    collate_clips,
    document_causal_mask,
    pack_clips,
)
from tests.loader_support import clip_ids, write_output

IGN = -100


def item(values: list[int], shape: tuple[int, int, int] | None = None) -> dict:
    tokens = torch.tensor(values, dtype=torch.int64).reshape(shape or (1, 1, len(values)))
    return {"tokens": tokens, "key": f"k{values[0]}", "meta": {"caption": "c"}, "caption": "c"}


@pytest.mark.parametrize(("vocab", "offset"), [(64_000, 0), (1 << 16, 32_000)])
def test_every_id_round_trips_through_a_sequence(vocab, offset):
    """All ids 0..vocab-1 come back exactly after offset and framing; specials lie above them."""
    spec = SequenceSpec(vocab_size=vocab, vocab_offset=offset)
    ids = torch.arange(vocab, dtype=torch.int64).reshape(1, -1, 64)
    seq = clip_sequence(ids, spec)
    assert seq.dtype == torch.int64
    assert seq[0] == spec.bov_id == offset + vocab and seq[-1] == spec.eov_id
    assert torch.equal(seq[1:-1] - offset, ids.reshape(-1))
    assert spec.total_vocab == offset + vocab + 3


def test_uint16_ids_widen_exactly_and_floats_are_refused():
    """uint16 tensors are accepted and widened exactly; float tensors and out-of-range ids are errors."""
    spec = SequenceSpec(vocab_size=1 << 16)
    wide = torch.arange(1 << 16, dtype=torch.int64)
    as_u16 = wide.to(torch.uint16).reshape(16, 64, 64)
    assert torch.equal(clip_sequence(as_u16, spec)[1:-1], wide)
    with pytest.raises(TypeError, match="integer"):
        clip_sequence(wide.to(torch.float32).reshape(16, 64, 64), spec)
    with pytest.raises(ValueError, match="vocabulary is 0..9"):
        clip_sequence(torch.tensor([[[3, 10]]]), SequenceSpec(vocab_size=10))


def test_raster_order_is_t_then_h_then_w():
    """The flattened order walks w fastest, then h, then t."""
    tokens = torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])  # [t=2, h=2, w=2]
    assert clip_sequence(tokens, SequenceSpec(vocab_size=8))[1:-1].tolist() == list(range(8))


def test_collate_pads_and_shifts_labels():
    """One clip per row: labels are the next token, padding and EOV carry the ignore index."""
    spec = SequenceSpec(vocab_size=10)  # BOV 10, EOV 11, PAD 12
    batch = collate_clips([item([1, 2, 3]), item([4])], spec)
    assert batch["input_ids"].tolist() == [[10, 1, 2, 3, 11], [10, 4, 11, 12, 12]]
    assert batch["labels"].tolist() == [[1, 2, 3, 11, IGN], [4, 11, IGN, IGN, IGN]]
    assert batch["loss_mask"].tolist() == [[True] * 4 + [False], [True, True, False, False, False]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]
    assert batch["document_ids"].tolist() == [[0] * 5, [0, 0, 0, -1, -1]]
    assert batch["keys"] == ["k1", "k4"] and batch["captions"] == ["c", "c"]


def test_packing_places_documents_positions_and_labels():
    """Clips of 5, 3 and 7 tokens (with BOV/EOV) packed into rows of 6, worked out by hand."""
    spec = SequenceSpec(vocab_size=100)  # BOV 100, EOV 101, PAD 102
    batch = pack_clips([item([1, 2, 3]), item([4]), item([5, 6, 7, 8, 9])], spec, seq_len=6)
    assert batch["input_ids"].tolist() == [
        [100, 1, 2, 3, 101, 100],
        [4, 101, 100, 5, 6, 7],
        [8, 9, 101, 102, 102, 102],
    ]
    assert batch["labels"].tolist() == [
        [1, 2, 3, 101, IGN, 4],  # the row's last label is the continuation's first token
        [101, IGN, 5, 6, 7, 8],
        [9, 101, IGN, IGN, IGN, IGN],
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0], [1, 2, 0, 1, 2, 3], [4, 5, 6, 0, 0, 0]]
    assert batch["document_ids"].tolist() == [[0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, -1, -1, -1]]
    assert torch.equal(batch["loss_mask"], batch["labels"] != IGN)
    assert batch["row_items"] == [[0, 1], [1, 2], [2]]


def test_document_mask_is_causal_within_a_clip_only():
    """Query i sees key j iff j <= i and both are in the same clip; padding sees only itself."""
    doc = torch.tensor([[0, 0, 1, 1, 1, -1]])
    mask = document_causal_mask(doc)[0]
    for i in range(6):
        for j in range(6):
            expected = (j <= i and doc[0, i] == doc[0, j] and doc[0, i] >= 0) or i == j
            assert bool(mask[i, j]) == expected, (i, j)


GRIDS = [(2, 3, 4), (2, 4, 3), (5, 3, 4)]  # native aspect ratios and a longer whole-video row


@pytest.mark.parametrize("mixed", [False, True])
def test_packed_batches_from_the_loader_keep_every_clip(tmp_path, mixed):
    """TokenLoader + PackCollator over real token files: unpacking the rows gives back every clip's
    ids, also when the clips have different token grids."""
    ids_for = (lambda s, r: clip_ids(s, r, GRIDS[(s + r) % 3])) if mixed else None
    write_output(tmp_path, [3, 2], shape=(2, 3, 4), ids_for=ids_for)
    spec = SequenceSpec(vocab_size=64_000, vocab_offset=5)
    ds = TokenDataset(str(tmp_path), seed=0)
    clips = {it["key"]: clip_sequence(it["tokens"], spec) for it in ds}
    seen = {}
    for batch in TokenLoader(ds, batch_size=2, num_workers=2, collate_fn=PackCollator(spec, seq_len=20)):
        stream = batch["input_ids"][batch["input_ids"] != spec.pad_id]
        bounds = (stream == spec.bov_id).nonzero().view(-1).tolist() + [len(stream)]
        for key, lo, hi in zip(batch["keys"], bounds[:-1], bounds[1:], strict=True):
            seen[key] = stream[lo:hi]
    assert seen.keys() == clips.keys()
    assert all(torch.equal(seen[k], clips[k]) for k in clips)
    if mixed:
        assert {tuple(it["tokens"].shape) for it in ds} == set(GRIDS)
