"""Greedy generation with TVM's own build of a `llama.build_decoder` module, run in TVM's VM on this host:
the comparison point for the standalone C program (TVM's llvm build of the float-defined QDQ graph, the
deeploy build in the VM, or TVM alone for a deeploy target)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .checkpoint import LlamaConfig


def build_module(mod: tvm.IRModule, target, relax_pipeline=None) -> tuple[relax.VirtualMachine, float]:
    """relax.build + export_library + load (the path the deeploy target's C takes): (VM, seconds)."""
    kwargs = {} if relax_pipeline is None else {"relax_pipeline": relax_pipeline}
    start = time.perf_counter()
    ex = tvm.relax.build(mod, target=target, **kwargs)
    with tempfile.TemporaryDirectory(prefix="tvm-deeploy-vm-") as tmp:
        path = str(Path(tmp) / "model.so")
        ex.export_library(path)
        module = tvm.runtime.load_module(path)
    return relax.VirtualMachine(module, tvm.cpu()), time.perf_counter() - start


def generate_in_vm(vm: relax.VirtualMachine, config: LlamaConfig, prompt_tokens, n_tokens: int) -> list[int]:
    """Prompt, then n_tokens - 1 greedy decode steps; the caches are mutated in place by the module."""
    shape = (1, config.n_kv_heads, config.seq_len, config.head_dim)
    caches = [tvm.runtime.tensor(np.zeros(shape, "float32")) for _ in range(2 * config.n_layers)]
    prompt = tvm.runtime.tensor(np.asarray(prompt_tokens, "int32"))
    tokens = [int(np.argmax(vm["prompt"](prompt, *caches)[0].numpy()))]
    position = len(prompt_tokens)
    while len(tokens) < n_tokens:
        out = vm["decode"](tvm.runtime.tensor(np.array([tokens[-1]], "int32")),
                           tvm.runtime.tensor(np.array([position], "int32")), *caches)
        tokens.append(int(np.argmax(out[0].numpy())))
        position += 1
    return tokens
