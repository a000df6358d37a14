"""`export_generator`: a language model as a standalone C program that generates tokens greedily.

    tvm_deeploy.export_generator(mod, tvm_deeploy.target(), "out", prompt_tokens=[1, 5, 9], n_tokens=16,
                                 expected_tokens=tvm_deeploy.generate_in_vm(mod, [1, 5, 9], 16))

The module follows the generator contract: two Relax functions sharing PrimFuncs and constants,

    prompt(tokens: int32[P], <caches>)                  -> (logits[1, vocab], <caches>)
    decode(token: int32[1], position: int32[1], <caches>) -> (logits[1, vocab], <caches>)

every cache a [1, kv_heads, context, head_dim] tensor that the function writes in place
(R.call_tir_inplace) and returns, so it is state of the exported program: one tensor per name, kept in
the arena across calls. The project is `export_c(functions=("prompt", "decode"))` plus a driver,
test/main.c: it resets the state, runs the prompt, then n_tokens - 1 decode calls, each fed the previous
token (the first index of the largest logit, as np.argmax) at positions P, P + 1, ...; it prints
`Token i: id` per generated token and, with expected tokens, `Errors: E out of N`. Built with DPL_PROFILE
(`make rv32`) it prints the instructions per hart of every call (`Profile prompt: ...`,
`Profile decode i: ...`), which `tvm_deeploy.targets.qemu.run_project` parses. `generate_in_vm` runs the same loop
in TVM's VM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..emit.c import c_items, render
from . import project as proj
from .export import Exported, Project, build_project, load_in_vm, write_project
from .lower import ExportError, static_tensor

PROMPT, DECODE = "prompt", "decode"
DRIVER = "test/main.c"


class ContractError(ExportError):
    """The module or the generation settings do not follow the generator contract (the message says where)."""


@dataclass(frozen=True)
class Contract:
    """What the driver needs to know about a module that follows the contract."""

    prompt_length: int  # P
    context: int  # positions every cache holds
    vocab: int
    caches: tuple[str, ...]  # cache parameter names, in prompt's order


def _tensor(param_or_ty, what: str) -> tuple[tuple[int, ...], str]:
    try:
        return static_tensor(param_or_ty, what)
    except ExportError as err:
        raise ContractError(str(err)) from None


def _ids(param: relax.Var, function: str, length: int | None) -> int:
    """A token-id parameter: int32[length] (any length when None); its length."""
    shape, dtype = _tensor(param.ty, f"{function}'s parameter '{param.name}'")
    if dtype != "int32" or len(shape) != 1 or (length is not None and shape[0] != length):
        wanted = f"int32[{length}]" if length is not None else "int32[P]"
        raise ContractError(f"{function}'s parameter '{param.name}' is {dtype}{list(shape)}; the contract wants "
                            f"{wanted}")
    return shape[0]


def _caches(function: relax.Function, name: str, skip: int) -> dict[str, tuple[int, ...]]:
    caches = {}
    for param in function.params[skip:]:
        shape, dtype = _tensor(param.ty, f"{name}'s cache '{param.name}'")
        if len(shape) != 4 or shape[0] != 1:
            raise ContractError(f"{name}'s cache '{param.name}' is {dtype}{list(shape)}; a cache is "
                                "[1, kv_heads, context, head_dim]")
        caches[param.name] = shape
    return caches


def _logits(function: relax.Function, name: str, caches: int) -> int:
    """The vocabulary size of a function that returns (logits[1, vocab], <caches>)."""
    ty = function.ret_ty
    if not isinstance(ty, relax.TupleType) or len(ty.fields) != 1 + caches:
        got = f"a tuple of {len(ty.fields)}" if isinstance(ty, relax.TupleType) else str(ty)
        raise ContractError(f"{name} returns {got}; the contract wants a tuple of the logits and its {caches} "
                            "caches")
    shape, dtype = _tensor(ty.fields[0], f"{name}'s logits")
    if len(shape) != 2 or shape[0] != 1:
        raise ContractError(f"{name}'s logits are {dtype}{list(shape)}; the contract wants [1, vocab]")
    return shape[1]


def check_contract(mod: tvm.IRModule) -> Contract:
    """The module's prompt and decode functions against the contract (module docstring); raises
    ContractError naming the function, tensor and shape that do not fit."""
    functions = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
    for name in (PROMPT, DECODE):
        if name not in functions:
            raise ContractError(f"the module has no `{name}` function (its Relax functions: "
                                f"{', '.join(sorted(functions)) or 'none'}); a generator needs prompt(tokens, "
                                "caches...) and decode(token, position, caches...)")
    prompt, decode = functions[PROMPT], functions[DECODE]
    if len(prompt.params) < 2 or len(decode.params) < 3:
        raise ContractError(f"prompt takes {len(prompt.params)} and decode {len(decode.params)} parameters; the "
                            "contract wants prompt(tokens, caches...) and decode(token, position, caches...) with at "
                            "least one cache")
    length = _ids(prompt.params[0], PROMPT, None)
    _ids(decode.params[0], DECODE, 1)
    _ids(decode.params[1], DECODE, 1)
    prompt_caches, decode_caches = _caches(prompt, PROMPT, 1), _caches(decode, DECODE, 2)
    if set(prompt_caches) != set(decode_caches):
        raise ContractError(f"prompt's caches ({', '.join(prompt_caches)}) and decode's "
                            f"({', '.join(decode_caches)}) differ; the functions share them by name")
    contexts = {shape[2] for shape in prompt_caches.values()}
    if len(contexts) != 1:
        raise ContractError(f"the caches hold different contexts: {sorted(contexts)} positions")
    vocab = _logits(prompt, PROMPT, len(prompt_caches))
    if _logits(decode, DECODE, len(decode_caches)) != vocab:
        raise ContractError(f"prompt's logits have {vocab} entries, decode's "
                            f"{_logits(decode, DECODE, len(decode_caches))}")
    return Contract(length, contexts.pop(), vocab, tuple(prompt_caches))


def check_generation(contract: Contract, prompt_tokens, n_tokens: int, expected_tokens=None) -> None:
    """The prompt, token count and expected tokens against the module's contract."""
    if len(prompt_tokens) != contract.prompt_length:
        raise ContractError(f"prompt takes {contract.prompt_length} tokens, got {len(prompt_tokens)}")
    bad = [int(t) for t in prompt_tokens if not 0 <= int(t) < contract.vocab]
    if bad:
        raise ContractError(f"prompt token {bad[0]} is not an id of the vocabulary of {contract.vocab}")
    if n_tokens < 1:
        raise ContractError(f"n_tokens must be at least 1, got {n_tokens}")
    if contract.prompt_length + n_tokens > contract.context:
        raise ContractError(f"{contract.prompt_length} prompt tokens + {n_tokens} generated tokens exceed the "
                            f"caches' context of {contract.context} positions")
    if expected_tokens is not None and len(expected_tokens) != n_tokens:
        raise ContractError(f"{len(expected_tokens)} expected tokens for {n_tokens} generated tokens")


def generate_in_vm(mod: tvm.IRModule, prompt_tokens, n_tokens: int, target="llvm") -> list[int]:
    """Greedy generation with TVM's own build of `mod` for `target` in its VM: the reference of the C
    driver. The VM writes the caches in place, so the same tensors carry the state from call to call."""
    contract = check_contract(mod)
    check_generation(contract, prompt_tokens, n_tokens)
    vm = load_in_vm(mod, target)
    caches = {}
    for param in mod[PROMPT].params[1:]:
        shape, dtype = static_tensor(param.ty, param.name)
        caches[param.name] = tvm.runtime.tensor(np.zeros(shape, dtype))

    def run(function: str, *ids: np.ndarray) -> int:
        names = [p.name for p in mod[function].params[len(ids):]]
        logits = vm[function](*[tvm.runtime.tensor(x) for x in ids], *[caches[n] for n in names])[0]
        return int(np.argmax(logits.numpy()))

    tokens = [run(PROMPT, np.asarray(prompt_tokens, "int32"))]
    for i in range(1, n_tokens):
        position = contract.prompt_length + i - 1
        tokens.append(run(DECODE, np.array([tokens[-1]], "int32"), np.array([position], "int32")))
    return tokens


# ---- the driver ----------------------------------------------------------------------------------

def _entries(project: Project, contract: Contract) -> tuple[proj.Entry, proj.Entry]:
    """prompt's and decode's entries, checked: every cache is state (so the driver's structs hold only the
    token ids and the logits)."""
    entries = {e.function: e for e in project.input.entries}
    for entry in entries.values():
        missing = [name for name in contract.caches if name not in entry.program.state]
        if missing:
            raise ContractError(f"{entry.function}: cache {', '.join(missing)} is not written in place "
                                "(R.call_tir_inplace) and returned, so it would not stay in the program between "
                                "calls")
    return entries[PROMPT], entries[DECODE]


def driver_source(project: Project, contract: Contract, prompt_tokens, n_tokens: int, expected_tokens=None) -> str:
    """test/main.c of a generator project (see the module docstring)."""
    prompt, decode = _entries(project, contract)
    prefix = project.input.prefix
    logits = prompt.program.values[prompt.program.outputs[0]]
    is_float = logits.dtype.startswith("float")
    expected = "" if expected_tokens is None else (
        f"static const int32_t expected_tokens[GENERATED_TOKENS] = {{\n{c_items(expected_tokens, 'int32')}\n}};\n")
    return render(
        "generate_main.c.tmpl", prefix=prefix, n_tokens=n_tokens, n_prompt=len(prompt_tokens), n_decode=n_tokens - 1,
        vocab=logits.elements, prompt_tokens=c_items(prompt_tokens, "int32"), expected=expected,
        checking=" * Exits 2 when a call fails." if expected_tokens is None else
        ' * It compares them with the expected tokens, printing "Errors: E out of N"; exits 1 when a token\n'
        " * differs, 2 when a call fails.",
        logits_ctype=proj.ctype(logits.dtype), nan_note=" (a NaN counts as the largest)" if is_float else "",
        # as np.argmax: the first NaN wins
        greater="logits[i] > logits[best] || (logits[i] != logits[i] && logits[best] == logits[best])"
        if is_float else "logits[i] > logits[best]",
        token_differs="0" if expected_tokens is None else "token != expected_tokens[i]",
        print_profile=proj.PRINT_STEP_PROFILE, tokens=prompt.placement.io_fields[prompt.program.inputs[0]],
        prompt_logits=prompt.placement.io_fields[prompt.program.outputs[0]],
        token=decode.placement.io_fields[decode.program.inputs[0]],
        position=decode.placement.io_fields[decode.program.inputs[1]],
        decode_logits=decode.placement.io_fields[decode.program.outputs[0]],
        errors_line="" if expected_tokens is None else
        '  printf("Errors: %ld out of %d\\n", errors, GENERATED_TOKENS);\n')


def export_generator(mod: tvm.IRModule, target, out_dir, prompt_tokens, n_tokens: int, expected_tokens=None,
                     prefix: str = "lm", offload: bool = True, **export_kwargs) -> Exported:
    """Write the generator project of `mod` (module docstring) into `out_dir`: export_c of prompt and
    decode (`export_kwargs` as there) with the generation driver as test/main.c, and report.json's
    "generation" entry (prompt, token count, expected tokens, context, vocabulary). Raises ContractError
    when the module or the settings break the contract, and export_c's errors."""
    contract = check_contract(mod)
    prompt_tokens = [int(t) for t in prompt_tokens]
    expected_tokens = None if expected_tokens is None else [int(t) for t in expected_tokens]
    check_generation(contract, prompt_tokens, n_tokens, expected_tokens)
    project = build_project(mod, target, prefix, functions=(PROMPT, DECODE), offload=offload, test_vectors=False,
                            **export_kwargs)
    files = dict(project.files)
    files[DRIVER] = driver_source(project, contract, prompt_tokens, n_tokens, expected_tokens)
    report = dict(project.report, generation={
        "prompt_tokens": prompt_tokens, "n_tokens": n_tokens, "expected_tokens": expected_tokens,
        "context": contract.context, "vocab": contract.vocab, "caches": list(contract.caches)})
    return write_project(Project(files, report, project.input), out_dir)
