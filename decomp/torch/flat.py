"""Flat buffers: a torch module's parameters and gradients as views into two numpy vectors.

:class:`FlatModel` re-points every trainable parameter's ``.data`` and ``.grad`` at slices of
two contiguous float32 numpy arrays, ``params`` and ``grads`` (both shape (d,)), through
``torch.from_numpy`` (zero-copy: torch and numpy share the memory). Algorithms and kernels then
see the model as one vector x ∈ R^d and its gradient ∇f_i(x) as another; writing into
``params`` changes the module, and ``loss.backward()`` accumulates straight into ``grads``.

Floating-point buffers (BatchNorm running mean/var) get a third flat vector, ``buffers``
(shape (b,)), so they can be averaged across ranks with one all-reduce; integer buffers
(``num_batches_tracked``) stay where they are.

Rules that keep the views intact:

- zero gradients with :meth:`FlatModel.zero_grad` (or ``module.zero_grad(set_to_none=False)``);
  ``set_to_none=True`` (torch's default) detaches ``.grad`` from the buffer. :meth:`check_grads`
  detects that and re-attaches (copying the values in), so a stray call costs a copy, not a bug.
- parameters must be float32 on the CPU (call ``model.float()`` first).
- frozen parameters (``requires_grad=False``) are not part of x and keep their own memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from decomp.errors import ConfigError
from decomp.layout import Layout


@dataclass(frozen=True)
class Slot:
    """Where one tensor lives in a flat vector: ``vec[offset:offset + size].reshape(shape)``."""

    name: str
    offset: int
    size: int
    shape: tuple[int, ...]


def _ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def is_buffer(x: np.ndarray, buf: np.ndarray) -> bool:
    """True if ``x`` is exactly ``buf`` (same start address, length and dtype), i.e. writing
    into one is writing into the other and no copy is needed."""
    return (isinstance(x, np.ndarray) and x.dtype == buf.dtype and x.shape == buf.shape
            and x.flags.c_contiguous and _ptr(x) == _ptr(buf))


class FlatModel:
    """A module whose trainable parameters and gradients are views into flat float32 vectors.

    Args:
        module: the ``torch.nn.Module`` (modified in place: its parameters become views).

    Attributes:
        module: the module.
        params: x, shape (d,), float32 — the parameters, in ``module.named_parameters()`` order.
        grads: shape (d,), float32 — the gradient buffer every ``p.grad`` points into.
        buffers: shape (b,), float32 — floating-point module buffers (BatchNorm statistics).
        slots / buffer_slots: the layout (name, offset, size, shape) of each tensor.
        layout: the parameters' slots as a :class:`decomp.layout.Layout` (what per-tensor
            compressors, ``Env`` and checkpoints read).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError("FlatModel: the module has no trainable parameters")
        for n, p in named:
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise ConfigError(f"FlatModel: parameter {n!r} is {p.dtype} on {p.device}; "
                                  "decomp trains float32 CPU models (call model.float())")
        self._params_list = [p for _, p in named]
        self.slots = self._layout(named)
        self.d = sum(s.size for s in self.slots)
        self.layout = Layout(self.slots)
        self.params = np.empty(self.d, dtype=np.float32)
        self.grads = np.zeros(self.d, dtype=np.float32)
        tp, tg = torch.from_numpy(self.params), torch.from_numpy(self.grads)
        with torch.no_grad():
            for p, s in zip(self._params_list, self.slots, strict=True):
                view = tp[s.offset:s.offset + s.size].view(s.shape)
                view.copy_(p.detach())
                p.data = view
                p.grad = tg[s.offset:s.offset + s.size].view(s.shape)
        # floating-point buffers (e.g. BatchNorm running_mean / running_var)
        owners = []
        seen: set[int] = set()
        for mname, m in module.named_modules():
            for bname, b in m._buffers.items():
                if b is None or not b.is_floating_point() or id(b) in seen:
                    continue
                if b.dtype != torch.float32 or b.device.type != "cpu":
                    raise ConfigError(f"FlatModel: buffer {mname}.{bname} is {b.dtype} on "
                                      f"{b.device}; expected float32 on the CPU")
                seen.add(id(b))
                owners.append((m, bname, f"{mname}.{bname}" if mname else bname, b))
        self.buffer_slots = self._layout([(full, b) for _, _, full, b in owners])
        self.buffers = np.empty(sum(s.size for s in self.buffer_slots), dtype=np.float32)
        tb = torch.from_numpy(self.buffers)
        for (m, bname, _, b), s in zip(owners, self.buffer_slots, strict=True):
            view = tb[s.offset:s.offset + s.size].view(s.shape)
            view.copy_(b.detach())
            m._buffers[bname] = view
        self._grad_views = [p.grad for p in self._params_list]

    @staticmethod
    def _layout(named: list[tuple[str, torch.Tensor]]) -> list[Slot]:
        slots, off = [], 0
        for n, t in named:
            slots.append(Slot(n, off, t.numel(), tuple(t.shape)))
            off += t.numel()
        return slots

    # --- the vector x ------------------------------------------------------------------------
    def load(self, x: np.ndarray) -> None:
        """Set the parameters to x (shape (d,)); a no-op when x *is* :attr:`params`."""
        if is_buffer(x, self.params):
            return
        x = np.asarray(x)
        if x.shape != (self.d,):
            raise ValueError(f"FlatModel: x has shape {x.shape}, the model has d = {self.d}")
        np.copyto(self.params, x, casting="same_kind")

    def bind(self, x: np.ndarray) -> None:
        """Make the parameters views into ``x`` itself (zero-copy), discarding their values.

        After ``bind(x)`` an algorithm that updates x in place (``x -= γ g``, ``Bcast`` into x)
        updates the module directly: :meth:`load` (and so each gradient call) sees that x is the
        parameter vector and copies nothing. x: shape (d,), float32, C-contiguous, writable.
        """
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (self.d,)
                and x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"FlatModel.bind needs a writable contiguous float32 array of shape "
                             f"({self.d},)")
        if is_buffer(x, self.params):
            return
        tx = torch.from_numpy(x)
        with torch.no_grad():
            for p, s in zip(self._params_list, self.slots, strict=True):
                p.data = tx[s.offset:s.offset + s.size].view(s.shape)
        self.params = x

    # --- gradients -----------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """grads[:] = 0 (the views stay attached)."""
        self.grads.fill(0.0)

    def check_grads(self) -> None:
        """Re-attach any ``p.grad`` that no longer points into :attr:`grads`.

        A ``p.grad`` set to None (unused parameter after ``zero_grad(set_to_none=True)``) counts
        as zero; a replaced tensor is copied into its slice first.
        """
        for i in range(len(self._params_list)):
            self.attach_grad(i)

    def attach_grad(self, i: int) -> None:
        """:meth:`check_grads` for parameter ``i`` (flat order) only."""
        p, s, g = self._params_list[i], self.slots[i], self._params_list[i].grad
        if g is self._grad_views[i] or (g is not None and g.data_ptr()
                                       == self._grad_views[i].data_ptr()):
            return
        view = torch.from_numpy(self.grads[s.offset:s.offset + s.size]).view(s.shape)
        with torch.no_grad():
            if g is None:
                view.zero_()
            else:
                view.copy_(g)
        p.grad = view
        self._grad_views[i] = view

    # --- introspection -------------------------------------------------------------------------
    def parameters(self) -> Iterator[torch.Tensor]:
        """The trainable parameters in flat order."""
        return iter(self._params_list)

    def unflatten(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Split a (d,) vector (x or a gradient) into named arrays shaped like the parameters
        (views, no copy)."""
        return {s.name: vec[s.offset:s.offset + s.size].reshape(s.shape) for s in self.slots}

    def __repr__(self) -> str:
        return (f"FlatModel({type(self.module).__name__}, d={self.d}, "
                f"{len(self.slots)} parameter tensors, {self.buffers.size} buffer values)")
