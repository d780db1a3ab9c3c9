"""One generic call-wrapping proxy: the timing and the delay wrappers are built on it.

A :class:`CallProxy` subclass names the calls it wraps (``calls``: a protocol's method list,
e.g. :data:`decomp.comm.protocols.COUNTED_CALLS`) and implements two hooks,
:meth:`~CallProxy._enter` (before the wrapped call, returns a token) and
:meth:`~CallProxy._exit` (after it, also when it
raises, with the token). The class body gets one generated method per name, so the wrappers
never re-list a transport's methods; every other attribute reads through to ``inner``
unchanged. A call on a name the inner object lacks raises its ``AttributeError``.

Proxies stack (the session's transport is ``Timed(Delayed(MPI transport))``); ``inner`` is the
next one in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["CallProxy"]


def _wrapped(name: str) -> Callable[..., Any]:
    def call(self: CallProxy, *args: Any, **kwargs: Any) -> Any:
        token = self._enter(name)
        try:
            return getattr(self.inner, name)(*args, **kwargs)
        finally:
            self._exit(name, token)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``inner.{name}(...)`` between the proxy's hooks."
    return call


class CallProxy:
    """``inner`` with the calls named in ``calls`` wrapped by :meth:`_enter` / :meth:`_exit`.

    Subclasses set ``calls`` (a class attribute) and override the hooks; a subclass that
    defines one of the named methods itself keeps its own.
    """

    __slots__ = ("inner",)
    calls: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.calls:
            if not any(name in k.__dict__ for k in cls.__mro__[:-1] if k is not CallProxy):
                setattr(cls, name, _wrapped(name))

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner" or name.startswith("__"):  # not yet set (copy/unpickle)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def _enter(self, call: str) -> Any:
        """Before ``inner.<call>(...)``; the return value is handed to :meth:`_exit`."""
        return None

    def _exit(self, call: str, token: Any) -> None:
        """After ``inner.<call>(...)`` (also when it raised)."""
