"""tokenizer_core."""
