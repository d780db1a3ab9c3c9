"""The one step loop of both front ends (``decomp run`` and :class:`decomp.torch.Trainer`):
steps, the collective divergence check, logging, checkpoints and the stop vote."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decomp.runner.lifecycle import Interrupted, RunControl
from decomp.runner.session import Session


def drive(session: Session, steps: int, *, log_every: int | None, on_log: Callable[[int], None],
          check_every: int | None = None, who: str = "",
          before_step: Callable[[int], None] | None = None,
          after_step: Callable[[int], None] | None = None, bar: Any = None,
          control: RunControl | None = None, checkpoint_every: int | None = None,
          on_checkpoint: Callable[[int], None] | None = None) -> None:
    """Take ``steps`` more steps of ``session``.

    At every ``log_every``-th step (counted from the run's start; None: none) and at the last
    one: the collective divergence check
    (:meth:`Session.check_divergence`), then ``on_log(t)``; in between, the check alone every
    ``check_every`` steps (default: only at log steps). ``before_step(t)`` runs before step t
    (fault injection), ``after_step(t)`` right after it (the torch API's loss tally); ``bar``
    (tqdm) advances once per step. ``on_checkpoint(t)`` runs after every
    ``checkpoint_every``-th step (after the log). ``control`` (collective, every step): the
    watchdog's heartbeat and the stop vote; when it says stop, :class:`Interrupted` is raised
    on every rank after the same step t (after that step's log and checkpoint, if due).
    """
    start = session.steps_done
    end = start + steps
    if control is not None:  # until a step completes, a signal is the backstop's (compiling)
        control.flag.stepping = False
    for t in range(start + 1, end + 1):
        if control is not None:
            control.enter_step(t)  # the watchdog's watched call: the whole iteration
        if before_step is not None:
            before_step(t)
        session.step()
        if after_step is not None:
            after_step(t)
        if bar is not None:
            bar.update(1)
        at_log = t == end or bool(log_every and t % log_every == 0)
        if at_log or (check_every and t % check_every == 0):
            session.check_divergence(who or session.algorithm.name, t)
        signum = control.after_step(t) if control is not None else 0
        if at_log:
            on_log(t)
        if checkpoint_every and on_checkpoint is not None and t % checkpoint_every == 0:
            on_checkpoint(t)
        if control is not None:
            control.leave_step()
        if signum:
            raise Interrupted(signum, t)
