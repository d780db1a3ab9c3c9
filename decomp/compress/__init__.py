"""Compressors: ``encode(x, key) -> uint8 payload``, ``decode``, ``decode_add``, constants.

``make_compressor(spec)`` (:mod:`decomp.compress.registry`) builds one from a config table such
as ``{kind = "topk", k = 1}``.
"""

from decomp.compress.base import HEADER_BYTES, Compressor, read_header
from decomp.compress.identity import Identity
from decomp.compress.natural import Natural
from decomp.compress.per_tensor import PerTensor, bind_attributes, bind_layout
from decomp.compress.qsgd import QSGD
from decomp.compress.randk import RandK
from decomp.compress.registry import REGISTRY, make_compressor, register
from decomp.compress.scaled import Scaled
from decomp.compress.sign import ScaledSign, Sign
from decomp.compress.topk import TopK

__all__ = ["HEADER_BYTES", "QSGD", "REGISTRY", "Compressor", "Identity", "Natural", "PerTensor",
           "RandK", "Scaled", "ScaledSign", "Sign", "TopK", "bind_attributes", "bind_layout",
           "make_compressor", "read_header", "register"]
