"""What a method's run produced (:class:`MethodResult`) and the table printed after a run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MethodResult:
    """Summary of one method's run (per-worker bits are means over workers, cumulative)."""

    method: str
    algorithm: str
    compressor: str
    lr: float
    steps: int
    loss: float
    grad_norm_sq: float
    bits_up: float
    bits_down: float
    wall_s: float
    status: str = "ok"
    message: str = ""
    family: str = "master_worker"
    consensus_distance: float = 0.0
    loss_local: float | None = None  # (1/n) Σ_i f_i(x_i), decentralized family
    compute_s: float | None = None  # wall time split (decentralized family)
    compress_s: float | None = None
    comm_s: float | None = None
    test_loss: float | None = None  # torch: test loss / accuracy of x (or x̄)
    test_acc: float | None = None
    test_acc_mean: float | None = None  # torch, decentralized: mean / min over the nodes' x_i
    test_acc_min: float | None = None
    #: how the method summed over workers as it ran: "tree" | "gather" (``run.aggregation``
    #: resolved: "auto" by the node count, then by the method), "allreduce" (dense
    #: all-reduce methods); None for the decentralized family
    aggregation: str | None = None

    @property
    def bytes_per_step(self) -> float:
        """Mean payload bytes sent per rank (worker) per step."""
        return self.bits_up / 8 / self.steps if self.steps else 0.0


def format_bits(bits: float) -> str:
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.2f} {unit}"
    return f"{bits:.0f} bit"


def format_table(results: list[MethodResult]) -> str:
    """The comparison table printed after a run.

    Master–worker runs keep the classic layout (final ‖∇f‖², bits up/down per worker); as soon
    as a decentralized method is present, one table for all: final loss and ‖∇f‖² at x̄,
    consensus distance, MB and bytes per step sent per rank, wall time and its split into
    compute / compress / comm. Torch runs (results with a test accuracy) show the training
    loss, the test loss and accuracy (of x̄, plus the mean / minimum over the nodes' own x_i
    for decentralized methods) and MB per rank instead of ‖∇f‖².
    """
    torch = any(r.test_acc is not None for r in results)
    if all(r.family == "master_worker" for r in results):
        if torch:
            head = ("method", "steps", "train loss", "test loss", "test acc", "MB up/worker",
                    "MB down/worker", "wall s", "status")
            rows = [(r.method, str(r.steps), f"{r.loss:.4f}", _num(r.test_loss),
                     _num(r.test_acc), f"{r.bits_up / 8e6:.3f}", f"{r.bits_down / 8e6:.3f}",
                     f"{r.wall_s:.2f}", r.status) for r in results]
        else:
            head = ("method", "steps", "final ||grad f||^2", "bits up/worker",
                    "bits down/worker", "wall time", "status")
            rows = [(r.method, str(r.steps), f"{r.grad_norm_sq:.4e}", format_bits(r.bits_up),
                     format_bits(r.bits_down), f"{r.wall_s:.3f} s", r.status) for r in results]
    elif torch:
        head = ("method", "steps", "train loss(xbar)", "test acc(xbar)", "acc x_i mean/min",
                "consensus", "MB sent/rank", "B/step/rank", "wall s",
                "compute/compress/comm s", "status")
        rows = [(r.method, str(r.steps), f"{r.loss:.4f}", _num(r.test_acc),
                 "-" if r.test_acc_mean is None or r.test_acc_min is None
                 else f"{r.test_acc_mean:.4f}/{r.test_acc_min:.4f}",
                 f"{r.consensus_distance:.3e}", f"{r.bits_up / 8e6:.3f}",
                 f"{r.bytes_per_step:.0f}", f"{r.wall_s:.2f}", _split(r), r.status)
                for r in results]
    else:
        head = ("method", "steps", "loss(xbar)", "||grad f(xbar)||^2", "consensus",
                "MB sent/rank", "B/step/rank", "wall s", "compute/compress/comm s", "status")
        rows = [(r.method, str(r.steps), f"{r.loss:.6f}", f"{r.grad_norm_sq:.4e}",
                 f"{r.consensus_distance:.3e}", f"{r.bits_up / 8e6:.4f}",
                 f"{r.bytes_per_step:.0f}", f"{r.wall_s:.3f}", _split(r), r.status)
                for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
    return "\n".join([line, sep, *body])


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _split(r: MethodResult) -> str:
    if r.compute_s is None or r.compress_s is None or r.comm_s is None:
        return "-"
    return f"{r.compute_s:.3f}/{r.compress_s:.3f}/{r.comm_s:.3f}"
