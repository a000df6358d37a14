"""Tiling: choose how each offloaded op is cut into tiles that fit L1 (the strategy).

`gemm` holds the geometry (what a choice of tile sizes costs in L1 bytes and DMA traffic),
`policy` what we prefer, `solve` the CP-SAT search; the C driver in c_kernels applies the plan.
"""

from .plan import GemmTiling, TilingError
from .solve import tile_gemm

__all__ = ["GemmTiling", "TilingError", "tile_gemm"]
