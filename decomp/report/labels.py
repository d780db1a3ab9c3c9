"""Names for curves and table rows, from what the runs actually ran.

A method's label in its run folder is the config's ``name`` (or the algorithm), which a
``--set`` or a sweep does not change: six sweep tasks all say "EF21 top-1" whatever k they ran.
So each method gets a *setting*: the run's config (``[problem]``, ``[run]``, ``[topology]``,
``seed``), its own ``[[methods]]`` table, and the engine (``sim`` or ``mpi``) and number of
workers from the run metadata. Among the methods shown together, the keys whose values differ
between methods of the same label are appended to it ("EF21 top-1 [k=8, lr_multiplier=16]");
keys equal for all methods go into the figure title instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from decomp.report.runs import MethodRun

#: config keys never used to tell runs apart (where the files went, the run's own name)
IGNORED = frozenset({"name", "out_dir", "data_dir", "run.progress", "run.fail_rank",
                     "run.fail_step", "method.name"})


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and not prefix.endswith("compressor"):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def setting(m: MethodRun) -> dict[str, Any]:
    """Everything that defines method ``m``'s run, as flat dotted keys (``problem.dataset``,
    ``method.lr_multiplier``, ``method.compressor``, ``engine``, ``workers``)."""
    cfg = {k: v for k, v in m.run.config.items() if k != "methods"}
    out: dict[str, Any] = {}
    _flat("", cfg, out)
    _flat("method", m.config, out)
    meta = m.run.meta
    if meta.get("engine"):
        out["engine"] = meta["engine"]
    workers = meta.get("n_workers") or m.run.config.get("run", {}).get("workers")
    if workers:
        out["workers"] = workers
    if "method.compressor" not in out and m.summary.get("compressor") not in (None, "-"):
        out["method.compressor"] = m.summary["compressor"]
    return {k: v for k, v in out.items() if k not in IGNORED}


def show_value(v: Any, nested: bool = False) -> str:
    """A compact rendering: {kind = "topk", k = 1} -> "topk k=1"; a table inside a table in
    parentheses ("scaled(qsgd levels=7)"); floats with %g."""
    if isinstance(v, dict):
        kind = v.get("kind", "")
        parts = [show_value(w, True) if k == "inner" else f"{k}={show_value(w, True)}"
                 for k, w in v.items() if k != "kind"]
        if kind and len(parts) == 1 and "inner" in v:
            return f"{kind}({parts[0]})"
        text = f"{kind} {' '.join(parts)}".strip()
        return f"({text})" if nested and " " in text and not kind else text
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(show_value(w, True) for w in v) + "]"
    return str(v)


def short_key(key: str, keys: Iterable[str]) -> str:
    """The last component of a dotted key, or more of it when that is ambiguous among
    ``keys``."""
    parts = key.split(".")
    others = [k.split(".") for k in keys if k != key]
    for n in range(1, len(parts) + 1):
        tail = parts[-n:]
        if not any(o[-n:] == tail for o in others if len(o) >= n):
            return ".".join(tail)
    return key


def varying_keys(settings: list[dict[str, Any]]) -> list[str]:
    """Keys whose value is not the same in every setting. A key some settings lack counts
    only for a method's own table (a compressor given or not); elsewhere it is a key an older
    decomp did not write (or metadata an older run lacks), not a difference."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    out = []
    for k in keys:
        have = [s for s in settings if k in s]
        if len(have) < len(settings) and not k.startswith("method."):
            have_values = {repr(s[k]) for s in have}
            if len(have_values) <= 1:
                continue
        if len({repr(s.get(k)) for s in settings}) > 1:
            out.append(k)
    return out


def common_setting(methods: list[MethodRun]) -> dict[str, Any]:
    """The keys with one value across all ``methods``."""
    settings = [setting(m) for m in methods]
    vary = set(varying_keys(settings))
    return {k: v for k, v in settings[0].items()
            if k not in vary and all(k in s for s in settings)} if settings else {}


def labels(methods: list[MethodRun], drop: Iterable[str] = (), unique: bool = True) -> list[str]:
    """One label per method (same order), distinct when ``unique``. ``drop``: keys left out
    of the suffix (a sweep's swept key when the best value is picked per group)."""
    settings = [setting(m) for m in methods]
    dropped = set(drop)
    out = []
    for m, s in zip(methods, settings, strict=True):
        same = [t for n, t in zip(methods, settings, strict=True) if n.label == m.label]
        vary = [k for k in varying_keys(same) if not _matches(k, dropped)]
        suffix = ", ".join(f"{short_key(k, vary)}={show_value(s.get(k))}" for k in vary)
        out.append(f"{m.label} [{suffix}]" if suffix else m.label)
    if unique and len(set(out)) < len(out):  # identical settings: tell them apart by the run folder
        where = _short_paths([m.run.path.resolve() for m in methods])
        out = [f"{lab} ({w})" for lab, w in zip(out, where, strict=True)]
    return out


def _short_paths(paths: list[Any]) -> list[str]:
    """The fewest trailing path parts that tell the distinct folders apart."""
    distinct = set(paths)
    for n in range(1, max(len(p.parts) for p in paths) + 1):
        tails = {"/".join(p.parts[-n:]) for p in distinct}
        if len(tails) == len(distinct):
            return ["/".join(p.parts[-n:]) for p in paths]
    return [str(p) for p in paths]


def group_key(m: MethodRun, over: str) -> tuple[str, str]:
    """(label, the setting without the ``over`` key): methods that differ only in ``over``."""
    return m.label, repr(sorted((k, repr(v)) for k, v in setting(m).items() if k != over))


def find_key(methods: list[MethodRun], key: str) -> str:
    """The full setting key a short name (``lr_multiplier``, ``k``, ``dataset``) means."""
    keys = list(dict.fromkeys(k for m in methods for k in setting(m)))
    if key in keys:
        return key
    hits = [k for k in keys if k.endswith("." + key)]
    if len(hits) == 1:
        return hits[0]
    from decomp.report.runs import RunFolderError

    if not hits:
        raise RunFolderError(f"no setting {key!r} in these runs (known: {', '.join(keys)})")
    raise RunFolderError(f"{key!r} is ambiguous: {', '.join(hits)}")


def value_of(m: MethodRun, key: str) -> Any:
    return setting(m).get(key)


def _matches(key: str, names: set[str]) -> bool:
    return key in names or any(key.endswith("." + n) for n in names)


def title(methods: list[MethodRun]) -> str:
    """What all ``methods`` share: dataset (or model on dataset), n, the topology (when every
    method is decentralized), compressor."""
    c = common_setting(methods)
    parts = []
    dataset = c.get("problem.dataset")
    model = c.get("problem.model")
    kind = c.get("problem.kind")
    if dataset is not None:
        parts.append(f"{model} on {dataset}" if model else f"{dataset}")
    if kind and kind != "torch":
        lam = c.get("problem.lam")
        parts.append(f"{kind}" + (f" λ={show_value(lam)}" if lam is not None else ""))
    if c.get("workers"):
        parts.append(f"n = {c['workers']}")
    fam = {m.summary.get("family") for m in methods}
    # the topology only when it applies to every method: a master–worker run's resolved
    # config has a [topology] table too (the default ring), which it never used
    if fam == {"decentralized"} and c.get("topology.kind"):
        parts.append(f"{c['topology.kind']} ({c.get('topology.weights', 'metropolis')})")
    if c.get("method.compressor") is not None:
        parts.append(f"compressor {show_value(c['method.compressor'])}")
    if c.get("engine"):
        parts.append(str(c["engine"]))
    return " · ".join(parts)


__all__ = ["IGNORED", "common_setting", "find_key", "group_key", "labels", "setting",
           "short_key", "show_value", "title", "value_of", "varying_keys"]
