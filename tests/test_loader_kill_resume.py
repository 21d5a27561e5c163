"""A training process reading with 2 DataLoader workers is SIGKILLed mid-epoch and restarted from
its last saved loader state: the clips it sees in total equal an uninterrupted run's, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.loader import TokenDataset, TokenLoader
from tests.loader_support import write_output

ROOT = Path(__file__).resolve().parents[1]

# the "trainer": after each batch it appends one line holding the batch's keys and the state
# taken after it (a checkpoint), then pretends to train for a moment
TRAINER = """
import json, sys, time
from pipeline.loader import TokenDataset, TokenLoader
uri, log_path = sys.argv[1], sys.argv[2]
loader = TokenLoader(TokenDataset(uri, seed=3, shuffle_buffer=4), batch_size=2, num_workers=2, collate_fn=list)
state = None
with open(log_path) as f:
    for line in f:
        try:
            state = json.loads(line)["state"]
        except ValueError:  # a line cut by the kill
            pass
if state is not None:
    loader.load_state_dict(state)
with open(log_path, "a") as log:
    for batch in loader:
        log.write(json.dumps({"keys": [it["key"] for it in batch], "state": loader.state_dict()}) + "\\n")
        log.flush()
        time.sleep(0.3)
"""


def run_trainer(uri: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", TRAINER, uri, str(log)], env=env, cwd=ROOT)


def logged(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return lines


def test_sigkill_mid_epoch_then_restart_sees_the_uninterrupted_sequence(tmp_path):
    """Kill after a few batches (workers alive, buffers full), restart: same clips, same order."""
    write_output(tmp_path / "out", [5, 7, 2, 6])
    uri = str(tmp_path / "out")
    full = [it["key"] for b in TokenLoader(TokenDataset(uri, seed=3, shuffle_buffer=4), 2, 2, list) for it in b]
    log = tmp_path / "trainer.jsonl"
    log.touch()
    proc = run_trainer(uri, log)
    deadline = time.monotonic() + 120
    while len(logged(log)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = len(logged(log))
    assert 3 <= before < len(full) // 2, "the kill should land mid-epoch"
    restarted = run_trainer(uri, log)
    assert restarted.wait(timeout=180) == 0
    seen = [key for line in logged(log) for key in line["keys"]]
    assert seen == full
