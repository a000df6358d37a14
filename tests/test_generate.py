"""Language-model generation in the standalone C program: a toy model following the generator contract
(prompt and decode sharing a KV cache written in place) exported with `export_generator`, built and run on
this host (and under qemu, marker rv32), generates exactly the tokens of TVM's own llvm build run step by
step in its VM; the cache is state kept in the arena; contract violations are refused clearly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from conftest import run_c_program
from tvm import relax
from tvm.script import tirx as T

import tvm_deeploy
from tvm_deeploy.cli import main as cli
from tvm_deeploy.lm.llama import kv_write
from tvm_deeploy.program.generate import ContractError, export_generator, generate_in_vm
from tvm_deeploy.program.lower import UnsupportedModelError
from tvm_deeploy.program.placement import ArenaTooSmallError
from tvm_deeploy.targets import qemu

REPO = Path(__file__).resolve().parent.parent
PROMPT = [3, 7, 1, 30]
N_TOKENS = 10
DIM, HEADS, CONTEXT, VOCAB = 16, 2, 16, 32


def _run_driver(project, folder, name: str, source: str, *extra) -> str:
    """Build a driver of its own against the exported project's sources and run it; its output."""
    return run_c_program(folder, name, source, "-I", project / "include", "-I", project / "src",
                         *sorted(project.glob("src/*.c")), *extra, "-lm")


def toy_lm(prompt: int = len(PROMPT), layers: int = 2, seed: int = 0, writes: bool = True) -> tvm.IRModule:
    """A tiny decoder by the generator contract: embedding (take of a constant table), per layer q/k/v
    projections, K and V written into the layer's caches in place (unless not `writes`: then the caches are
    only read and returned), attention over the whole cache with a causal (prompt) or position (decode) mask,
    output projection and residual; logits of the last token."""
    rng = np.random.default_rng(seed)
    head_dim = DIM // HEADS

    def weight(*shape):
        return relax.const((rng.standard_normal(shape) / np.sqrt(shape[0])).astype("float32"))

    embedding = relax.const(rng.standard_normal((VOCAB, DIM)).astype("float32"))
    weights = [[weight(DIM, DIM) for _ in range(4)] for _ in range(layers)]
    head = weight(DIM, VOCAB)
    cache_ty = relax.TensorType((1, HEADS, CONTEXT, head_dim), "float32")
    bb = relax.BlockBuilder()
    writers = {t: bb.add_func(kv_write(HEADS, CONTEXT, head_dim, t), f"kv_write_{t}") for t in (prompt, 1)}
    for name, t in (("prompt", prompt), ("decode", 1)):
        ids = [relax.Var("tokens", relax.TensorType((t,), "int32"))] if name == "prompt" else \
            [relax.Var(n, relax.TensorType((1,), "int32")) for n in ("token", "position")]
        caches = [relax.Var(f"{kv}_cache_{layer}", cache_ty) for layer in range(layers) for kv in "kv"]
        with bb.function(name, ids + caches):
            with bb.dataflow():
                if name == "prompt":
                    position = relax.const(np.zeros(1, "int32"))
                    i, j = np.arange(t)[:, None], np.arange(CONTEXT)[None, :]
                    mask = relax.const(np.where(j <= i, 0.0, -np.inf).astype("float32"))
                else:
                    position = ids[1]
                    seen = bb.emit(relax.op.less_equal(relax.const(np.arange(CONTEXT, dtype="int32")), position))
                    mask = bb.emit(relax.op.where(seen, relax.const(0.0), relax.const(-np.inf)))
                x = bb.emit(relax.op.take(embedding, ids[0], axis=0))
                written = []
                for layer, (wq, wk, wv, wo) in enumerate(weights):
                    q, k, v = (bb.emit(relax.op.matmul(x, w)) for w in (wq, wk, wv))
                    k_all, v_all = (bb.emit(relax.call_tir_inplace(writers[t], [cache, rows, position], 0, cache_ty))
                                    if writes else cache
                                    for cache, rows in ((caches[2 * layer], k), (caches[2 * layer + 1], v)))
                    written += [k_all, v_all]
                    q = bb.emit(relax.op.permute_dims(relax.op.reshape(q, (1, t, HEADS, head_dim)), [0, 2, 1, 3]))
                    scores = bb.emit(relax.op.matmul(q, relax.op.permute_dims(k_all, [0, 1, 3, 2])))
                    scores = bb.emit(relax.op.add(relax.op.multiply(scores, relax.const(head_dim ** -0.5)), mask))
                    att = bb.emit(relax.op.matmul(relax.op.nn.softmax(scores, axis=-1), v_all))
                    att = bb.emit(relax.op.reshape(relax.op.permute_dims(att, [0, 2, 1, 3]), (t, DIM)))
                    x = bb.emit(relax.op.add(x, relax.op.matmul(att, wo)))
                last = bb.emit(relax.op.strided_slice(x, [0], [t - 1], [t])) if t > 1 else x
                out = bb.emit_output(relax.Tuple([bb.emit(relax.op.matmul(last, head)), *written]))
            bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def expected_tokens():
    """TVM's own llvm build, run step by step in its VM (greedy)."""
    return generate_in_vm(toy_lm(), PROMPT, N_TOKENS, target="llvm")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, expected_tokens):
    """offload -> (Exported, HostRun), each exported, built with sanitizers and run once."""
    cache = {}

    def get(offload: bool):
        if offload not in cache:
            out = tmp_path_factory.mktemp("offload" if offload else "tvm_alone") / "lm"
            # TVM's argument checks validate the tensor descriptors, ASan and UBSan the rest
            exported = export_generator(toy_lm(), tvm_deeploy.target(), out, PROMPT, N_TOKENS, expected_tokens,
                                        offload=offload, checks=True)
            cache[offload] = exported, qemu.run_host(out, sanitize=True)
        return cache[offload]

    return get


def test_reference_generates_varied_tokens(expected_tokens):
    assert len(expected_tokens) == N_TOKENS and len(set(expected_tokens)) > 2
    assert all(0 <= t < VOCAB for t in expected_tokens)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "tvm_alone"])
def test_c_program_generates_tvm_llvm_tokens(offload, generated, expected_tokens):
    exported, run = generated(offload)
    assert run.exit_code == 0 and (run.errors, run.checked) == (0, N_TOKENS), run.output
    assert list(run.tokens) == expected_tokens
    engines = {(op["function"], op["engine"]) for op in exported.report["ops"]}
    for function in ("prompt", "decode"):
        assert ((function, "cluster") in engines) == offload and (function, "tvm") in engines


def test_project_shares_glue_ops_weights_and_one_arena(generated):
    exported, _ = generated(True)
    files = set(exported.files)
    assert {"src/lm.c", "src/lm_glue.c", "src/lm_ops.c", "src/lm_weights.c", "test/main.c"} <= files
    assert not any("test_vectors" in name for name in files)
    header = (exported.out_dir / "include" / "lm.h").read_text()
    for declaration in ("int lm_prompt_run(const struct lm_prompt_inputs *in, struct lm_prompt_outputs *out);",
                        "int lm_decode_run(const struct lm_decode_inputs *in, struct lm_decode_outputs *out);",
                        "  int32_t tokens[4];", "  int32_t token[1];", "  int32_t position[1];",
                        "float *lm_state_k_cache_0(void);", "float *lm_state_v_cache_1(void);",
                        "void lm_state_reset(void);"):
        assert declaration in header
    assert "lm_run(" not in header and "k_cache" not in header.split("struct lm_prompt_inputs")[1].split("};")[0]
    report = exported.report
    functions = report["functions"]
    # steps are numbered across the functions, as the C reports a failed step
    assert functions["prompt"]["steps"][0] == 1
    assert functions["decode"]["steps"] == [functions["prompt"]["steps"][1] + 1, len(report["ops"])]
    plans = [functions[f]["memory"]["L2"]["arena_bytes"] for f in ("prompt", "decode")]
    assert report["memory"]["L2"]["arena_bytes"] == max(plans)  # one activation region for both


def test_report_and_header_hold_the_kv_cache_bytes(generated, expected_tokens):
    exported, _ = generated(True)
    cache_bytes = 2 * 2 * HEADS * CONTEXT * (DIM // HEADS) * 4  # 2 layers, K and V, float32
    state = exported.report["memory"]["state"]
    assert state["arena_bytes"] == cache_bytes and state["level"] == "L2"
    assert list(state["tensors"]) == ["k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]
    assert [t["offset"] for t in state["tensors"].values()] == [0, 1024, 2048, 3072]
    l2 = exported.report["memory"]["L2"]
    assert l2["state_bytes"] == cache_bytes and l2["total_bytes"] == cache_bytes + l2["arena_bytes"]
    header = (exported.out_dir / "include" / "lm.h").read_text()
    assert f"#define LM_STATE_BYTES {cache_bytes}\n" in header
    assert f"#define LM_ARENA_L2_BYTES {l2['total_bytes']}\n" in header
    assert exported.report["generation"] == {
        "prompt_tokens": PROMPT, "n_tokens": N_TOKENS, "expected_tokens": expected_tokens, "context": CONTEXT,
        "vocab": VOCAB, "caches": ["k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]}


def _vm_caches_after_prompt() -> dict[str, np.ndarray]:
    ex = tvm.relax.build(toy_lm(), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    shape = (1, HEADS, CONTEXT, DIM // HEADS)
    caches = {name: tvm.runtime.tensor(np.zeros(shape, "float32"))
              for name in ("k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1")}
    vm["prompt"](tvm.runtime.tensor(np.array(PROMPT, "int32")), *caches.values())
    return {name: tensor.numpy() for name, tensor in caches.items()}


def test_state_accessors_show_the_kv_cache(generated, tmp_path):
    """After the prompt, the state accessors read TVM's caches; the reset zeroes them."""
    exported, _ = generated(True)
    project = exported.out_dir
    printed = _run_driver(project, tmp_path, "caches", """\
#include <stdio.h>
#include "lm.h"
static struct lm_prompt_inputs in = {{3, 7, 1, 30}};
static struct lm_prompt_outputs out;
static void print(const char *name, const float *cache)
{
  long i;
  printf("%s", name);
  for (i = 0; i < LM_STATE_K_CACHE_0_ELEMENTS; ++i) printf(" %.9g", cache[i]);
  printf("\\n");
}
int main(void)
{
  lm_state_reset();
  if (lm_prompt_run(&in, &out) != 0) return 2;
  print("k_cache_0", lm_state_k_cache_0());
  print("v_cache_0", lm_state_v_cache_0());
  print("k_cache_1", lm_state_k_cache_1());
  print("v_cache_1", lm_state_v_cache_1());
  lm_state_reset();
  print("reset", lm_state_v_cache_1());
  return 0;
}
""", project / "hal" / "host.c", "-pthread")
    printed = {line.split()[0]: np.array(line.split()[1:], "float32") for line in printed.splitlines()}
    for name, cache in _vm_caches_after_prompt().items():
        np.testing.assert_allclose(printed[name], cache.reshape(-1), rtol=1e-5, atol=1e-5 * np.abs(cache).max())
        assert np.abs(cache[:, :, len(PROMPT):]).max() == 0  # the prompt wrote its rows only
    assert not printed["reset"].any()


def test_run_command_on_a_generator_project(generated, capfd):
    exported, _ = generated(False)
    assert cli(["run", str(exported.out_dir), "--on", "host"]) == 0
    assert f"Errors: 0 out of {N_TOKENS}" in capfd.readouterr().out


def test_a_wrong_token_fails_the_run(tmp_path, expected_tokens):
    wrong = [(t + 1) % VOCAB if i == 3 else t for i, t in enumerate(expected_tokens)]
    export_generator(toy_lm(), None, tmp_path / "lm", PROMPT, N_TOKENS, wrong)
    run = qemu.run_host(tmp_path / "lm")
    assert run.exit_code == 1 and (run.errors, run.checked) == (1, N_TOKENS) and list(run.tokens) == expected_tokens


def test_export_is_deterministic(generated, tmp_path, expected_tokens):
    """Exported again in a process with another hash seed: the same bytes."""
    exported, _ = generated(True)
    script = ("import sys; sys.path.insert(0, sys.argv[2]); import tvm_deeploy, test_generate as t; "
              "tvm_deeploy.export_generator(t.toy_lm(), tvm_deeploy.target(), sys.argv[1], t.PROMPT, t.N_TOKENS, "
              f"{expected_tokens!r}, checks=True)")
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"  # this process's is random unless set
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "again"), str(REPO / "tests")], check=True, env=env,
                   cwd=REPO, capture_output=True)
    trees = [{p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
              and "build" not in p.relative_to(folder).parts} for folder in (exported.out_dir, tmp_path / "again")]
    assert trees[0] == trees[1] and Path("test/main.c") in trees[0]


# ---- state in a single function ----------------------------------------------------------------------

def stateful(functions: dict[str, tuple[int, bool, bool]]) -> tvm.IRModule:
    """Functions f(row: float32[1, 4], position: int32[1], cache: float32[1, 1, context, 4]) that write
    `row` into the cache at `position` (or not) and return (sum of the cache, the cache) (or the sum only);
    `functions` maps each name to (context, writes, returns)."""
    bb = relax.BlockBuilder()
    for name, (context, writes, returns) in functions.items():
        cache_ty = relax.TensorType((1, 1, context, 4), "float32")
        row = relax.Var("row", relax.TensorType((1, 4), "float32"))
        position = relax.Var("position", relax.TensorType((1,), "int32"))
        cache = relax.Var("cache", cache_ty)
        with bb.function(name, [row, position, cache]):
            with bb.dataflow():
                if writes:
                    write = bb.add_func(kv_write(1, context, 4, 1), f"write_{context}")
                    cache_now = bb.emit(relax.call_tir_inplace(write, [cache, row, position], 0, cache_ty))
                else:
                    cache_now = cache
                total = bb.emit(relax.op.sum(cache_now, axis=[2]))
                out = bb.emit_output(relax.Tuple([total, cache_now]) if returns else total)
            bb.emit_func_output(out)
    return bb.get()


def test_state_of_main_persists_across_calls(tmp_path):
    """`main` with state: net_run keeps the cache between calls, the reset clears it, the struct has no cache."""
    exported = tvm_deeploy.export_c(stateful({"main": (8, True, True)}), tvm_deeploy.target(), tmp_path / "p")
    project = exported.out_dir
    header = (project / "include" / "net.h").read_text()
    assert "float *net_state_cache(void);" in header and "  float cache[" not in header
    assert exported.report["memory"]["state"]["arena_bytes"] == 8 * 4 * 4
    printed = _run_driver(project, tmp_path, "state", """\
#include <stdio.h>
#include "net.h"
int main(void)
{
  static struct net_inputs in;
  static struct net_outputs out;
  int i;
  net_state_reset();
  for (i = 0; i < 3; ++i) {
    in.row[0] = (float)(i + 1);
    in.row[3] = 10.0f;
    in.position[0] = 2 * i;
    if (net_run(&in, &out) != 0) return 2;
    printf("sums %g %g\\n", out.y[0], out.y[3]);
  }
  printf("cache %g %g %g\\n", net_state_cache()[0], net_state_cache()[8], net_state_cache()[16]);
  net_state_reset();
  if (net_run(&in, &out) != 0) return 2;
  printf("after reset %g\\n", out.y[0]);
  return 0;
}
""")
    assert printed.splitlines() == [
        "sums 1 10", "sums 3 20", "sums 6 30", "cache 1 2 3", "after reset 3"]


@T.prim_func(private=True)
def write_k_and_v(k: T.Buffer((1, 1, 8, 4), "float32"), v: T.Buffer((1, 1, 8, 4), "float32"),
                  row: T.Buffer((1, 4), "float32"), position: T.Buffer((1,), "int32")):
    for d in range(4):
        k[0, 0, position[0], d] = row[0, d]
        v[0, 0, position[0], d] = row[0, d] * T.float32(2)


def test_one_call_writing_two_states(tmp_path):
    """A call_tir_inplace with two in-place outputs (a tuple) makes both parameters state."""
    ty = relax.TensorType((1, 1, 8, 4), "float32")
    params = [relax.Var("row", relax.TensorType((1, 4), "float32")),
              relax.Var("position", relax.TensorType((1,), "int32")), relax.Var("k", ty), relax.Var("v", ty)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            write = bb.add_func(write_k_and_v, "write_k_and_v")
            both = bb.emit(relax.call_tir_inplace(write, [params[2], params[3], *params[:2]], [0, 1], [ty, ty]))
            k, v = bb.emit(relax.TupleGetItem(both, 0)), bb.emit(relax.TupleGetItem(both, 1))
            total = bb.emit(relax.op.add(relax.op.sum(k, axis=[2]), relax.op.sum(v, axis=[2])))
            out = bb.emit_output(relax.Tuple([total, k, v]))
        bb.emit_func_output(out)
    # TVM alone (the add would be offloaded, and this driver links no HAL)
    exported = tvm_deeploy.export_c(bb.get(), None, tmp_path / "p", offload=False)
    assert list(exported.report["memory"]["state"]["tensors"]) == ["k", "v"]
    assert exported.report["functions"]["main"]["inputs"] == ["row: float32[1, 4]", "position: int32[1]"]
    printed = _run_driver(exported.out_dir, tmp_path, "pair", """\
#include <stdio.h>
#include "net.h"
int main(void)
{
  static struct net_inputs in;
  static struct net_outputs out;
  int i;
  net_state_reset();
  for (i = 0; i < 2; ++i) {
    in.row[0] = (float)(i + 1);
    in.position[0] = i;
    if (net_run(&in, &out) != 0) return 2;
    printf("%g\\n", out.y[0]);
  }
  printf("%g %g\\n", net_state_k()[4], net_state_v()[4]);
  return 0;
}
""")
    assert printed.split() == ["3", "9", "2", "4"]


# ---- refusals ----------------------------------------------------------------------------------------

def test_state_written_but_not_returned_is_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"main: parameter 'cache' is written in place "
                                                    r"\(call_tir_inplace\) but not returned"):
        tvm_deeploy.export_c(stateful({"main": (8, True, False)}), tvm_deeploy.target(), tmp_path / "p")


def test_state_returned_but_not_written_is_refused(tmp_path):
    mod = stateful({"f": (8, True, True), "g": (8, False, True)})
    with pytest.raises(UnsupportedModelError, match=r"g: parameter 'cache' is state in f \(written in place and "
                                                    r"returned\) but g returns it without writing it"):
        tvm_deeploy.export_c(mod, tvm_deeploy.target(), tmp_path / "p", functions=("f", "g"))


def test_state_shapes_must_agree_across_functions(tmp_path):
    mod = stateful({"f": (8, True, True), "g": (16, True, True)})
    with pytest.raises(UnsupportedModelError, match=r"state tensor 'cache': f has float32\[1, 1, 8, 4\], g has "
                                                    r"float32\[1, 1, 16, 4\]"):
        tvm_deeploy.export_c(mod, tvm_deeploy.target(), tmp_path / "p", functions=("f", "g"))


def test_test_vectors_need_one_stateless_function(tmp_path):
    with pytest.raises(ValueError, match="test vectors are made for one function without state; main has state"):
        tvm_deeploy.export_c(stateful({"main": (8, True, True)}), tvm_deeploy.target(), tmp_path / "p",
                             test_vectors=True)
    with pytest.raises(UnsupportedModelError, match=r"the module has no `decode` function \(its Relax functions: "
                                                    r"main\)"):
        tvm_deeploy.export_c(stateful({"main": (8, True, True)}), None, tmp_path / "p", functions=("main", "decode"))


@pytest.mark.parametrize("change, message", [
    (dict(n_tokens=13), r"4 prompt tokens \+ 13 generated tokens exceed the caches' context of 16 positions"),
    (dict(prompt_tokens=[3, 7, 1]), r"prompt takes 4 tokens, got 3"),
    (dict(prompt_tokens=[3, 7, 1, 32]), r"prompt token 32 is not an id of the vocabulary of 32"),
    (dict(expected_tokens=[1, 2]), r"2 expected tokens for 10 generated tokens"),
    (dict(n_tokens=0), r"n_tokens must be at least 1, got 0"),
])
def test_generation_settings_are_checked(change, message, tmp_path):
    settings = dict(prompt_tokens=PROMPT, n_tokens=N_TOKENS, expected_tokens=None) | change
    with pytest.raises(ContractError, match=message):
        export_generator(toy_lm(layers=1), None, tmp_path / "p", **settings)
    assert not (tmp_path / "p").exists()


def test_kv_cache_counts_against_l2(tmp_path):
    with pytest.raises(ArenaTooSmallError) as err:
        export_generator(toy_lm(), tvm_deeploy.target(l2_bytes=4096), tmp_path / "p", PROMPT, N_TOKENS)
    assert re.match(r"the activations of prompt and the state \(4096 bytes kept across calls\) do not fit L2: they "
                    r"need \d+ bytes of L2, 4096 bytes are available", str(err.value)), str(err.value)
    assert err.value.state_bytes == 4096 and err.value.needed > 4096


def test_modules_off_the_contract_are_refused(tmp_path):
    with pytest.raises(ContractError, match=r"the module has no `prompt` function \(its Relax functions: f\)"):
        export_generator(stateful({"f": (8, True, True)}), None, tmp_path / "p", [1], 1)
    with pytest.raises(ContractError, match=r"prompt: cache k_cache_0, v_cache_0 is not written in place "
                                            r"\(R.call_tir_inplace\) and returned"):
        export_generator(toy_lm(layers=1, writes=False), None, tmp_path / "p", PROMPT, N_TOKENS)
    mod = stateful({"prompt": (8, True, True), "decode": (8, True, True)})
    with pytest.raises(ContractError, match=r"prompt's parameter 'row' is float32\[1, 4\]; the contract wants "
                                            r"int32\[P\]"):
        export_generator(mod, None, tmp_path / "p", [1], 1)


# ---- RV32 under qemu -----------------------------------------------------------------------------------

@pytest.mark.rv32
@pytest.mark.parametrize("harts", [1, 2])
def test_generator_under_qemu(harts, tmp_path, expected_tokens):
    """The same tokens on RV32, with every call's instructions per hart (their sum is the steps' sum)."""
    exported = export_generator(toy_lm(), tvm_deeploy.target(cores=harts, npu=False), tmp_path / "lm", PROMPT,
                                N_TOKENS, expected_tokens)
    run = qemu.run_project(exported.out_dir, harts=harts, timeout=120)
    assert run.exit_code == 0 and run.errors == 0 and list(run.tokens) == expected_tokens, run.output
    assert [(c.function, c.call) for c in run.calls] == [("prompt", 0)] + [("decode", i) for i in range(1, N_TOKENS)]
    assert all(len(c.instructions) == harts and min(c.instructions) > 0 for c in run.calls)  # each call forks
    for hart in range(harts):
        assert sum(c.instructions[hart] for c in run.calls) == run.per_hart_instructions[hart]
    decodes = [c.slowest for c in run.calls[1:]]
    assert run.decode_instructions_per_token == sum(decodes) / len(decodes)
    assert f"decode {run.decode_instructions_per_token:,.0f} per token" in qemu.format_run(run)
