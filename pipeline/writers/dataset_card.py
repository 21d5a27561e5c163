"""The output folder as a dataset: a generated dataset card (`README.md`) at the output root.

Hugging Face `datasets.load_dataset(OUTPUT)` reads every data file it finds under a folder unless
a card's YAML `configs` say which: pointing `data_files` at `tokens/*` makes it yield exactly the
token rows (dead-letter rows in `errors/` are another table), and the same card makes an upload of
the folder to the Hub a proper dataset with its tokenizer, fingerprint and counts on the page.
Rewritten whole at the end of every run from summary.json's totals.
"""

from __future__ import annotations

from typing import Any

from pipeline.writers import storage

CARD_FILE = "README.md"
_GLOB = {"parquet": "tokens/*.parquet", "webdataset": "tokens/*.tar"}


def render_card(name: str, fmt: str, fingerprint: dict[str, Any], summary: dict[str, Any]) -> str:
    """The card's text: YAML front matter for the `datasets` library, then a short description."""
    tokenizer = fingerprint.get("tokenizer.name", "?")
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {_GLOB[fmt]}",
        "tags:",
        "- tokenmill",
        "- video-tokens",
        "---",
        f"# {name}: video tokens",
        "",
        f"Written by tokenmill with tokenizer `{tokenizer}`. One row per clip; discrete ids are",
        "`tokens` (uint16, reshape by `token_shape` = [t, h, w]), continuous latents are `latents`",
        "with `latent_shape` and `latent_dtype`. Only files named by `_manifest/` records are part of",
        "the dataset; `errors/` holds the samples that could not be tokenized, with their reasons.",
        "",
        "| | |",
        "|---|---|",
        f"| tokenizer | `{tokenizer}` |",
        f"| weights hash | `{fingerprint.get('tokenizer.weights_hash', '?')}` |",
        f"| job fingerprint | `{fingerprint.get('digest', '?')}` |",
        f"| shards done / total | {summary.get('shards_done', 0)} / {summary.get('shards_total', 0)} |",
        f"| clips | {summary.get('clips_written', 0)} |",
        f"| tokens | {summary.get('tokens_written', 0)} |",
        f"| samples failed | {summary.get('samples_failed', 0)} |",
    ]
    quality = summary.get("quality")
    if quality:  # quality.sample_rate: the tokenizer's round trip on this footage
        lines.append(f"| sampled PSNR (mean / p5) | {quality['psnr_mean']:.2f} / {quality['psnr_p5']:.2f} dB "
                     f"over {quality['clips']} clips |")
        lines.append(f"| sampled SSIM (mean / p5) | {quality['ssim_mean']:.4f} / {quality['ssim_p5']:.4f} |")
    lines.append("")
    return "\n".join(lines)


def write_card(output_uri: str, storage_options: dict[str, Any] | None, name: str, fmt: str,
               summary: dict[str, Any]) -> None:
    """Write README.md at the output root (the fingerprint comes from job.json)."""
    from pipeline.writers.manifest import read_job_file

    job = read_job_file(output_uri, storage_options)
    fingerprint = job.fingerprint if job else {}
    fs, root = storage.get_fs(output_uri, storage_options)
    storage.put_bytes(fs, storage.join(root, CARD_FILE), render_card(name, fmt, fingerprint, summary).encode())
