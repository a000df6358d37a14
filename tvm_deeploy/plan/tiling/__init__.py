"""Tiling: choose how each offloaded op is cut into tiles that fit L1 (the strategy).

`gemm` and `attention` hold the geometry (what a choice of tile sizes costs in L1 bytes and DMA
traffic), `policy` what we prefer, `solve` and `attention_solve` the CP-SAT searches; the C drivers
in c_kernels apply the plans.
"""

from .attention_solve import tile_attention
from .plan import AttentionTiling, GemmTiling, TilingError
from .solve import tile_gemm

__all__ = ["AttentionTiling", "GemmTiling", "TilingError", "tile_attention", "tile_gemm"]
