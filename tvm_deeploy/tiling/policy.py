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
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TilingPolicy:
    dma_byte_weight: int = 1  # cycles' worth of energy per DMA byte
    seconds: float = 2.0  # CP-SAT time limit per op
    seed: int = 0


DEFAULT_POLICY = TilingPolicy()
