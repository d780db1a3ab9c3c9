"""A run resumed from any step count continues at the next step: drive() on a session that
has taken an odd number of steps (7) takes steps 8, 9, 10 — each once, none repeated, the
step number the callbacks see being the session's own (decomp/runner/drive.py; the schedule of
checks, logs and checkpoints: test_step_loop_schedule.py, which resumes from even counts)."""

from __future__ import annotations

from tests.unit.test_step_loop_schedule import _at, _run


def test_a_run_resumed_after_an_odd_step_count_continues_at_the_next_step() -> None:
    events, bar = _run(7, 3, log_every=None)
    assert _at(events, "before") == _at(events, "step") == _at(events, "after") == [8, 9, 10]
    assert bar.n == 3 and _at(events, "log") == [10]
