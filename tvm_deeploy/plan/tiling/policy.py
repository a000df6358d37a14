"""What the tiler prefers among the tilings that fit: a cycle model to minimize, plus energy.

The cycle model's parameters belong to the platform (platforms.ClusterCosts, NpuCosts); they rank
tilings and engines, nothing else.
  cycles = max(DMA cycles, compute cycles) + per-tile overhead        (DMA overlaps compute)
  DMA cycles = bytes / dma.bytes_per_cycle + transfers * dma.setup_cycles
  compute (cluster) = tiles * (MACs of the busiest core in a tile) * cycles per MAC
  compute (NPU) = tiles * (MACs of a tile, output channels padded to whole groups) / MACs per cycle
  objective = cycles + exposed transfers of single-buffered operands + dma_byte_weight * DMA bytes
The last term is energy: a byte moved costs even when its transfer hides behind compute, so among
equally fast tilings the one that moves less wins (the paper's figure of merit is µJ per token).
The busiest core is what rewards tiles whose rows (or columns) are a multiple of the core count.
The reduction is never split: partial sums would need an int32 accumulator tile in L1 and a second
pass, which only pays when a single row of A and column of B do not fit, and then we refuse.

Attention (same form, tiling/attention_solve.py), with the cluster's per-MAC and per-key figures:
  cycles = max(DMA cycles, compute cycles) + steps * step overhead + exposed single-buffered K/V DMA
  compute cycles = sum over steps of (rows of the busiest core) * (keys of the step) * key cycles
  key cycles = (qk_dim + v_dim) * MAC cycles + exp cycles   (int8 first passes: qk_dim * MAC cycles)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TilingPolicy:
    dma_byte_weight: int = 1  # cycles' worth of energy per DMA byte
    # CP-SAT's search budget per op in deterministic seconds (a machine-independent work count), so
    # the tiling does not depend on machine load; the wall-clock guard only stops a search on a
    # machine many times too slow.
    deterministic_seconds: float = 5.0
    wall_seconds_guard: float = 120.0
    seed: int = 0


DEFAULT_POLICY = TilingPolicy()
