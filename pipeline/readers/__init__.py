"""Reading input: shard URLs (`sources`), tar streaming into samples (`tar_stream`), decoding
(`decode`) in a crash-isolated child (`isolation`), clip cutting (`clips`), the composed
per-shard stage (`stages`), and packing videos into shards (`make_shards`)."""
