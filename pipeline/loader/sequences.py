"""Autoregressive sequences from clip tokens: flatten, frame with BOV/EOV, pad or pack.

    tokens [t, h, w] int64 (a TokenDataset item)
      -> clip sequence [n] = BOV, offset + ids in raster order (t, h, w), EOV      (n = t*h*w + 2)
      -> a batch, one clip per row padded to the longest   (`collate_clips`)
         or clips packed end to end into rows of seq_len    (`pack_clips`)

Every batch is a dict of int64 tensors [B, L] (ids stay integers from disk to batch):

    input_ids     the sequence, pad_id where there is nothing
    labels        the next token of the same clip (targets are already shifted), ignore_index
                  where there is none: padding and each clip's last token (EOV)
    loss_mask     bool, labels != ignore_index
    position_ids  offset of each token inside its clip (a clip split over two rows continues)
    document_ids  index of the clip inside its row (0, 1, ...), -1 on padding

plus `keys`, `meta` and `captions` lists for conditioning. `document_causal_mask` gives the
block-diagonal causal attention mask [B, L, L] so packed clips cannot see each other.
Id layout: video ids occupy [offset, offset + vocab_size); BOV, EOV, PAD follow them, so a text
vocabulary can sit below `offset` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SequenceSpec:
    vocab_size: int  # the tokenizer's ids are 0 .. vocab_size - 1 (64,000 for Cosmos FSQ)
    vocab_offset: int = 0  # added to every video id
    ignore_index: int = -100  # label value that losses skip (torch cross_entropy's default)

    @property
    def bov_id(self) -> int:
        return self.vocab_offset + self.vocab_size

    @property
    def eov_id(self) -> int:
        return self.bov_id + 1

    @property
    def pad_id(self) -> int:
        return self.bov_id + 2

    @property
    def total_vocab(self) -> int:
        """Embedding rows a model needs for every id this spec can produce."""
        return self.pad_id + 1


def clip_sequence(tokens: torch.Tensor, spec: SequenceSpec) -> torch.Tensor:
    """[t, h, w] integer ids -> int64 [t*h*w + 2]: BOV, offset ids in raster order, EOV."""
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"token ids must be an integer tensor, got {tokens.dtype} (floats corrupt large ids)")
    flat = tokens.reshape(-1).to(torch.int64)  # row-major reshape is raster order (t, h, w)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= spec.vocab_size):
        raise ValueError(
            f"token ids span [{int(flat.min())}, {int(flat.max())}] but the vocabulary is 0..{spec.vocab_size - 1}"
        )
    bov = torch.tensor([spec.bov_id], dtype=torch.int64)
    eov = torch.tensor([spec.eov_id], dtype=torch.int64)
    return torch.cat([bov, flat + spec.vocab_offset, eov])


def _empty(rows: int, length: int, spec: SequenceSpec) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.full((rows, length), spec.pad_id, dtype=torch.int64),
        "labels": torch.full((rows, length), spec.ignore_index, dtype=torch.int64),
        "position_ids": torch.zeros((rows, length), dtype=torch.int64),
        "document_ids": torch.full((rows, length), -1, dtype=torch.int64),
    }


def _conditioning(items: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "keys": [it.get("key") for it in items],
        "meta": [it.get("meta") for it in items],
        "captions": [it.get("caption") for it in items],
    }


def collate_clips(items: Sequence[dict[str, Any]], spec: SequenceSpec) -> dict[str, Any]:
    """One clip per row, right-padded to the longest clip of the batch."""
    seqs = [clip_sequence(it["tokens"], spec) for it in items]
    batch = _empty(len(seqs), max(len(s) for s in seqs), spec)
    for row, seq in enumerate(seqs):
        n = len(seq)
        batch["input_ids"][row, :n] = seq
        batch["labels"][row, : n - 1] = seq[1:]
        batch["position_ids"][row, :n] = torch.arange(n)
        batch["document_ids"][row, :n] = 0
    batch["loss_mask"] = batch["labels"] != spec.ignore_index
    return {**batch, **_conditioning(items)}


def pack_clips(items: Sequence[dict[str, Any]], spec: SequenceSpec, seq_len: int) -> dict[str, Any]:
    """Clips laid end to end into rows of `seq_len`; a clip that overflows a row continues in the next.

    The last token of a row still has a label when its clip continues (the next row's first
    token); only each clip's EOV and the final row's padding are unlabelled. `row_items[r]`
    lists which items row r holds, in order.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    seqs = [clip_sequence(it["tokens"], spec) for it in items]
    total = sum(len(s) for s in seqs)
    rows = -(-total // seq_len)
    batch = _empty(rows, seq_len, spec)
    flat = {name: t.view(-1) for name, t in batch.items()}  # views: writes land in the batch
    row_items: list[list[int]] = [[] for _ in range(rows)]
    doc_in_row = [0] * rows
    start = 0
    for index, seq in enumerate(seqs):
        n = len(seq)
        span = slice(start, start + n)
        flat["input_ids"][span] = seq
        flat["labels"][start : start + n - 1] = seq[1:]
        flat["position_ids"][span] = torch.arange(n)
        for row in range(start // seq_len, (start + n - 1) // seq_len + 1):
            lo, hi = max(start, row * seq_len), min(start + n, (row + 1) * seq_len)
            flat["document_ids"][lo:hi] = doc_in_row[row]
            doc_in_row[row] += 1
            row_items[row].append(index)
        start += n
    batch["loss_mask"] = batch["labels"] != spec.ignore_index
    return {**batch, **_conditioning(items), "row_items": row_items}


def document_causal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """document_ids [B, L] -> bool [B, L, L]: query i may attend key j iff j <= i in the same clip.

    Padding (-1) attends only to itself, so no softmax row is empty.
    """
    length = document_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids.unsqueeze(-1) == document_ids.unsqueeze(-2)  # [B, L, L]
    real = (document_ids >= 0).unsqueeze(-1)
    eye = torch.eye(length, dtype=torch.bool, device=document_ids.device)
    return (causal & same & real) | eye


class PackCollator:
    """`collate_fn` for TokenLoader/DataLoader: a batch of clips -> packed rows (see `pack_clips`).

    Packing happens inside each batch, so a loader's saved position (counted in batches of
    clips) stays exact; the price is at most one partly padded row per batch.
    """

    def __init__(self, spec: SequenceSpec, seq_len: int):
        self.spec, self.seq_len = spec, seq_len

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return pack_clips(items, self.spec, self.seq_len)


class ClipCollator:
    """`collate_fn`: a batch of clips -> one padded clip per row (see `collate_clips`)."""

    def __init__(self, spec: SequenceSpec):
        self.spec = spec

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_clips(items, self.spec)
