"""Guards on :class:`decomp.torch.DistributedOptimizer`'s collective calls: the watchdog in the
user's own loop, the collective check (``DECOMP_COLLECTIVE_CHECK=1``) and a first Ctrl-C that
ends a job blocked in a collective.

Every collective method of the optimizer (``step``, ``synchronize``, ``averaged``,
``traffic``, ``check_divergence``, ``clip_grad_norm_``) runs inside :meth:`CallGuard.call`
(the :func:`guarded` decorator), which

- tells the :class:`~decomp.comm.watchdog.Watchdog` (``comm_timeout`` seconds; None: off)
  which call this rank is in: a rank that does not reach a call the others are in (``if rank
  == 0: with opt.averaged(): ...``, one extra batch on one rank) ends the job with exit code
  124 and a message naming every rank's call and step, within ``comm_timeout`` (at once when
  the other ranks have already finished); the first completed call marks this rank ready (the
  first call may compile kernels: until every rank is ready, only the start-up limit
  ``DECOMP_START_TIMEOUT_S`` applies);
- with ``DECOMP_COLLECTIVE_CHECK=1`` (as ``TORCH_DISTRIBUTED_DEBUG=DETAIL``), and always for
  ``averaged()``, first all-gathers (operation, step, size) on a private communicator and
  raises the same :class:`~decomp.errors.UsageError` on every rank if they differ, naming the
  first rank that is not in the call most ranks are in (one small all-gather per call);
- at exit tells the peers this rank has finished (:meth:`Watchdog.finish`).

Ctrl-C: mpiexec forwards SIGINT to every rank, but Python runs its handler (the
``KeyboardInterrupt``) only between bytecodes, never while the main thread is blocked inside an
MPI call, so a job hung in a collective ignored the first Ctrl-C. The guard sets a wake-up fd
(:func:`signal.set_wakeup_fd`, written by the C-level handler even then) read by a daemon
thread: if the signal finds this rank inside a guarded call that has not returned
``SIGINT_GRACE_S`` = 3 s later, the thread prints the call and ends this rank with 130 (128 +
SIGINT; mpiexec then ends the job, 130 when every rank got the signal). Elsewhere the
``KeyboardInterrupt`` is raised as usual, and :func:`~decomp.runner.lifecycle.abort_on_error`
ends the job with 130 too.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from decomp.errors import ConfigError, UsageError

#: the environment variable of the collective check (any value but "", "0": on)
COLLECTIVE_CHECK = "DECOMP_COLLECTIVE_CHECK"
#: the default ``comm_timeout``: the same as ``decomp run``'s ``run.comm_timeout_s``
DEFAULT_COMM_TIMEOUT_S = 300.0
_NAME = 32
#: how long a rank may stay in the call a SIGINT found it in before it leaves: a step that
#: completes by then goes on to the handler (a stop vote of the user's loop saves first)
SIGINT_GRACE_S = 3.0


def check_enabled(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(COLLECTIVE_CHECK, "")
    return value.strip() not in ("", "0")


def _encode(name: str, step: int, size: int) -> np.ndarray:
    head = np.array([step, size], dtype=np.int64)
    return np.concatenate([head, np.frombuffer(name.encode()[:_NAME].ljust(_NAME, b"\0"),
                                               dtype=np.int64)])


def _decode(row: np.ndarray) -> tuple[str, int, int]:
    return row[2:].tobytes().rstrip(b"\0").decode(errors="replace"), int(row[0]), int(row[1])


def mismatch(calls: list[tuple[str, int, int]]) -> str:
    """The report of the collective check ("" when every rank is in the same call): the call
    most ranks are in (a tie: the lowest rank's) and the first rank, by rank, not in it."""
    groups: dict[tuple[str, int, int], list[int]] = {}
    for r, c in enumerate(calls):
        groups.setdefault(c, []).append(r)
    if len(groups) == 1:
        return ""
    common = max(groups, key=lambda c: (len(groups[c]), -groups[c][0]))
    first = next(r for r, c in enumerate(calls) if c != common)

    def say(c: tuple[str, int, int]) -> str:
        return f"{c[0]} after step {c[1]} with model size {c[2]}"

    def who(rs: list[int]) -> str:
        return f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}"

    table = "; ".join(f"{who(rs)}: {say(c)}" for c, rs in groups.items())
    return (f"collective check ({COLLECTIVE_CHECK}=1): the ranks are not in the same call. "
            f"First mismatch: rank {first} is in {say(calls[first])} while {who(groups[common])}"
            f" {'are' if len(groups[common]) > 1 else 'is'} in {say(common)} (all: {table}). "
            f"Every rank must make the same collective calls in the same order with the same "
            f"model (e.g. `with opt.averaged():` on every rank, not only on rank 0; the same "
            f"number of batches on every rank)")


class CallGuard:
    """The guards of one optimizer on ``comm`` (``size``: the model's d, checked too)."""

    def __init__(self, comm: Any, comm_timeout: float | None, size: int) -> None:
        from decomp.comm.watchdog import Watchdog
        from decomp.launch import start_timeout

        if comm_timeout is not None and not (isinstance(comm_timeout, (int, float))
                                             and 0 < comm_timeout < float("inf")):
            raise ConfigError(f"comm_timeout must be a positive number of seconds (None: no "
                              f"watchdog), got {comm_timeout!r}")
        self.size = int(size)
        self.rank = comm.Get_rank()
        self.many = comm.Get_size() > 1
        self.check = check_enabled()
        self.comm = comm.Dup() if self.many else None  # the collective check's own channel
        self.call: str | None = None
        self.calls = 0
        self.depth = 0
        self.watchdog = (Watchdog(comm, comm_timeout, setting="comm_timeout",
                                  startup_s=start_timeout() or None)
                         if comm_timeout is not None and self.many else None)
        if self.watchdog is not None:
            self.watchdog.start()
            atexit.register(self.watchdog.finish)
        if self.many:
            _SigintWatch.install(self)

    def finish(self) -> None:
        """Not collective (the optimizer was dropped): stop the watchdog's thread and tell the
        peers this rank is done with this optimizer. Its communicators stay (freeing one is
        collective: :meth:`close`)."""
        wd = self.watchdog
        if wd is None:
            return
        atexit.unregister(wd.finish)
        if threading.current_thread() is getattr(wd, "_thread", None):
            wd._stop.set()  # a collection inside the watchdog's own thread: it ends by itself
            return
        wd.finish()

    def close(self) -> None:
        """Collective: stop the watchdog and free both duplicate communicators; the
        optimizer's calls are unguarded afterwards."""
        wd, self.watchdog = self.watchdog, None
        if wd is not None:
            atexit.unregister(wd.finish)
            wd.close()
        if self.comm is not None:
            self.comm.Free()
            self.comm = None

    @contextlib.contextmanager
    def call_of(self, name: str, owner: Any, check: bool = False) -> Iterator[None]:
        """Bracket the collective ``name`` of ``owner`` (its ``steps``: steps done; nested
        calls count as their outermost one)."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        self.depth, self.call = 1, name
        wd = self.watchdog
        if wd is not None:
            wd.enter(name)
        try:
            if self.comm is not None and (check or self.check):
                self._check(name, owner.steps)
            yield
        finally:
            self.depth, self.call = 0, None
            self.calls += 1
            if wd is not None:
                wd.beat(owner.steps)
                wd.leave()
                wd.ready()

    def _check(self, name: str, step: int) -> None:
        mine = _encode(name, step, self.size)
        rows = np.empty((self.comm.Get_size(), mine.size), dtype=np.int64)
        self.comm.Allgather(mine, rows)
        report = mismatch([_decode(r) for r in rows])
        if report:
            raise UsageError(report)


#: the optimizer's collective methods: (name, always check, returns a context manager)
GUARDED = (("step", False, False), ("synchronize", False, False), ("averaged", True, True),
           ("traffic", False, False), ("check_divergence", False, False))


def guard_methods(cls: type) -> None:
    """Wrap the collective methods of :class:`~decomp.torch.DistributedOptimizer` (once)."""
    for method, check, context in GUARDED:
        fn = cls.__dict__[method]
        if not getattr(fn, "_guarded", False):
            wrapped = guarded(f"opt.{method}()", check=check, context=context)(fn)
            wrapped._guarded = True  # type: ignore[attr-defined]
            setattr(cls, method, wrapped)


def guarded(name: str, *, check: bool = False,
            context: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the optimizer method inside :meth:`CallGuard.call_of` (``self._guard``; absent:
    unguarded). ``context``: the method returns a context manager whose entry is the
    collective (``averaged``); the guard covers the entry, not the ``with`` body."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if context:
            @functools.wraps(fn)
            @contextlib.contextmanager
            def cm(self: Any, *a: Any, **k: Any) -> Iterator[Any]:
                g = self.__dict__.get("_guard")
                with contextlib.ExitStack() as stack:
                    with g.call_of(name, self, check) if g else contextlib.nullcontext():
                        value = stack.enter_context(fn(self, *a, **k))
                    yield value
            return cm

        @functools.wraps(fn)
        def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            g = self.__dict__.get("_guard")
            if g is None:
                return fn(self, *a, **k)
            with g.call_of(name, self, check):
                return fn(self, *a, **k)
        return wrapper
    return deco


class _SigintWatch:
    """The process's one wake-up-fd reader (see the module doc); acts for the guards alive."""

    _instance: _SigintWatch | None = None

    def __init__(self, read_fd: int) -> None:
        self.guards: weakref.WeakSet[CallGuard] = weakref.WeakSet()
        self.fd = read_fd
        threading.Thread(target=self._run, name="decomp-sigint", daemon=True).start()

    @classmethod
    def install(cls, guard: CallGuard) -> None:
        if cls._instance is None:
            if threading.current_thread() is not threading.main_thread():
                return  # only the main thread may set the wake-up fd
            r, w = os.pipe()
            os.set_blocking(w, False)
            try:
                old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            except ValueError:
                old = -2
            if old != -1:  # someone else's (asyncio): keep it, no escalation
                if old != -2:
                    signal.set_wakeup_fd(old)
                os.close(r)
                os.close(w)
                return
            cls._instance = cls(r)
        cls._instance.guards.add(guard)

    def _run(self) -> None:
        stalls = False
        while True:
            try:
                data = os.read(self.fd, 64)
            except OSError:
                return
            stops = [s for s in data if s in _STOP_SIGNALS]
            if stops and not stalls:  # a write blocked on a hung file system ends the rank
                stalls = True
                threading.Thread(target=_end_a_stalled_write, args=(stops[0],),
                                 name="decomp-write-stall", daemon=True).start()
            if signal.SIGINT in data:
                self._escalate()

    def _escalate(self) -> None:
        blocked = [(g, g.call, g.calls) for g in list(self.guards) if g.call is not None]
        if not blocked:
            return  # the main thread raises KeyboardInterrupt at its next bytecode
        time.sleep(SIGINT_GRACE_S)
        for g, call, calls in blocked:
            if g.call == call and g.calls == calls:
                # every rank got the signal (mpiexec forwards it): each leaves by itself, so
                # the job's exit code is 130 (concurrent MPI_Aborts race to other codes); a
                # rank that alone got it ends the job the same way (a rank gone: mpiexec
                # ends the others)
                print(f"[rank {g.rank}] ERROR: interrupted (SIGINT) while blocked in {call} "
                      f"(its call {calls + 1}): ending the job", file=sys.stderr, flush=True)
                os._exit(130)


_STOP_SIGNALS = (int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGUSR1))


def _end_a_stalled_write(signum: int) -> None:
    """After a stop signal: end this rank (128 + signal; mpiexec ends the others) once a file
    write (``opt.save``, ``MetricsWriter``, ``export``) has made no progress for
    ``DECOMP_WRITE_STALL_S`` — Python's handler cannot run while the write blocks, so the
    loop's ``should_stop()`` would never come (docs/reliability.md)."""
    from decomp.runner import diskfull
    from decomp.runner.guard import stalled_message, write_stall_s

    stall = write_stall_s()
    while True:
        time.sleep(0.1)
        w = diskfull.CURRENT
        if w is not None and time.monotonic() - w.since >= stall:
            rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))
            print(f"[rank {rank}] ERROR: {stalled_message(signum, w, time.monotonic() - w.since)}",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
