"""Where work runs: the CLI, Ray placement of tokenizer actors and shard tasks, retries, progress."""
