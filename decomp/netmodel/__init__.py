"""The cost model of a training step on an α–β network, and time to target (docs/netmodel.md).

    step = compute + compression + Σ over the step's calls of (hops·α + link bytes/β)

:mod:`.patterns` (the price of what each registered method sends per step: its class declares
the calls, ``comm_pattern``, and the codec work, ``codec_ops``; data types in
:mod:`decomp.comm.pattern`),
:mod:`.calibrate` (α, β, codec and compute costs on this machine), :mod:`.spectral` (degree and
spectral gap of ring / torus / exponential / complete W by FFT), :mod:`.steps` (steps to a
target and their scaling with the spectral gap), :mod:`.predict` (the prediction).
``decomp model`` (:mod:`decomp.cli.model`) prints it. Nothing here imports MPI.
"""

from decomp.netmodel.calibrate import CodecCosts, Link, link_params, parse_delay, parse_rate
from decomp.netmodel.patterns import Call, MethodSpec, call_time, method_spec, step_pattern
from decomp.netmodel.predict import Prediction, StepTime, predict_config, predict_step_time
from decomp.netmodel.spectral import degree, spectral_gap
from decomp.netmodel.steps import StepsReference, read_curve, scale_steps

__all__ = ["Call", "CodecCosts", "Link", "MethodSpec", "Prediction", "StepTime",
           "StepsReference", "call_time", "degree", "link_params", "method_spec",
           "parse_delay", "parse_rate", "predict_config", "predict_step_time", "read_curve",
           "scale_steps", "spectral_gap", "step_pattern"]
