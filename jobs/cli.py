"""The `tokenmill` command line.

Only argparse and the standard library are imported at start-up: each subcommand names the
module and function that implements it, imported when the subcommand runs, so `--help` is
instant and works without a GPU, Ray or torch being importable.

Exit codes (docs/interface.md): 0 success; 1 the work ran but some of it failed permanently;
2 bad usage or an invalid spec (one message naming the field, nothing written).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

# subcommand -> "module:function"; the function takes the parsed args and returns an exit code
HANDLERS = {
    "run": "jobs.runner:cli_run",
    "submit": "jobs.submit:cli_submit",
    "status": "jobs.status:cli_status",
    "make-shards": "pipeline.readers.make_shards:cli_make_shards",
    "preview": "pipeline.tokenizer_tools.preview:cli_preview",
    "eval": "pipeline.tokenizer_tools.evaluate:cli_eval",
    "train-tokenizer": "pipeline.tokenizer_tools.train_tokenizer:cli_train",
    "ls": "pipeline.loader.listing:cli_ls",
    "spec-schema": "jobs.cli:cli_spec_schema",
}
# commands that read a spec or config file: their SpecErrors are "invalid spec"; every other
# command's are plain usage errors ("error: ...", e.g. an OUTPUT without job.json)
SPEC_COMMANDS = {"run", "submit", "train-tokenizer"}


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has a real one (not for flags, lists or a None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS) and not action.required
        if shown and action.option_strings and "%(default)" not in text:
            default = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            text += f" (default: {default})"
        return text


def _parser(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its description and its options' defaults."""
    return sub.add_parser(name, help=summary, description=description, formatter_class=_DefaultsFormatter)


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a field of the file by dotted path, e.g. {example}; VALUE is read "
                        "as YAML (repeatable)")


def _add_storage_option(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                   metavar="KEY=VALUE", help=text)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "run", "run a job to completion (resumes if run again)",
                "Run a job on an embedded local Ray (default) or the Ray cluster at --address / "
                "RAY_ADDRESS. Running the same command again resumes: finished shards are skipped. "
                "The job spec format is in docs/interface.md; examples/demo.yaml is a complete job.")
    p.add_argument("spec", metavar="JOB.yaml", help="job spec file")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else embedded)")
    _add_set(p, "output.uri=/tmp/x")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "submit", "submit a job to a Ray cluster through the Ray Jobs API",
                "Submit JOB.yaml through the Ray Jobs API (the project folder is uploaded as the "
                "job's working directory); prints the job id. Follow it with `tokenmill status OUTPUT`.")
    p.add_argument("spec", metavar="JOB.yaml", help="job spec file, inside this project folder")
    p.add_argument("--address", required=False, default=None,
                   help="Ray dashboard address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    _add_set(p, "output.uri=s3://bucket/out")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish and print its logs")


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "status", "progress and totals of a job, read from its output location",
                "Progress, totals, failures and the running/finished state of the job writing to "
                "OUTPUT, read from the output location alone (works while it runs, after it ends, "
                "and from any machine that can read OUTPUT).")
    p.add_argument("output", metavar="OUTPUT", help="the job's output.uri (local path or s3://...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_storage_option(p, "fsspec storage option, e.g. endpoint_url=http://... (repeatable)")


def _add_make_shards(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "make-shards", "pack video files and sidecars into WebDataset shards",
                "Pack video files into WebDataset tar shards PREFIX-000000.tar, PREFIX-000001.tar, ... "
                "Sidecars beside a video with the same stem (NAME.json, NAME.txt) travel with it; a "
                ".json sidecar ends up in the token rows' `meta` column.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (searched recursively) or globs")
    p.add_argument("--output", required=True, metavar="PREFIX", help="shards are PREFIX-000000.tar, ...")
    p.add_argument("--max-count", type=int, default=100, metavar="N", help="samples per shard")
    p.add_argument("--max-size-mb", type=float, default=1024.0, metavar="M", help="MB per shard")


def _add_preview(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "preview", "decode one clip's tokens back to pixels (PNG + MP4)",
                "Decode one clip's tokens back to pixels: DIR/KEY-compare.png (original frames above "
                "the reconstruction) and DIR/KEY.mp4. `tokenmill ls OUTPUT` lists the keys.")
    p.add_argument("output", metavar="OUTPUT", help="the job's output.uri")
    p.add_argument("--key", required=True,
                   help="clip key (the `key` column; `tokenmill ls OUTPUT` lists them), or a unique prefix of one")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for KEY-compare.png and KEY.mp4")
    p.add_argument("--frames", type=int, default=6, help="frames shown in the PNG")
    _add_storage_option(p, "fsspec option for the output and source shards (repeatable)")


def _add_ls(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "ls", "list the clips of a job output (keys, token shapes, sources)",
                "List every clip of the finished shards of OUTPUT: its key (what `preview --key` "
                "takes), token grid t x h x w, clip size, first frame and source shard.")
    p.add_argument("output", metavar="OUTPUT", help="the job's output.uri")
    p.add_argument("--json", action="store_true", help="one JSON object per clip")
    _add_storage_option(p, "fsspec option for the output (repeatable)")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "eval", "reconstruction PSNR/SSIM of a tokenizer vs the same-grid baseline",
                "Encode and decode every clip of the given shards and report PSNR and SSIM per clip and "
                "on average, for the tokenizer and for the same-grid baseline (the clip averaged down to "
                "the token grid and upsampled back). Use shards the tokenizer was not trained on.")
    p.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="preset or bundled name, tokenmill checkpoint, or folder of official .jit files")
    p.add_argument("--shards", required=True, nargs="+", metavar="URLS", help="WebDataset shards")
    p.add_argument("--num-frames", type=int, default=17, metavar="N", help="frames per clip (1 + k * t)")
    p.add_argument("--resolution", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                   help="clip size after resize and centre crop")
    p.add_argument("--max-clips", type=int, default=None, help="stop after this many clips")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="refine each latent frame with N steps against the decoder, as tokenizer.refine_steps")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "train-tokenizer", "train or fine-tune a tokenizer; resumable",
                "Train or fine-tune a tokenizer on WebDataset video shards; running it again resumes "
                "from the last checkpoint in output_dir. The config format is in docs/training.md "
                "(fields: schemas/training.py); examples/train_bundled.yaml is a complete config.")
    p.add_argument("config", metavar="CONFIG.yaml", help="training config file")
    _add_set(p, "optim.steps=100")


def _add_spec_schema(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "spec-schema", "print the JSON Schema of the job spec (for editors)",
                "Print the JSON Schema of the job spec, e.g. `tokenmill spec-schema > "
                "tokenmill-job.schema.json`; editors then complete and check job YAML (README, 'Using it').")
    p.add_argument("--training", action="store_true", help="the training config's schema instead")


def cli_spec_schema(args: argparse.Namespace) -> int:
    import json

    from schemas.config import json_schema
    from schemas.jobspec import JobSpec
    from schemas.training import TrainConfig

    schema = json_schema(TrainConfig, "tokenmill training config") if args.training else json_schema(
        JobSpec, "tokenmill job spec")
    print(json.dumps(schema, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description="Distributed pre-tokenization of video corpora with a Cosmos-style causal tokenizer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_run, _add_submit, _add_status, _add_ls, _add_make_shards, _add_preview, _add_eval,
                _add_train, _add_spec_schema):
        add(sub)
    return parser


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    module, func = HANDLERS[command].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for http_library in ("httpx", "httpx2", "httpcore", "httpcore2"):
        # one line per Hub request (the Hub client's HTTP library), even with --verbose
        logging.getLogger(http_library).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from schemas.config import SpecError

    try:
        return int(_handler(args.command)(args) or 0)
    except SpecError as exc:
        label = "invalid spec" if args.command in SPEC_COMMANDS else "error"
        print(f"tokenmill {args.command}: {label}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokenmill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
