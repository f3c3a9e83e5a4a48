"""`pulse.threads`: torch's CPU threads follow the free CPUs, and an explicit choice always wins.

Fed with made-up /proc/stat samples, so nothing here depends on this machine's CPUs, its load or
the wall clock.
"""

from __future__ import annotations

import pytest
import torch

from pulse import threads
from pulse.errors import PulseError

CPUS = ["cpu0", "cpu1"]


def stat(*cpus: tuple[int, int]) -> str:
    """/proc/stat text with one line per CPU of (busy, idle) jiffies (busy as user time)."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cpus)]
    return "\n".join([*lines, "intr 1 2 3", "procs_running 3"]) + "\n"


def at(wall: float, own: float, *cpus: tuple[int, int]) -> threads.Sample:
    return threads.Sample(threads.parse_stat(stat(*cpus)), own_s=own, wall_s=wall)


QUIET = [at(0, 0, (0, 0), (0, 0)), at(1, 0, (2, 98), (1, 99))]  # both CPUs idle
ONE_BUSY = [at(0, 0, (0, 0), (0, 0)), at(1, 0, (2, 98), (100, 0))]  # another process holds cpu1
ALL_BUSY = [at(0, 0, (0, 0), (0, 0)), at(1, 0, (100, 0), (100, 0))]


@pytest.fixture
def policy(monkeypatch):
    """A fresh policy on two CPUs whose samples come from the list `feed`; torch's threads restored after."""
    before = torch.get_num_threads()
    for name in ("PULSE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    feed: list[threads.Sample] = []
    monkeypatch.setattr(threads, "sample", lambda stat="/proc/stat": feed.pop(0) if feed else None)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: CPUS)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    threads.reset()
    yield feed
    threads.reset()
    torch.set_num_threads(before)


def due() -> None:
    """Make the next tick a re-check, whatever the clock says."""
    threads._policy.due = 0.0
    threads.tick()


def test_free_cpus_count_idle_time_and_this_process_own_use():
    assert threads.parse_stat(stat((5, 7), (1, 2))) == {"cpu0": (7, 12), "cpu1": (2, 3)}
    assert threads.free_cpus(*QUIET, CPUS) == pytest.approx(1.97)
    assert threads.free_cpus(*ONE_BUSY, CPUS) == pytest.approx(0.98)
    # this process itself kept cpu0 busy: its own CPU time counts as free to it
    mine = [at(0, 0.0, (0, 0), (0, 0)), at(2, 1.9, (200, 0), (200, 0))]
    assert threads.free_cpus(*mine, CPUS) == pytest.approx(0.95)
    # a CPU outside the affinity set is not counted, even when idle
    assert threads.free_cpus(*QUIET, ["cpu0"]) == pytest.approx(0.98)


@pytest.mark.parametrize("free, allowed, expected",
                         [(0.0, 2, 1), (0.98, 2, 1), (1.74, 2, 1), (1.75, 2, 2), (1.97, 2, 2), (12.3, 4, 4)])
def test_choose_rounds_down_unless_three_quarters_of_a_cpu_is_free(free, allowed, expected):
    assert threads.choose(free, allowed) == expected


def test_the_setting_from_the_environment():
    assert threads.setting({}) == "auto" and threads.setting({"PULSE_THREADS": "auto"}) == "auto"
    assert threads.setting({"PULSE_THREADS": "3"}) == 3
    assert threads.setting({"PULSE_THREADS": "off"}) == "off" == threads.setting({"PULSE_THREADS": "0"})
    assert threads.setting({"OMP_NUM_THREADS": "2"}) == "env" == threads.setting({"MKL_NUM_THREADS": "1"})
    assert threads.setting({"PULSE_THREADS": "1", "OMP_NUM_THREADS": "2"}) == 1
    with pytest.raises(PulseError, match="PULSE_THREADS='many': use auto"):
        threads.setting({"PULSE_THREADS": "many"})


def test_threads_follow_the_free_cpus_and_are_rechecked(policy):
    policy.extend([ONE_BUSY[0], ONE_BUSY[1]])
    assert threads.adapt(wait=0.1) == 1 and threads.chosen() == "free CPUs"
    threads.tick()  # not due yet: no sample is taken
    assert torch.get_num_threads() == 1 and not policy
    policy.append(at(2, 1.0, (102, 198), (100, 100)))  # the other process ended: cpu1 idle since
    due()
    assert torch.get_num_threads() == 2
    policy.append(at(3, 3.0, (202, 198), (200, 100)))  # this process alone kept both busy: still free to it
    due()
    assert torch.get_num_threads() == 2
    policy.append(at(4, 4.3, (302, 198), (300, 100)))  # a competitor takes its share: 1.3 of 2 cores are ours
    due()
    assert torch.get_num_threads() == 1


def test_the_first_choice_waits_for_a_tick_when_not_sampled_at_start(policy):
    policy.extend([ALL_BUSY[0]])
    start = torch.get_num_threads()
    threads.adapt()  # the `pulse` command: no waiting at start
    assert torch.get_num_threads() == start
    policy.append(ALL_BUSY[1])
    due()
    assert torch.get_num_threads() == 1


def test_an_explicit_choice_always_wins(policy, monkeypatch):
    monkeypatch.setenv("PULSE_THREADS", "1")
    policy.extend(QUIET * 3)
    assert threads.adapt(wait=0.1) == 1 and threads.chosen() == "PULSE_THREADS"
    due()
    assert torch.get_num_threads() == 1 and len(policy) == 6  # never sampled
    # OMP_NUM_THREADS: torch obeys it already; PULSE leaves the count alone
    monkeypatch.delenv("PULSE_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads.reset()
    torch.set_num_threads(2)
    assert threads.adapt(wait=0.1) == 2 and threads.chosen() == "OMP_NUM_THREADS"
    monkeypatch.delenv("OMP_NUM_THREADS")
    # a recipe's train.threads (or --threads): set and held
    threads.reset()
    threads.adapt(wait=0.1)
    threads.use(1)
    policy[:] = ALL_BUSY[1:] + QUIET
    due()
    assert torch.get_num_threads() == 1 and threads.chosen() == "train.threads"
    # torch.set_num_threads after PULSE chose: seen at the next check, and theirs from then on
    threads.reset()
    policy[:] = ONE_BUSY
    threads.adapt(wait=0.1)
    torch.set_num_threads(2)
    policy[:] = ONE_BUSY
    due()
    assert torch.get_num_threads() == 2 and threads.chosen() == "torch.set_num_threads"
    with pytest.raises(PulseError, match="≥ 1"):
        threads.use(0)


def test_off_and_no_proc_stat_leave_torch_alone(policy, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setenv("PULSE_THREADS", "off")
    assert threads.adapt(wait=0.1) == 2
    monkeypatch.delenv("PULSE_THREADS")
    threads.reset()
    assert threads.adapt(wait=0.1) == 2 and threads.chosen() == "torch's default"  # the feed is empty: no /proc
    assert threads.sample("/nonexistent/stat") is None


def test_a_bad_pulse_threads_is_one_line_and_exit_2_at_the_command_start():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PULSE_THREADS": "many"}
    done = subprocess.run([sys.executable, "-m", "pulse", "list"], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: PULSE_THREADS='many': use auto (threads from the free CPUs, the default), off (torch's own "
        "default) or a number of threads ≥ 1."
    ]
