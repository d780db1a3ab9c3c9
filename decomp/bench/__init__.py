"""``decomp bench``: :mod:`decomp.bench.kernels` times the compression kernels against memory
bandwidth and the numpy/torch baselines; :mod:`decomp.bench.step` times a whole training step of
every decomp method against PyTorch DDP. ``decomp.bench.run_kernels`` and friends are the kernel
benchmark's functions (the step benchmark imports torch: ``from decomp.bench import step``)."""

from decomp.bench.kernels import (
    DEFAULT_SIZES,
    HEADER,
    KEY,
    Row,
    bench_compressor,
    default_compressors,
    format_row,
    format_table,
    interleaved,
    machine_info,
    memory_pass,
    run_kernels,
    time_call,
    topk_baselines,
)

__all__ = ["DEFAULT_SIZES", "HEADER", "KEY", "Row", "bench_compressor", "default_compressors",
           "format_row", "format_table", "interleaved", "machine_info", "memory_pass",
           "run_kernels", "time_call", "topk_baselines"]
