"""Fault catalogue, bad input (docs/reliability.md, "Bad input"): every case is run as a user
would and must end with the documented exit code and a clear first error line, without a
traceback, within a time bound, leaving no process behind.

The config/data cases are data (tests/e2e/faults_input_cases.py): ``run`` cases go through
``mpiexec -n 2 decomp run`` in a subprocess, ``sim`` cases through ``decomp sim`` in this
process. The wire-format and pickle cases call the Python API directly.
"""

from __future__ import annotations

import os
import pickle
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from decomp.cli import main
from decomp.compress import make_compressor
from decomp.data.classification import load, restricted_load
from decomp.errors import DataError, PayloadError
from tests.e2e.conftest import REPO, run_cli
from tests.e2e.faults_input_cases import (
    CASES,
    CONFIGS,
    Case,
    huge_bytes_pickle,
    make_files,
    nested_shared_pickle,
    self_containing_pickle,
)

RUN_BOUND_S = 30.0  # mpiexec -n 2 decomp run, from launch to the end of every process
SIM_BOUND_S = 15.0  # decomp sim in this process (the torch cases import torch)
API_BOUND_S = 1.0  # one refused payload or pickle


def first_error_line(stderr: str) -> str:
    """The first line of the first error message ("[rank r] ERROR: ..." or "ERROR: ...")."""
    for line in stderr.splitlines():
        if "ERROR: " in line:
            return line.split("ERROR: ", 1)[1]
    return ""


def processes_mentioning(tag: str) -> list[str]:
    """Processes (other than this one) whose command line contains ``tag``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if tag in cmd and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd}")
    return found


def run_case(case: Case, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of ``case`` run in directory ``tmp``."""
    make_files(tmp)
    (tmp / "cfg.toml").write_text(CONFIGS[case.config])
    args = [case.path or "cfg.toml", *case.args]
    for s in case.sets:
        args += ["--set", s]
    t0 = time.monotonic()
    if case.how == "run":
        r = run_cli(["run", *args, "--out", str(tmp / "runs")], np=2, timeout=2 * RUN_BOUND_S,
                    cwd=tmp)
        return r.returncode, r.stderr, time.monotonic() - t0
    if "--workers" not in case.args:
        args += ["--workers", "2"]
    code = main(["sim", *args])
    return code, capsys.readouterr().err, time.monotonic() - t0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, stderr, seconds = run_case(case, tmp_path, capsys)
    assert code == case.code, stderr
    assert "Traceback" not in stderr and "unexpected error" not in stderr, stderr
    assert case.expect in first_error_line(stderr), stderr
    bound = RUN_BOUND_S if case.how == "run" else SIM_BOUND_S
    assert seconds < bound, f"{case.id} took {seconds:.1f} s"
    assert not left_running(str(tmp_path))


def left_running(tag: str, grace_s: float = 10.0) -> list[str]:
    """Processes of the case still alive ``grace_s`` after mpiexec returned (ranks ended by
    MPI_Abort may take a moment to be reaped)."""
    deadline = time.monotonic() + grace_s
    while (found := processes_mentioning(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_catalogue_is_documented() -> None:
    """docs/reliability.md has a row for every case of this file."""
    doc = (REPO / "docs" / "reliability.md").read_text()
    api = [name for name in globals() if name.startswith("test_") and
           name not in ("test_bad_input_is_refused", "test_catalogue_is_documented")]
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc] + \
        [name for name in api if f"`{name}`" not in doc]
    assert not missing, f"cases without a row in docs/reliability.md: {missing}"


# --- wire format ------------------------------------------------------------------------------

SPECS = [{"kind": "topk", "k": 5}, {"kind": "randk", "k": 5}, {"kind": "identity"},
         {"kind": "qsgd", "levels": 4}, {"kind": "natural"}, {"kind": "sign"},
         {"kind": "scaled_sign"}, {"kind": "scaled", "inner": {"kind": "randk", "k": 5}}]
IDS = [s["kind"] for s in SPECS]
X = np.linspace(-1.0, 1.0, 50)


def _payload(spec: dict) -> tuple[object, np.ndarray]:
    c = make_compressor(spec)
    return c, c.encode(X, (0, 0, 0))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_payload_header_claiming_huge_d(spec: dict) -> None:
    """A header claiming d = 2**40 is refused before decode allocates anything of size d."""
    c, p = _payload(spec)
    p = p.copy()
    p[8:16].view("<u8")[0] = 1 << 40
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(PayloadError, match=r"d=1099511627776"):
            c.decode(p)
        with pytest.raises(PayloadError, match="length 1099511627776, expected 50"):
            c.decode_add(p, np.zeros(50))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < API_BOUND_S
    assert peak < 1 << 20, f"decode allocated {peak} bytes for a refused payload"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_payload_for_another_length(spec: dict) -> None:
    c, p = _payload(spec)
    with pytest.raises(PayloadError, match="payload is for a vector of length 50, expected 49"):
        c.decode(p, d=49)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_payload_truncated(spec: dict) -> None:
    c, p = _payload(spec)
    with pytest.raises(PayloadError):
        c.decode(p[:-1])
    with pytest.raises(PayloadError, match="truncated"):
        c.decode(p[:10])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("bad", [np.zeros(50, np.int64), np.zeros(50, np.complex128),
                                 np.zeros(50, np.float16), np.zeros((50, 1)),
                                 np.zeros(50, bool)], ids=["int64", "complex", "float16",
                                                           "2d", "bool"])
def test_decode_add_into_non_float_out(spec: dict, bad: np.ndarray) -> None:
    """An int64/complex/float16/bool/2-D accumulator is refused, left untouched (never
    truncated or cast); float32 and float64 accumulate the same values."""
    c, p = _payload(spec)
    with pytest.raises(TypeError, match="decode_add needs out = a 1-D float32 or float64"):
        c.decode_add(p, bad)
    assert not bad.any()
    want = c.decode(p)
    for dtype in (np.float32, np.float64):
        out = np.zeros(50, dtype)
        c.decode_add(p, out)
        np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("spec", [{"kind": "topk", "k": 5}, {"kind": "randk", "k": 5}],
                         ids=["topk", "randk"])
def test_sparse_header_claiming_a_large_d_allocates_nothing(spec: dict) -> None:
    """A Top-k/Rand-k payload's size does not grow with d: a header claiming d = 2**32 - 1
    (same index width, same size) would have decode allocate 16 GiB; refused unless d= says
    so, and the real length decodes as before."""
    c = make_compressor(spec)
    p = c.encode(np.linspace(-1.0, 1.0, 70_000), (0, 0, 0)).copy()
    p[8:16].view("<u8")[0] = (1 << 32) - 1
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(PayloadError, match=r"header claims d=4294967295: decoding it "
                           r"would allocate 32.0 GiB for a \d+-byte payload; pass decode\("
                           r"payload, d=\.\.\.\)"):
            c.decode(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < API_BOUND_S and peak < 1 << 20, peak
    p[8:16].view("<u8")[0] = 70_000
    assert c.decode(p).shape == (70_000,)


@pytest.mark.parametrize("spec,code,message", [
    ({"kind": "topk", "k": 5, "value_dtype": "float16"}, 3,
     "TopK payload carries bfloat16 values but this compressor sends float16"),
    ({"kind": "randk", "k": 5, "value_dtype": "bfloat16"}, 2,
     "RandK payload carries float16 values but this compressor sends bfloat16"),
    ({"kind": "identity", "value_dtype": "float16"}, 3,
     "Identity payload carries bfloat16 values but this compressor sends float16"),
    ({"kind": "topk", "k": 5}, 2,
     "TopK payload carries float16 values but this compressor sends float32 or float64"),
], ids=["topk-f16", "randk-bf16", "identity-f16", "topk-native"])
def test_a_swapped_value_dtype_byte_is_refused(spec: dict, code: int, message: str) -> None:
    """float16 and bfloat16 values have the same size: a flipped dtype byte must not decode
    every value wrongly without a sign."""
    c = make_compressor(spec)
    p = c.encode(X, (0, 0, 0)).copy()
    if "value_dtype" not in spec:  # a native payload given a 2-byte code: same size needed
        p = make_compressor({**spec, "value_dtype": "float16"}).encode(X, (0, 0, 0)).copy()
    p[2] = code
    with pytest.raises(PayloadError, match=message):
        c.decode(p)
    with pytest.raises(PayloadError, match=message):
        c.decode_add(p, np.zeros(50))


# --- CIFAR-10 batches: the restricted unpickler ----------------------------------------------

def _cifar_dir(tmp: Path, batch: bytes) -> Path:
    root = tmp / "cifar-10-batches-py"
    root.mkdir()
    (root / "data_batch_1").write_bytes(batch)
    (root / "test_batch").write_bytes(batch)
    return tmp


def _refused(tmp: Path, batch: bytes, message: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        load("cifar10", data_dir=_cifar_dir(tmp, batch), train_batches=1)
    assert time.monotonic() - t0 < API_BOUND_S
    first = str(e.value).splitlines()[0]
    assert first.startswith(str(tmp / "cifar-10-batches-py" / "data_batch_1")), first
    assert re.search(message, first), first


def test_cifar_nested_shared_references(tmp_path: Path) -> None:
    """268 bytes that are 2**30 entries as a tree: refused in well under a second (the old
    structure check re-walked shared objects: ~2 s at 20 levels, doubling per level)."""
    blob = nested_shared_pickle(30)
    assert len(blob) < 300
    _refused(tmp_path, blob, "the structure expands to more than 10000000 entries")


def test_cifar_self_containing_list(tmp_path: Path) -> None:
    _refused(tmp_path, self_containing_pickle(), "a container contains itself")


def test_cifar_pickle_calling_a_function(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("true",))

    _refused(tmp_path, pickle.dumps({b"data": Evil()}, protocol=2),
             r"refusing global (posix|nt)\.system")


def test_cifar_pickle_declaring_a_huge_object(tmp_path: Path) -> None:
    _refused(tmp_path, huge_bytes_pickle(), "declares an object too large to allocate")


def test_shared_references_within_limits_are_plain_data() -> None:
    """Sharing is not refused by itself: 10 levels (2**10 entries as a tree) load as before."""
    obj = restricted_load(nested_shared_pickle(10))
    assert obj[b"labels"] == [0] and len(obj[b"data"]) == 2
