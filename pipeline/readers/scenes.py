"""Shot cuts, found while a video is decoded: PySceneDetect's content detector, one frame at a time.

    ShotCuts(threshold).is_cut(frame uint8 [h, w, 3] RGB) -> bool   (True: frame starts a new shot)

The detector scores each frame against the previous one by the mean change of hue, saturation
and luma (HSV, 0..255), and calls a cut where the score reaches `threshold` (PySceneDetect's
default 27) and at least MIN_SHOT_FRAMES frames have passed since the last cut (suppress mode:
a cut is known at the frame where it happens, so clips are cut in the same pass; a shot shorter
than that is not split from the next one, whose start is then no cut). PySceneDetect's own
minimum is 15 frames; 8 misses fewer real cuts of short shots, and a false cut only costs clips. Frames are scored at a low resolution: every k-th pixel of the
frame as scaled for the clips, so that the long side is at most DETECT_LONG_SIDE (PySceneDetect
itself downscales to about 256 px wide).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SHOT_FRAMES = 8
DETECT_LONG_SIDE = 320


class ShotCuts:
    """Online shot-cut detection on consecutive frames of one video (on the sampled timeline)."""

    def __init__(self, threshold: float = 27.0):
        from scenedetect.detectors import ContentDetector
        from scenedetect.detectors.content_detector import FlashFilter

        self._detector: Any = ContentDetector(threshold=threshold, min_scene_len=MIN_SHOT_FRAMES,
                                              filter_mode=FlashFilter.Mode.SUPPRESS)
        self._index = 0
        self.cuts: list[int] = []  # indices (in calls) of frames that start a new shot

    def is_cut(self, frame: np.ndarray) -> bool:
        from scenedetect import FrameTimecode

        step = max(1, -(-max(frame.shape[0], frame.shape[1]) // DETECT_LONG_SIDE))
        small = np.ascontiguousarray(frame[::step, ::step, ::-1])  # RGB -> BGR, what OpenCV expects
        found = self._detector.process_frame(FrameTimecode(self._index, fps=25.0), small)
        cut = bool(found) and self._index > 0
        if cut:
            self.cuts.append(self._index)
        self._index += 1
        return cut
