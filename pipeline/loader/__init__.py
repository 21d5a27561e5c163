"""Reading tokens for training: the resumable, rank-aware dataset over a job's output
(`dataset`), which shard files a rank reads and in what order (`plan`), rows out of Parquet and
tar token files (`rows`), and autoregressive sequences and packing on top (`sequences`)."""

from pipeline.loader.dataset import IncompatibleStateError, TokenDataset, TokenLoader, shard_ids

__all__ = ["IncompatibleStateError", "TokenDataset", "TokenLoader", "shard_ids"]
