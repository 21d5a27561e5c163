"""Writing output: the output location's filesystem (`storage`), token and error files
(`token_files`), the per-shard commit protocol (`commit`), the manifest, resume planning and
job.json (`manifest`), the job fingerprint (`fingerprint`) and summary.json (`summary`)."""
