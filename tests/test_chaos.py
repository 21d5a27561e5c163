"""A small seeded chaos scenario (bench/chaos.py): a shard task SIGKILLed, a stream cut, a
second driver, a token file truncated between runs; the output must equal a clean run's."""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = pytest.mark.slow


def test_a_seeded_chaos_scenario_ends_exact(capsys):
    code = chaos.main(["--scenarios", "1", "--seed", "3", "--local", "--shards", "4",
                       "--kinds", "kill_shard_task,stream_cut,second_driver,truncate_file"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| **clips lost / doubled** | 0 / 0 |" in out
    for kind in ("kill_shard_task", "stream_cut", "second_driver", "truncate_file"):
        assert f"| {kind} | 1 |" in out, out  # every fault was really injected
