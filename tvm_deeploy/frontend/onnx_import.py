"""Load an ONNX model as a Relax IRModule, with one clear `ModelError` for anything unusable.

    mod = load_onnx("model.onnx")          # a path, or the model's bytes
    ex = tvm.relax.build(mod, target="deeploy")

Checked in order: the file is readable and not empty, it parses as an ONNX protobuf, its nodes can be
put in topological order (they are), every op type has a converter in TVM's ONNX importer (all missing
ones are named), and the importer succeeds. `onnx.checker.check_model`'s complaint is the error when the
import fails too, else a `ModelWarning` (the checker refuses e.g. LayerNormalization below opset 17,
which TVM imports). Weights become Relax constants, which is what the deeploy patterns match. A dynamic shape
that imports stays symbolic: the deeploy checks refuse it and TVM runs that part. Deeploy's integer
dialect and conventions (zero-length inputs as empty constants, Pad's opset-2 form) are `deeploy_dialect`'s.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import os
import re
import warnings
from collections.abc import Iterator

import onnx
import tvm
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

from . import deeploy_dialect

# Op types the importer converts without an entry in its converter map.
_DIRECTLY_HANDLED = frozenset({"Constant", "If"})


class ModelError(ValueError):
    """The ONNX model cannot be read, is invalid, or TVM cannot import it."""


class ModelWarning(UserWarning):
    """The ONNX checker complains about a model that TVM imports anyway."""


def load_onnx(source: str | os.PathLike | bytes, inputs=None, input_dtypes: dict[str, str] | None = None
              ) -> tvm.IRModule:
    """The Relax module of an ONNX model given as a path or as bytes; raises `ModelError`. A checker
    complaint about a model TVM imports anyway (e.g. LayerNormalization at opset 12) is a `ModelWarning`.
    Deeploy's integer dialect imports as integer Relax (`deeploy_dialect`); `inputs` (sample arrays) or
    `input_dtypes` ({input: dtype}) type its inputs."""
    name, model = _parse(source)
    _sort_nodes(name, model.graph)
    try:
        dialect = deeploy_dialect.prepare(model, inputs, input_dtypes)
    except deeploy_dialect.DialectError as err:
        raise ModelError(f"{name}: {err}") from err
    packed = _packed_tensors(model.graph)
    if packed:
        raise ModelError(f"{name}: TVM's ONNX importer cannot read packed sub-byte tensors: {', '.join(packed)}")
    known = set(_get_convert_map()) | dialect.converter_names()
    missing = sorted(set(_op_types(model.graph)) - known - _DIRECTLY_HANDLED)
    if missing:
        raise ModelError(f"{name}: TVM's ONNX importer does not support operator(s) {', '.join(missing)}")
    try:
        onnx.checker.check_model(model)
        complaint = None
    except Exception as err:  # ValidationError, or ValueError for a proto over 2 GiB
        complaint = None if dialect.excuses(str(err)) else _brief(err)
    log = io.StringIO()  # the importer prints the failing operator to stdout
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            if complaint is not None:  # the importer repeats the checker's complaint as a warning
                warnings.filterwarnings("ignore", message=re.escape(complaint[:60]))
            if dialect.active:  # and its complaint about the dialect's op types
                warnings.filterwarnings("ignore", message=".*No (Op registered|opset import)")
            with dialect.registered():
                mod = from_onnx(model, dtype_dict=dialect.dtypes, keep_params_in_input=False)
    except Exception as err:
        if complaint is not None:
            raise ModelError(f"{name}: not a valid ONNX model: {complaint}") from err
        failing = re.search(r"Error converting operator (\S+),", log.getvalue())
        where = f" at operator {failing.group(1)}" if failing else ""
        dynamic = _dynamic_inputs(model.graph)
        note = f" (inputs with dynamic shapes: {'; '.join(dynamic)})" if dynamic else ""
        raise ModelError(f"{name}: TVM cannot import the model{where}: "
                         f"{type(err).__name__}: {_brief(err)}{note}") from err
    if complaint is not None:
        warnings.warn(f"{name}: the ONNX checker complains ({complaint}); TVM imported the model anyway",
                      ModelWarning, stacklevel=2)
    return mod


def _sort_nodes(name: str, graph: onnx.GraphProto) -> None:
    """Put the graph's nodes in topological order (exporters do not always), keeping the given order
    among independent nodes; refuses a cycle. Names produced outside the graph's nodes (inputs,
    initializers, outer scopes) count as available."""
    produced = {output: index for index, node in enumerate(graph.node) for output in node.output if output}
    users: list[list[int]] = [[] for _ in graph.node]
    waiting = []
    for index, node in enumerate(graph.node):
        needed = {produced[i] for i in _node_inputs(node) if i in produced} - {index}
        for producer in needed:
            users[producer].append(index)
        waiting.append(len(needed))
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)  # the smallest ready index first keeps the given order where it is valid
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users[index]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) < len(graph.node):
        stuck = [graph.node[i].name or graph.node[i].op_type for i in sorted(set(range(len(waiting))) - set(order))]
        raise ModelError(f"{name}: the graph has a cycle through node(s) {', '.join(stuck[:5])}")
    if order != list(range(len(graph.node))):
        nodes = [onnx.NodeProto() for _ in order]
        for target, index in zip(nodes, order):
            target.CopyFrom(graph.node[index])
        del graph.node[:]
        graph.node.extend(nodes)


# Element types stored two per byte, which TVM's importer copies as if one per byte.
_PACKED_TYPES = {getattr(onnx.TensorProto, t): t.lower() for t in ("INT4", "UINT4", "FLOAT4E2M1")
                 if hasattr(onnx.TensorProto, t)}


def _packed_tensors(graph: onnx.GraphProto) -> list[str]:
    """`'name' (int4)` for each initializer, input or output of a packed sub-byte type."""
    typed = [(t.name, t.data_type) for t in graph.initializer]
    typed += [(v.name, v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output)]
    return [f"'{tensor}' ({_PACKED_TYPES[kind]})" for tensor, kind in typed if kind in _PACKED_TYPES]


def _node_inputs(node: onnx.NodeProto) -> Iterator[str]:
    """The names a node reads, including those its subgraphs read from the outer scope."""
    yield from (i for i in node.input if i)
    for attr in node.attribute:
        for subgraph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in subgraph.node:
                yield from _node_inputs(inner)


def _parse(source) -> tuple[str, onnx.ModelProto]:
    """(name for messages, parsed model); external data is read from next to a model file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data, base_dir = "<bytes>", bytes(source), None
    else:
        name = os.fspath(source)
        base_dir = os.path.dirname(name)
        try:
            with open(name, "rb") as file:
                data = file.read()
        except OSError as err:
            raise ModelError(f"{name}: cannot read the file: {err.strerror or err}") from err
    if not data:
        raise ModelError(f"{name}: empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except DecodeError as err:
        raise ModelError(f"{name}: not a valid ONNX model: truncated or corrupt protobuf "
                         f"({len(data)} bytes)") from err
    if base_dir is not None:
        try:
            load_external_data_for_model(model, base_dir)
        except OSError as err:
            raise ModelError(f"{name}: cannot read external data: {err}") from err
    return name, model


def _op_types(graph: onnx.GraphProto) -> Iterator[str]:
    """Op types of the graph's nodes, including those of subgraphs (If branches, loop bodies)."""
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            for subgraph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _op_types(subgraph)


def _dynamic_inputs(graph: onnx.GraphProto) -> list[str]:
    """`name[dims]` of the graph inputs with a symbolic or unknown dimension."""
    initializers = {init.name for init in graph.initializer}
    found = []
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and any(not d.HasField("dim_value") for d in dims):
            shape = ", ".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims)
            found.append(f"{value.name}[{shape}]")
    return found


def _brief(err: Exception, limit: int = 400) -> str:
    """An error message on one line, without the checker's context dumps or TVM's metadata notes."""
    text = str(err).split("==> Context:")[0].replace("# Metadata omitted. Use show_meta=True in script() "
                                                      "method to show it.", "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
