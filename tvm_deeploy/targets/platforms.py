"""Platform descriptions as plain data: memory levels, cluster cores, DMA limits, NPU.

A platform travels inside a TVM target as its `mcpu` string ("siracusa,l1=32768,cores=8,tiler=greedy"),
because TVM's target kind "c" accepts no custom attributes; `parse_mcpu` and `Platform.mcpu` convert.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

# How tilings and memory layouts are found (the ablation switches): CP-SAT started from the greedy
# solution, the greedy solution alone, or (memory only) the buffer sharing TVM's StaticPlanBlockMemory finds.
TILERS = ("cpsat", "greedy")
PLANNERS = ("cpsat", "greedy", "tvm")

NPU_CHANNEL_GROUP = 16  # output channels the NPU's MAC array computes side by side: its weight layout's group
NPU_WEIGHT_BYTES = 4 * MIB  # Siracusa's N-EUREKA weight memory (c_kernels/hal/rv32.ld's default region)


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    bytes: int
    engines: tuple[str, ...]  # which engines address it: "cluster", "npu", "dma"


@dataclass(frozen=True)
class Dma:
    """The cluster DMA: transfers between L2 and L1, strided in up to `dims` dimensions."""

    dims: int
    max_transfer_bytes: int
    bytes_per_cycle: int  # sustained bandwidth, for the tiler's cost model
    setup_cycles: int  # programming one transfer, for the tiler's cost model


@dataclass(frozen=True)
class ClusterCosts:
    """The cluster's cycle model: one instruction per cycle (in-order RV32 cores), so a MAC costs
    what our kernel's inner loop executes per MAC, on each core."""

    # int8: our dpl_gemm_s8 with FIXED requantization, 64x256x64 on rv32imc, gcc 12 -O2, counted with
    # qemu -icount (3.04 instructions per MAC; tvm_deeploy/targets/kernel_count.py measures it); fp32: twice
    # that, an unmeasured allowance for the FPU's longer latency.
    # int8_lanes: dpl_gemm_s8_lanes (a constant B packed in lane words, plan/lanes.py) measured the same way (2.45;
    # kernel_count.gemm_s8_count(64, 256, 64, requantize=True, lanes=True)).
    milli_cycles_per_mac: tuple[tuple[str, int], ...] = (("int8", 3040), ("int8_lanes", 2450), ("float32", 6080))
    tile_overhead_cycles: int = 200  # fork/join over the cores and loop bookkeeping per tile (assumed)
    # Attention, per key of a row: fp32 expf, int8 a table lookup (assumed); per key block: two
    # barriers and core 0's DMA bookkeeping (assumed).
    exp_cycles_per_key: tuple[tuple[str, int], ...] = (("int8", 10), ("float32", 30))
    attention_step_cycles: int = 300
    # The element-wise and row-wise kernels (dpl_residual_add, dpl_rms_norm, dpl_swiglu, dpl_rope, dpl_quantize,
    # dpl_softmax_f32), per element of their input on one core with float operands, plus per element of each
    # int8 operand dequantized and of an int8 result quantized: instructions measured by
    # scripts/measure_elementwise.py (rv32imafc, gcc 12 -O2, qemu -icount, 1 hart); swiglu is mostly dpl_expf,
    # swiglu_table the int8 gate's table lookup instead; rms_norm is its two passes, rms_norm_sum (the row's
    # squares) and rms_norm_scale, apart. fork_cycles: what a fork/join over more than one core adds on the
    # slowest hart (100-250 measured on 8 harts).
    elementwise_milli_cycles: tuple[tuple[str, int], ...] = (
        ("residual_add", 6000), ("rms_norm", 11800), ("rms_norm_sum", 4000), ("rms_norm_scale", 7000),
        ("swiglu", 41000), ("swiglu_table", 11000), ("rope", 10200), ("quantize", 3400), ("softmax", 44400))
    dequantize_milli_cycles: int = 3000
    quantize_milli_cycles: int = 5100
    fork_cycles: int = 200

    def elementwise_cycles(self, kind: str, elements: int, dequantized: int = 0, quantized: int = 0) -> int:
        """Whole cycles of an element-wise kernel over `elements` on one core, with `dequantized` int8
        operands and `quantized` int8 results."""
        per = (dict(self.elementwise_milli_cycles)[kind] + dequantized * self.dequantize_milli_cycles
               + quantized * self.quantize_milli_cycles)
        return -(-elements * per // 1000)

    def mac_milli_cycles(self, dtype: str) -> int:
        return dict(self.milli_cycles_per_mac)[dtype]

    def mac_cycles(self, dtype: str, macs: int) -> int:
        """Whole cycles of `macs` MACs on one core."""
        return -(-macs * self.mac_milli_cycles(dtype) // 1000)

    def exp_cycles(self, dtype: str) -> int:
        return dict(self.exp_cycles_per_key)[dtype]


@dataclass(frozen=True)
class NpuCosts:
    """The NPU's cycle model, for choosing engines. Not measured here: assumptions that rank engines."""

    # int8 MACs per cycle in 1x1 (linear-layer) mode: a 16-channel group against 4 input channels per
    # cycle. N-EUREKA's published peak is reached in 3x3 mode; 1x1 uses a fraction of its array.
    macs_per_cycle: int = 64
    # Programming one job (about twenty register writes from a core) plus the accelerator's pipeline
    # fill and drain: what makes a tiny layer cheaper on the cluster.
    job_cycles: int = 400
    channel_group: int = NPU_CHANNEL_GROUP


@dataclass(frozen=True)
class Platform:
    name: str
    levels: tuple[MemoryLevel, ...]  # fastest first: L1 is levels[0]
    cores: int
    dma: Dma
    npu: bool  # the NPU is present and may be used
    cluster_costs: ClusterCosts = ClusterCosts()
    npu_costs: NpuCosts = NpuCosts()
    tiler: str = TILERS[0]
    planner: str = PLANNERS[0]
    # constant int8 weights packed in lane words for the cluster (plan/lanes.py): fewer instructions per MAC on
    # cores without packed SIMD, for 2.67x their bytes in L2 and through the DMA
    lanes: bool = True

    def level(self, name: str) -> MemoryLevel:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(f"platform {self.name} has no memory level {name!r} "
                       f"(it has {', '.join(lv.name for lv in self.levels)})")

    @property
    def l1_bytes(self) -> int:
        return self.level("L1").bytes

    @property
    def mcpu(self) -> str:
        """The platform and its differences from the named platform, as a target's mcpu string."""
        base = PLATFORMS[self.name]
        fields = [self.name]
        for key, ours, theirs in (("l1", self.level("L1").bytes, base.level("L1").bytes),
                                  ("l2", self.level("L2").bytes, base.level("L2").bytes),
                                  ("cores", self.cores, base.cores), ("npu", int(self.npu), int(base.npu)),
                                  ("tiler", self.tiler, base.tiler), ("planner", self.planner, base.planner),
                                  ("lanes", int(self.lanes), int(base.lanes))):
            if ours != theirs:
                fields.append(f"{key}={ours}")
        return ",".join(fields)

    def with_overrides(self, l1_bytes: int | None = None, l2_bytes: int | None = None,
                       cores: int | None = None, npu: bool | None = None, tiler: str | None = None,
                       planner: str | None = None, lanes: bool | None = None) -> Platform:
        for name, value in (("l1_bytes", l1_bytes), ("l2_bytes", l2_bytes), ("cores", cores)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value, allowed in (("tiler", tiler, TILERS), ("planner", planner, PLANNERS)):
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; {name}s are {', '.join(allowed)}")
        if npu and not PLATFORMS[self.name].npu:
            raise ValueError(f"platform {self.name} has no NPU")
        sizes = {"L1": l1_bytes, "L2": l2_bytes}
        levels = tuple(dataclasses.replace(lv, bytes=sizes.get(lv.name) or lv.bytes) for lv in self.levels)
        return dataclasses.replace(self, levels=levels, cores=cores or self.cores,
                                   npu=self.npu if npu is None else bool(npu), tiler=tiler or self.tiler,
                                   planner=planner or self.planner, lanes=self.lanes if lanes is None else bool(lanes))


_CLUSTER_DMA = Dma(dims=2, max_transfer_bytes=128 * KIB, bytes_per_cycle=8, setup_cycles=30)

PLATFORMS = {
    # Siracusa (PULP): 8-core RV32 cluster sharing a 256 KiB L1 scratchpad, 2 MiB L2, N-EUREKA NPU with
    # a 4 MiB weight memory; the cluster DMA moves 1-D and 2-D strided blocks of up to 128 KiB.
    "siracusa": Platform(
        name="siracusa",
        levels=(MemoryLevel("L1", 256 * KIB, ("cluster", "npu", "dma")),
                MemoryLevel("L2", 2 * MIB, ("cluster", "npu", "dma")),
                MemoryLevel("weights", NPU_WEIGHT_BYTES, ("npu",))),
        cores=8, dma=_CLUSTER_DMA, npu=True),
    # A generic single-core MCU with a scratchpad and a DMA, no accelerator.
    "generic": Platform(
        name="generic",
        levels=(MemoryLevel("L1", 64 * KIB, ("cluster", "dma")),
                MemoryLevel("L2", 512 * KIB, ("cluster", "dma"))),
        cores=1, dma=_CLUSTER_DMA, npu=False),
}


def get_platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown platform {name!r}; known: {', '.join(sorted(PLATFORMS))}") from None


def parse_mcpu(mcpu: str) -> Platform:
    """The platform a target's mcpu string names, with its overrides applied."""
    name, *fields = [part.strip() for part in str(mcpu).split(",")]
    overrides = {}
    keys = {"l1": "l1_bytes", "l2": "l2_bytes", "cores": "cores", "npu": "npu", "tiler": "tiler", "planner": "planner",
            "lanes": "lanes"}
    for field in fields:
        key, _, value = field.partition("=")
        named = key in ("tiler", "planner")
        if key not in keys or not (value if named else value.isdigit()):
            raise ValueError(f"bad deeploy platform field {field!r} in mcpu {mcpu!r}")
        overrides[keys[key]] = value if named else bool(int(value)) if key in ("npu", "lanes") else int(value)
    return get_platform(name).with_overrides(**overrides)
