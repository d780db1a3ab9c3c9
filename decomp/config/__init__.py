"""Run configs: TOML files validated into dataclasses.

A config has top-level ``name``, ``seed``, ``out_dir``, ``data_dir``, a ``[problem]`` table, a
``[run]`` table, a ``[topology]`` table (the mixing matrix W of decentralized methods) and one
or more ``[[methods]]`` tables. Unknown keys are errors that name the
key and the closest valid one, so a typo never silently falls back to a default. ``--set
key=value`` overrides use dotted paths (``run.steps=50``, ``methods.1.lr_multiplier=16``);
values are parsed as TOML literals, falling back to a plain string.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.config.checks import check_config, resolve_schedule
from decomp.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ProblemConfig:
    """Objective and data.

    kind: logistic | least_squares (numpy problems) | torch (a torch model, docs/torch.md).

    numpy problems: dataset: breast_cancer, digits, synthetic, a LIBSVM name (a9a, ...) or a
    file path; lam: λ of the non-convex regulariser; scale: none | standard | maxabs; shard:
    contiguous | iid | by_label (rows sorted by label, then cut); dtype: float64 (default) |
    float32; n_samples / n_features: size of the synthetic dataset.

    torch (each key below is refused for the numpy kinds): model: a decomp.models name (mlp,
    cnn1d, lenet, resnet20), required; model_options: table passed to the model; dataset: a
    decomp.datasets name (mnist1d, digits, cifar10, synthetic, libsvm:NAME or a path);
    dataset_options: table passed to its loader; loss: cross_entropy (default); shard: iid |
    contiguous (default) | by_label | dirichlet, with dirichlet_alpha (default 0.5);
    weight_decay: wd >= 0, adds (wd/2)||x||^2 to every f_i (default 0); buffers: average
    (default) | local, the BatchNorm statistics evaluated models use; eval_chunk: rows per
    forward pass in evaluations and full gradients (default 1024); dtype: float32 only.
    """

    kind: str = "logistic"
    dataset: str = "breast_cancer"
    lam: float = 0.1
    scale: str = "none"
    shard: str = "contiguous"
    dtype: str | None = None
    n_samples: int = 1000
    n_features: int = 20
    model: str | None = None
    model_options: dict[str, Any] | None = None
    dataset_options: dict[str, Any] | None = None
    loss: str | None = None
    dirichlet_alpha: float | None = None
    weight_decay: float | None = None
    buffers: str | None = None
    eval_chunk: int | None = None


@dataclass
class RunConfig:
    """steps: iterations per method; log_every: metrics period (steps), also the period of the
    decentralized family's collective divergence check; master: shared | dedicated
    (master–worker family only); x0: zeros | normal | path.npy | model (default: normal for
    the numpy problems, model — the model's seeded initialisation — for torch); workers:
    expected number of
    workers (checked against the MPI world); progress: tqdm bar on rank 0; loss_blowup: stop as
    diverged when the loss (at x̄ for decentralized methods) exceeds this factor times its
    start; fail_rank / fail_step: inject a failure (tests of the abort path);
    checkpoint_every: steps between checkpoints (0: only at the end of each method and on a
    termination signal); comm_timeout_s: the watchdog's limit on a silent rank or a step that
    does not complete (seconds); aggregation: gather | tree | auto — how the master–worker
    family sums the workers' payloads (gathered at rank 0, or a fixed-order sparse
    reduce-scatter + all-gather; auto: the tree when the ranks span several nodes; unset:
    :data:`decomp.comm.tree.DEFAULT_AGGREGATION` (auto) with a shared master, gather with a
    dedicated one; docs/netmodel.md); overlap: torch models only — send gradient buckets
    while backward runs (dense methods, EF21/DCGD with a per-tensor compressor, PowerSGD;
    docs/torch.md, "Overlap with backward"); bucket_cap_mb: its bucket size in MiB (unset:
    DDP's 25 MiB scaled to the model); lr_schedule: a step-size schedule applied to every
    method alike, e.g. {kind = "multistep", milestones = [750, 1250], gamma = 0.1}
    (:mod:`decomp.config.lrschedule`; unset: the constant step size)."""

    steps: int = 100
    log_every: int = 10
    master: str = "shared"
    aggregation: str | None = None
    x0: str | None = None
    workers: int | None = None
    progress: bool = True
    loss_blowup: float = 1e6
    fail_rank: int | None = None
    fail_step: int | None = None
    checkpoint_every: int = 0
    comm_timeout_s: float = 300.0
    overlap: bool = False
    bucket_cap_mb: float | None = None
    lr_schedule: dict[str, Any] | None = None


@dataclass
class TopologyConfig:
    """W for the decentralized family (one node per MPI rank). kind: a graph generator (ring,
    torus, hypercube, exponential, complete, star, random-regular, erdos-renyi, edge-list) or
    the path of an explicit W (.npy, .npz or text); weights: metropolis | max-degree |
    lazy-metropolis | lazy-max-degree; options: generator options, e.g. {degree = 4, seed = 1}
    or {path = "edges.txt"}; exchange: how neighbours exchange payloads (auto | persistent |
    isend | neighbor, see decomp.comm.Neighborhood); schedule: a time-varying W_t instead of
    one W — one-peer-exponential (directed: dpsgd only) or one-peer-hypercube (symmetric, n a
    power of two: dpsgd, dcd_psgd, choco_sgd); it sets its own weights, so kind, weights and
    options are left out (the resolved config has kind = the schedule's name)."""

    kind: str = "ring"
    weights: str = "metropolis"
    options: dict[str, Any] = field(default_factory=dict)
    exchange: str = "auto"
    schedule: str | None = None


@dataclass
class NetworkConfig:
    """Network emulation (off by default). delay_ms: a one-way delay added to every message hop
    of every communication call (:mod:`decomp.comm.delay`: 1 hop for a neighbour exchange or a
    gather, ceil(log2 n) for a broadcast, 2 ceil(log2 n) for an all-reduce), for studying
    methods on a high-latency network from one machine or the emulated cluster of
    jobs/local/emulate/ (whose links tbf shapes to a rate but cannot delay). Emulation: the
    bytes still cross MPI at the machine's speed; the delay is waited on top."""

    delay_ms: float = 0.0


@dataclass
class MethodConfig:
    """One algorithm to run. algorithm: a name of :data:`decomp.algorithms.REGISTRY` (every
    registered method, its family and options: docs/algorithms.md);
    compressor: a table such as {kind = "topk", k = 1}; lr: a float, "theory" (the EF21
    formula; master–worker only) or "1/L"; lr_multiplier: factor on lr (the papers' 2^m
    sweeps); batch_size: τ for stochastic gradients; name: label in tables.

    Any other key of a ``[[methods]]`` table is an option of that algorithm's class (a keyword
    of its constructor; the registry lists each class's options), kept in ``options`` and
    checked against the registry when the method is built. ``options`` holds what the config
    gave; the resolved set (class defaults included) is the plan's
    (:func:`decomp.runner.plan.resolved_config` writes it into a run's ``config.toml``).
    """

    algorithm: str
    name: str | None = None
    compressor: dict[str, Any] | str | None = None
    lr: float | str = "theory"
    lr_multiplier: float = 1.0
    batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.algorithm


@dataclass
class Config:
    """A whole run: problem, run settings and the methods compared on them."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    data_dir: str | None = None
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    run: RunConfig = field(default_factory=RunConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    methods: list[MethodConfig] = field(default_factory=list)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    open_options = cls is MethodConfig  # other keys: the algorithm's options (registry)
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if open_options and key not in names:
            kwargs.setdefault("options", {})[key] = value
            continue
        if key not in names or (open_options and key == "options"):
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint} (valid: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, path)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            if not isinstance(value, list):
                raise ConfigError(f"'{path}' must be an array of tables ([[{path}]])")
            kwargs[key] = [_build(typing.get_args(tp)[0], v, f"{path}.{i}")
                           for i, v in enumerate(value)]
        else:
            if not _type_ok(value, tp):
                raise ConfigError(f"config key '{path}' must be {_type_name(tp)}, "
                                  f"got {value!r}")
            kwargs[key] = float(value) if tp is float else value
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (1, 0.5, true, "x", {k = 1}) or else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to the raw config dict (list indices as numbers)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    path, text = assignment.split("=", 1)
    parts = path.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {path}: no entry {part!r} in '{'.'.join(parts[:i])}'")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    value = parse_value(text.strip())
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {path}: no entry {last!r}")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {path}: '{'.'.join(parts[:-1])}' is not a table")


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Read a TOML file (or a dict), apply ``--set`` overrides, validate."""
    if isinstance(source, dict):
        raw = source
    else:
        raw = read_toml(Path(source))
    for o in overrides or []:
        apply_override(raw, o)
    cfg = _build(Config, raw, "")
    resolve_schedule(cfg, raw.get("topology"))
    _check_method_keys(cfg)
    if not cfg.methods:
        raise ConfigError("config has no [[methods]] table: nothing to run")
    resolve_problem(cfg)
    check_config(cfg)  # value ranges, names, x0 / data_dir files: before any data is loaded
    return cfg


def read_toml(p: Path) -> dict[str, Any]:
    """The TOML table of config file ``p``; a ConfigError naming the file and the fix when it
    is missing, not a regular file (a directory, a pipe), unreadable, not UTF-8 or not TOML."""
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found")
    if not p.is_file():
        what = "a directory" if p.is_dir() else "not a regular file"
        raise ConfigError(f"config file {str(p)!r} is {what}: give the path of a .toml file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read ({e.strerror or e}): check "
                          "its permissions") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {e.start}): is it "
                          "the right file?") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def _check_method_keys(cfg: Config) -> None:
    """Refuse a ``[[methods]]`` key that is neither a common key nor an option of any
    registered algorithm (a typo), naming the closest valid key. Whether the option belongs to
    *this* method's algorithm is checked when the method is built (the registry)."""
    from decomp.algorithms.registry import REGISTRY, renamed_option

    common = [f.name for f in dataclasses.fields(MethodConfig) if f.name != "options"]
    every = sorted({o for spec in REGISTRY.values() for o in spec.options})
    for i, m in enumerate(cfg.methods):
        for key in m.options:
            if key in every:
                continue
            renamed = renamed_option(key)
            if renamed is not None:
                raise ConfigError(f"config key 'methods.{i}.{key}' is now called "
                                  f"'{renamed[0]}' ({', '.join(renamed[1])}): write "
                                  f"{renamed[0]} = {m.options[key]!r}")
            spec = REGISTRY.get(m.algorithm)
            mine = list(spec.options) if spec is not None else []
            close = difflib.get_close_matches(key, [*common, *mine], n=1, cutoff=0.5) or \
                difflib.get_close_matches(key, every, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key 'methods.{i}.{key}'{hint} (valid: "
                              f"{', '.join([*common, *mine])})")


NUMPY_KINDS = ("logistic", "least_squares")
PROBLEM_KINDS = (*NUMPY_KINDS, "torch")
#: [problem] keys that only torch problems take (None = not given)
TORCH_KEYS = ("model", "model_options", "dataset_options", "loss", "dirichlet_alpha",
              "weight_decay", "buffers", "eval_chunk")
#: [problem] keys that only the numpy problems take, with their defaults
NUMPY_ONLY = {"lam": 0.1, "scale": "none", "n_samples": 1000, "n_features": 20}
LOSSES = ("cross_entropy",)
BUFFER_MODES = ("average", "local")
TORCH_SHARDS = ("iid", "contiguous", "by_label", "dirichlet")


def is_torch(cfg: Config) -> bool:
    """True when the config trains a torch model (``problem.kind = "torch"``)."""
    return cfg.problem.kind == "torch"


def resolve_problem(cfg: Config) -> None:
    """Fill the kind-dependent defaults in place and refuse keys of the other kind.

    numpy kinds: dtype float64, run.x0 normal; the torch keys must be absent. torch: dtype
    float32 (the only one), loss cross_entropy, weight_decay 0, buffers average, eval_chunk
    1024, dirichlet_alpha 0.5, run.x0 model; model is required; lam, scale, n_samples and
    n_features must keep their defaults (they belong to the numpy problems).
    """
    p = cfg.problem
    if p.kind not in PROBLEM_KINDS:
        close = difflib.get_close_matches(p.kind, PROBLEM_KINDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"problem.kind must be one of {', '.join(PROBLEM_KINDS)}, got "
                          f"{p.kind!r}{hint}")
    if p.kind != "torch":
        for key in TORCH_KEYS:
            if getattr(p, key) is not None:
                raise ConfigError(f"problem.{key} applies to torch problems only (problem.kind "
                                  f"= 'torch'); this config has kind = {p.kind!r}")
        if cfg.run.x0 == "model":
            raise ConfigError("run.x0 = 'model' (a model's initialisation) needs problem.kind = "
                              "'torch'; the numpy problems start from zeros, normal or a .npy "
                              "file")
        p.dtype = p.dtype or "float64"
        cfg.run.x0 = cfg.run.x0 or "normal"
        return
    for key, default in NUMPY_ONLY.items():
        if getattr(p, key) != default:
            extra = " (use weight_decay for an L2 penalty)" if key == "lam" else (
                " (pass loader options in dataset_options)" if key.startswith("n_") else "")
            raise ConfigError(f"problem.{key} applies to the numpy problems "
                              f"({', '.join(NUMPY_KINDS)}), not to kind = 'torch'{extra}")
    if p.model is None:
        raise ConfigError("problem.model is required for kind = 'torch': a decomp.models name "
                          "(mlp, cnn1d, lenet, resnet20)")
    if p.dtype not in (None, "float32"):
        raise ConfigError(f"problem.dtype = {p.dtype!r}: torch models train in float32 (flat "
                          "float32 buffers); drop the key or set it to 'float32'")
    if p.shard not in TORCH_SHARDS:
        raise ConfigError(f"problem.shard must be one of {', '.join(TORCH_SHARDS)} for torch "
                          f"problems, got {p.shard!r}")
    p.dtype = "float32"
    p.loss = p.loss or "cross_entropy"
    if p.loss not in LOSSES:
        raise ConfigError(f"problem.loss must be one of {', '.join(LOSSES)}, got {p.loss!r}")
    p.buffers = p.buffers or "average"
    if p.buffers not in BUFFER_MODES:
        raise ConfigError(f"problem.buffers must be one of {', '.join(BUFFER_MODES)}, got "
                          f"{p.buffers!r}")
    p.weight_decay = 0.0 if p.weight_decay is None else p.weight_decay
    if p.weight_decay < 0:
        raise ConfigError(f"problem.weight_decay must be >= 0, got {p.weight_decay}")
    p.dirichlet_alpha = 0.5 if p.dirichlet_alpha is None else p.dirichlet_alpha
    if not p.dirichlet_alpha > 0:
        raise ConfigError(f"problem.dirichlet_alpha must be > 0, got {p.dirichlet_alpha}")
    p.eval_chunk = 1024 if p.eval_chunk is None else p.eval_chunk
    if p.eval_chunk < 1:
        raise ConfigError(f"problem.eval_chunk must be >= 1, got {p.eval_chunk}")
    p.model_options = p.model_options or {}
    p.dataset_options = p.dataset_options or {}
    cfg.run.x0 = cfg.run.x0 or "model"


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as a TOML-writable dict (None values dropped)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(w) for k, w in v.items() if w is not None}
        if isinstance(v, list):
            return [clean(w) for w in v]
        return v

    out = clean(dataclasses.asdict(cfg))
    for m in out["methods"]:  # algorithm options are keys of the method's own table
        m.update(m.pop("options", {}))
    if cfg.topology.schedule is not None:  # the schedule sets W_t: no weights, no options
        out["topology"].pop("weights", None)
        out["topology"].pop("options", None)
    if cfg.problem.kind == "torch":  # the numpy-only keys keep their defaults: leave them out
        for key in NUMPY_ONLY:
            out["problem"].pop(key, None)
    return out


def dump_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))
