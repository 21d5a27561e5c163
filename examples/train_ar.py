"""Train a small GPT on the tokens of a tokenmill job; compare held-out loss with the unigram entropy.

    tokenmill run examples/demo.yaml        # writes out/demo (the default --data)
    python examples/train_ar.py             # CPU, a few minutes
    python examples/train_ar.py --data s3://bucket/job --storage-options '{"endpoint_url": "http://..."}'

What it does:
1. Splits the job's finished shards: the last `--holdout-shards` (sorted by shard id) are
   held out, the rest train, so no held-out clip (nor any other clip of its source videos in
   those shards) is seen in training.
2. Counts the training ids and prints their unigram entropy H (nats per token, and bits).
3. Trains a GPT (causal self-attention, factorised t/h/w position embeddings (each clip's own
   token grid: clips of native aspect ratios or whole videos have different grids), plus the ids above
   and one latent frame before each predicted token as inputs and as a copy head, and FSQ digit
   embeddings when the job's tokenizer config names FSQ levels; see TinyGPT) on clips read by
   `pipeline.loader.TokenLoader` and packed into rows by `pipeline.loader.sequences.PackCollator`:
   BOV, ids in raster order, EOV; clips never attend to each other.
4. Prints the per-token loss on the held-out clips, in nats per video token (EOV targets
   excluded), next to H and to the held-out loss of the training unigram model. Exit code 0
   when the held-out loss is below H, 1 otherwise.

The output layer covers the `--max-vocab` most frequent training ids plus one "other" class;
an "other" id is scored as p(other) / (number of ids outside the list), so the reported loss is
the log-likelihood of a proper distribution over the tokenizer's full vocabulary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without install

from pipeline.loader import TokenDataset, TokenLoader, shard_ids  # noqa: E402
from pipeline.loader.sequences import SequenceSpec, document_causal_mask, pack_clips  # noqa: E402

ID_SPACE = 1 << 16  # token files store uint16 ids


# ---- model: x [B, L, D] throughout -------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, L, D]; mask: bool [B, 1, L, L], True where attention is allowed (None: causal)."""
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h e) -> three b h l e", three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)  # [B, h, L, D/h]
        x = x + self.proj(rearrange(attn, "b h l e -> b l (h e)"))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Token embedding + t/h/w position embeddings, causal blocks, head tied to the embedding.

    Cheap inductive biases let a tiny model learn within a CPU budget:
    - each position also sees the ids directly above and one latent frame before the token it
      predicts (`near`, from `clip_neighbours`: earlier in the clip, so causality holds, even
      beyond the row's attention window), through the shared token embedding and a map each;
    - a copy head adds a learned, position-dependent gain to those two ids' logits (a pointer to
      the neighbours), so "same as the previous frame" is learned in a few steps;
    - with `digits` (FSQ digits of every id, [vocab, n_levels]; the level count means none) an id's
      embedding also sums one embedding per digit, so ids with similar codes share what is learned.
    """

    def __init__(self, vocab: int, grid: tuple[int, int, int], dim: int, layers: int, heads: int,
                 digits: torch.Tensor | None = None):
        super().__init__()
        self.grid, self.vocab = grid, vocab
        self.tok = nn.Embedding(vocab, dim)
        self.digit_emb = nn.ModuleList()
        if digits is not None:
            self.register_buffer("digits", digits, persistent=False)  # [vocab, n_levels] int64
            self.digit_emb.extend(nn.Embedding(int(n) + 1, dim) for n in digits.max(0).values)
        self.above, self.before = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.copy = nn.Linear(dim, 2)  # logit gains for the (above, before) ids
        self.pos_t, self.pos_h, self.pos_w = (nn.Embedding(n, dim) for n in grid)
        self.special = nn.Embedding(2, dim)  # BOV / EOV positions
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.tok.weight, std=0.02)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [...] -> [..., D]: the id's own vector plus its FSQ digits' vectors."""
        x = self.tok(ids)
        for i, emb in enumerate(self.digit_emb):
            x = x + emb(self.digits[ids, i])
        return x

    def positions(self, position_ids: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """position_ids [B, L] (offset inside the clip: 0 = BOV, 1.. = ids, last = EOV) and coords
        [3, B, L] (each video token's t, h, w in its clip's grid, -1 elsewhere) -> [B, L, D].
        Coordinates past the largest training grid share its last embedding."""
        video = coords[0] >= 0
        t, h, w = (c.clamp(0, n - 1) for c, n in zip(coords, self.grid, strict=True))
        emb = self.pos_t(t) + self.pos_h(h) + self.pos_w(w)
        special = self.special((position_ids > 0).long())  # BOV -> 0, EOV -> 1 (only used where ~video)
        return torch.where(video.unsqueeze(-1), emb, special)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, document_ids: torch.Tensor,
                near: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """near: [2, B, L] ids above / one latent frame before the next token (-1: none); coords:
        [3, B, L] (see `positions`) -> logits [B, L, vocab]."""
        x = self.embed(input_ids) + self.positions(position_ids, coords)
        for ids, project in zip(near, (self.above, self.before), strict=True):
            x = x + project(self.embed(ids.clamp(min=0))) * (ids >= 0).unsqueeze(-1)
        mask = document_causal_mask(document_ids).unsqueeze(1)  # [B, 1, L, L]
        if bool((document_ids <= 0).all()):
            # at most one clip per row, padding only after it: plain causal attention gives the
            # same outputs on every real token and takes the fused kernel
            mask = None
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        table = self.embed(torch.arange(self.vocab, device=input_ids.device))  # [vocab, D], tied head
        logits = x @ table.T
        gains = self.copy(x)  # [B, L, 2]
        for k, ids in enumerate(near):
            gain = gains[..., k] * (ids >= 0)
            logits = logits.scatter_add(-1, ids.clamp(min=0).unsqueeze(-1), gain.unsqueeze(-1))
        return logits


# ---- data ----------------------------------------------------------------------------------
def clip_neighbours(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [t, h, w] -> [2, t*h*w + 2]: for each position of the clip's sequence (BOV, ids, EOV),
    the id directly above and the id one latent frame before the token at the next position, or -1
    (next is not a video token, or no such neighbour). Both lie earlier in raster order, so they are
    causal context even when a packed row does not reach back that far."""
    t, h, w = tokens.shape
    flat = tokens.reshape(-1)
    nxt = torch.arange(t * h * w + 2)  # position p's next token sits at p + 1: video index p
    is_video = nxt < t * h * w
    out = torch.full((2, t * h * w + 2), -1, dtype=torch.int64)
    for k, (distance, ok) in enumerate(((w, nxt // w % h > 0), (h * w, nxt >= h * w))):
        valid = is_video & ok
        out[k, valid] = flat[nxt[valid] - distance]
    return out


def clip_coords(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [t, h, w] -> [3, t*h*w + 2]: the (t, h, w) of the token at each position of the clip's
    sequence (BOV, ids, EOV); -1 at BOV and EOV. Clips of any grid can share a packed row."""
    t, h, w = tokens.shape
    out = torch.full((3, t * h * w + 2), -1, dtype=torch.int64)
    index = torch.arange(t * h * w)
    out[:, 1:-1] = torch.stack([index // (h * w), index // w % h, index % w])
    return out


def _lay_out(per_clip: list[torch.Tensor], rows: int, length: int) -> torch.Tensor:
    """Per-clip [k, n_i] tensors laid end to end like pack_clips' sequences, -1 after them: [k, rows, L]."""
    flat = torch.cat(per_clip, dim=1)
    padded = torch.full((flat.shape[0], rows * length), -1, dtype=torch.int64)
    padded[:, : flat.shape[1]] = flat
    return padded.view(-1, rows, length)


class CompactPack:
    """collate_fn: map ids to the compact vocabulary, pack (pipeline.loader.sequences.pack_clips), and lay
    out each clip's neighbour ids (`clip_neighbours`) and token coordinates (`clip_coords`) the same
    way, as batch["near"] [2, rows, L] and batch["coords"] [3, rows, L]."""

    def __init__(self, table: torch.Tensor, spec: SequenceSpec, seq_len: int):
        self.table, self.spec, self.seq_len = table, spec, seq_len

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        mapped = [{**it, "tokens": self.table[it["tokens"]]} for it in items]  # int64 gather, no float
        batch = pack_clips(mapped, self.spec, self.seq_len)
        rows, length = batch["input_ids"].shape
        batch["near"] = _lay_out([clip_neighbours(it["tokens"]) for it in mapped], rows, length)
        batch["coords"] = _lay_out([clip_coords(it["tokens"]) for it in mapped], rows, length)
        return batch


def id_counts(ds: TokenDataset) -> tuple[np.ndarray, tuple[int, int, int], int, int]:
    """Counts of every id over the dataset, the largest token grid (per axis), the number of clips
    and the length of the longest clip's sequence."""
    counts = np.zeros(ID_SPACE, dtype=np.int64)
    grid, clips, longest = (1, 1, 1), 0, 0
    for item in ds:
        counts += np.bincount(item["tokens"].reshape(-1).numpy(), minlength=ID_SPACE)
        shape = tuple(item["tokens"].shape)
        grid = (max(grid[0], shape[0]), max(grid[1], shape[1]), max(grid[2], shape[2]))
        longest = max(longest, int(np.prod(shape)) + 2)  # BOV + ids + EOV
        clips += 1
    return counts, grid, clips, longest


def entropy_nats(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def unigram_heldout_nats(train: np.ndarray, held: np.ndarray, vocab: int) -> float:
    """Held-out cross-entropy of the training unigram model, smoothed by one pseudo-token spread
    evenly over the vocabulary (so unseen ids get a small, nonzero probability)."""
    p = (train[:vocab] + 1.0 / vocab) / (train.sum() + 1.0)
    return float(-(held[:vocab] * np.log(p)).sum() / held.sum())


def compact_table(counts: np.ndarray, max_vocab: int) -> tuple[torch.Tensor, np.ndarray]:
    """(int64 [ID_SPACE] mapping the kept ids to 0..K-1 and all others to K, the kept ids [K]):
    the `max_vocab` most frequent training ids."""
    keep = np.argsort(-counts, kind="stable")[: min(max_vocab, int((counts > 0).sum()))]
    table = torch.full((ID_SPACE,), len(keep), dtype=torch.int64)
    table[torch.from_numpy(keep)] = torch.arange(len(keep))
    return table, keep


def fsq_digits(keep: np.ndarray, levels: list[int] | None, vocab: int) -> torch.Tensor | None:
    """[vocab, n_levels] FSQ digits of each compact id's original id (Cosmos: id = sum d_i * basis_i,
    basis = cumprod([1, l0, l1, ...])); rows past the kept ids ("other", BOV, EOV, PAD) get the
    level count, meaning none. None without levels (not an FSQ tokenizer)."""
    if not levels:
        return None
    lv = torch.tensor(levels, dtype=torch.int64)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0)
    digits = lv.repeat(vocab, 1)
    digits[: len(keep)] = torch.from_numpy(keep).unsqueeze(-1) // basis % lv
    return digits


# ---- training and evaluation ----------------------------------------------------------------
def train(model: TinyGPT, loader: TokenLoader, steps: int, lr: float, log_every: int) -> float:
    """AdamW with warmup + cosine decay for `steps` batches (epochs reshuffle); returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    )
    model.train()
    step, epoch, loss_value, start = 0, 0, float("nan"), time.time()
    while step < steps:
        loader.set_epoch(epoch)
        for batch in loader:
            logits = model(batch["input_ids"], batch["position_ids"], batch["document_ids"], batch["near"],
                           batch["coords"])
            loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())  # ignore_index -100
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, loss_value = step + 1, loss.item()
            if step % log_every == 0 or step == steps:
                print(f"step {step:5d}  epoch {epoch}  train loss {loss_value:.4f} nats  ({time.time() - start:.0f} s)")
            if step == steps:
                break
        epoch += 1
    return loss_value


@torch.no_grad()
def heldout_nats(model: TinyGPT, loader: TokenLoader, other: int, outside: int) -> tuple[float, int]:
    """Mean negative log-likelihood (nats) of the held-out video tokens under the full vocabulary."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        labels = batch["labels"]
        logp = model(batch["input_ids"], batch["position_ids"], batch["document_ids"], batch["near"],
                     batch["coords"]).log_softmax(-1)
        nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = nll + (labels == other) * math.log(max(outside, 1))  # spread p(other) over those ids
        video = (labels >= 0) & (labels <= other)  # video-token targets: not EOV, not ignored
        total += float(nll[video].sum())
        count += int(video.sum())
    return total / count, count


# ---- command line ----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "out" / "demo"),
                   help="output.uri of a tokenmill job (local path or s3://); default: the demo job's output")
    p.add_argument("--storage-options", default=None, help="fsspec options as JSON (e.g. endpoint_url)")
    p.add_argument("--holdout-shards", type=int, default=1, help="last N shards (by id) held out")
    p.add_argument("--vocab-size", type=int, default=64_000, help="tokenizer vocabulary (Cosmos FSQ: 64,000)")
    p.add_argument("--max-vocab", type=int, default=4096, help="output classes before 'other'")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--no-fsq-digits", dest="fsq_digits", action="store_false",
                   help="do not add FSQ digit embeddings (used when the token files name FSQ levels)")
    p.add_argument("--clips-per-step", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=0,
                   help="packed row length; 0 = about 1024, chosen so a clip fills whole rows")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for the training stream")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object at the end")
    return p.parse_args(argv)


def split_shards(uri: str, storage_options: dict[str, Any] | None, holdout: int) -> tuple[list[str], list[str]]:
    ids = shard_ids(uri, storage_options)
    if holdout < 1 or len(ids) <= holdout:
        raise SystemExit(f"{uri} has {len(ids)} finished shard(s); need more than --holdout-shards={holdout}")
    return ids[:-holdout], ids[-holdout:]


@dataclass
class Split:
    """Training and held-out shards of a job output, with their id counts."""

    uri: str
    storage_options: dict[str, Any] | None
    seed: int
    train_ids: list[str]
    held_ids: list[str]
    counts: np.ndarray = field(repr=False)  # int64 [ID_SPACE], training ids
    held_counts: np.ndarray = field(repr=False)
    grid: tuple[int, int, int]  # the largest token grid per axis, over training and held-out clips
    train_clips: int
    held_clips: int
    longest: int = 0  # the longest clip sequence (BOV + ids + EOV) in training
    levels: list[int] | None = None  # FSQ levels from the tokenizer config in the token files

    def dataset(self, held_out: bool, shuffle: bool) -> TokenDataset:
        return TokenDataset(self.uri, seed=self.seed, shuffle=shuffle, shuffle_buffer=64,
                            storage_options=self.storage_options,
                            shards=self.held_ids if held_out else self.train_ids)


def load_split(args: argparse.Namespace) -> Split:
    so = json.loads(args.storage_options) if args.storage_options else None
    train_ids, held_ids = split_shards(args.data, so, args.holdout_shards)
    split = Split(args.data, so, args.seed, train_ids, held_ids, np.zeros(0), np.zeros(0), (0, 0, 0), 0, 0)
    split.counts, grid, split.train_clips, split.longest = id_counts(split.dataset(held_out=False, shuffle=False))
    split.held_counts, held_grid, split.held_clips, _ = id_counts(split.dataset(held_out=True, shuffle=False))
    split.grid = (max(grid[0], held_grid[0]), max(grid[1], held_grid[1]), max(grid[2], held_grid[2]))
    config = split.dataset(held_out=False, shuffle=False).tokenizer_config or {}
    split.levels = config.get("levels") if config.get("discrete", True) else None
    largest = int(np.flatnonzero(split.counts + split.held_counts).max())
    if largest >= args.vocab_size:
        raise SystemExit(f"id {largest} is outside --vocab-size {args.vocab_size}")
    return split


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    split = load_split(args)
    entropy = entropy_nats(split.counts)
    unigram_held = unigram_heldout_nats(split.counts, split.held_counts, args.vocab_size)
    table, keep = compact_table(split.counts, args.max_vocab)
    known = len(keep)
    print(f"data: {args.data}: train {split.train_clips} clips from {len(split.train_ids)} shard(s), "
          f"held out {split.held_clips} clips from {', '.join(split.held_ids)}")
    print(f"largest token grid [t, h, w] = {list(split.grid)}; {int(split.counts.sum()):,} training tokens, "
          f"{int((split.counts > 0).sum()):,} distinct ids; output classes: {known} ids + other")
    print(f"unigram entropy of the training tokens: {entropy:.4f} nats/token ({entropy / math.log(2):.4f} bits)")

    spec = SequenceSpec(vocab_size=known + 1)  # compact ids 0..known-1, "other" = known
    clip_len = split.longest
    collate = CompactPack(table, spec, args.seq_len or math.ceil(clip_len / math.ceil(clip_len / 1024)))
    digits = fsq_digits(keep, split.levels, spec.total_vocab) if args.fsq_digits else None
    model = TinyGPT(spec.total_vocab, split.grid, args.dim, args.layers, args.heads, digits)
    loader = TokenLoader(split.dataset(held_out=False, shuffle=True), batch_size=args.clips_per_step,
                         num_workers=args.num_workers, collate_fn=collate)
    started = time.time()
    train(model, loader, args.steps, args.lr, args.log_every)
    seconds = time.time() - started
    held_loader = TokenLoader(split.dataset(held_out=True, shuffle=False), batch_size=1, collate_fn=collate)
    held, held_tokens = heldout_nats(model, held_loader, other=known, outside=args.vocab_size - known)
    print(f"held-out per-token loss: {held:.4f} nats/token ({held / math.log(2):.4f} bits) over "
          f"{held_tokens:,} tokens; training-unigram model on held-out: {unigram_held:.4f} nats/token")
    below = held < entropy
    print(f"held-out loss {'<' if below else '>='} unigram entropy ({held:.4f} vs {entropy:.4f} nats/token); "
          f"trained {args.steps} steps in {seconds:.0f} s")
    if args.json:
        print(json.dumps({"unigram_entropy_nats": entropy, "heldout_loss_nats": held,
                          "unigram_heldout_nats": unigram_held, "train_clips": split.train_clips,
                          "heldout_clips": split.held_clips, "heldout_tokens": held_tokens,
                          "steps": args.steps, "train_seconds": seconds}))
    return 0 if below else 1


if __name__ == "__main__":
    raise SystemExit(main())
