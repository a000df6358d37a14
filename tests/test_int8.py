"""int8 GEMMs: bit-exact against the package's reference, within 1 LSB of TVM's float-defined QDQ build,
and bit-exact against TVM for purely integer graphs."""

import numpy as np
import pytest
from conftest import build_and_run, offloaded
from test_patterns import graph
from tvm import relax

from tvm_deeploy.models import int8_mlp
from tvm_deeploy.offload import reference


def qdq_gemm_module(x_shape, weight_q, w_scale, w_zp, x_scale, x_zp, y_scale, y_zp, bias=None,
                    bias_form="float", weight_input=False, transposed=False):
    """dequantize(x) @ dequantize(W) [+ bias] -> quantize, W constant (or an input) in [k, n]
    layout, or [n, k] behind a permute_dims when `transposed`."""
    n = weight_q.shape[1]
    stored = weight_q.T.copy() if transposed else weight_q
    inputs = [(x_shape, "int8")] + ([(stored.shape, "int8")] if weight_input else [])

    def body(bb, x, *w_in):
        w_data = w_in[0] if weight_input else relax.const(stored)
        axis = 0 if transposed else 1
        xd = bb.emit(relax.op.dequantize(x, relax.const(x_scale, "float32"), relax.const(x_zp, "int8")))
        wd = bb.emit(relax.op.dequantize(w_data, relax.const(w_scale), relax.const(w_zp), axis=axis))
        if transposed:
            wd = bb.emit(relax.op.permute_dims(wd))
        y = bb.emit(relax.op.matmul(xd, wd))
        if bias is not None:
            if bias_form == "float":
                b = relax.const(bias.astype("float32"))
            else:  # int32 in accumulator units, dequantized as ONNX QDQ exporters write it
                acc_scale = (np.float32(x_scale) * w_scale).astype("float32")
                b = bb.emit(relax.op.dequantize(relax.const(bias.astype("int32")), relax.const(acc_scale),
                                                relax.const(np.zeros(n, "int32")), axis=0))
            y = bb.emit(relax.op.add(y, b))
        return relax.op.quantize(y, relax.const(y_scale, "float32"), relax.const(y_zp, "int8"), out_dtype="int8")

    return graph(inputs, body)


def expected_qdq(x_q, weight_q, w_scale, w_zp, x_scale, x_zp, y_scale, y_zp, bias=None, bias_form="float"):
    """The reference semantics, derived here from the scales independently of the codegen."""
    n = weight_q.shape[1]
    acc_scale = np.float64(np.float32(x_scale)) * np.broadcast_to(w_scale.astype(np.float64), (n,))
    mul, shift = reference.quantize_multiplier(acc_scale / np.float64(np.float32(y_scale)))
    bias_q = None
    if bias is not None:
        bias_q = (np.rint(bias.astype(np.float64) / acc_scale) if bias_form == "float" else bias).astype(np.int32)
    requant = reference.Requant("fixed", bias=bias_q, mul=mul, shift=shift, out_zp=y_zp)
    flat = x_q.reshape(-1, x_q.shape[-1])
    out = reference.gemm_s8(flat, weight_q, a_zp=x_zp, b_zp=int(np.asarray(w_zp).reshape(-1)[0]), requant=requant)
    return out.reshape(x_q.shape[:-1] + (n,))


def _layer(rng, k, n, per_channel=True, w_zp=0):
    weight_q = rng.integers(-127, 128, (k, n)).astype("int8")
    w_scale = (rng.uniform(0.002, 0.02, n) if per_channel else np.full(1, 0.01)).astype("float32")
    zp = np.full(n if per_channel else 1, w_zp, "int8")
    return weight_q, w_scale, zp


QDQ_CASES = {
    "per-channel, bias, zero points": dict(per_channel=True, bias="float", x_zp=3, y_zp=-5),
    "per-tensor, no bias": dict(per_channel=False, bias=None, x_zp=0, y_zp=0),
    "int32 dequantized bias": dict(per_channel=True, bias="int32", x_zp=-7, y_zp=4),
    "weight zero point": dict(per_channel=False, bias="float", x_zp=2, y_zp=1, w_zp=5),
    "transposed weight": dict(per_channel=True, bias="float", x_zp=1, y_zp=0, transposed=True),
    "weight as input": dict(per_channel=True, bias=None, x_zp=9, y_zp=-2, weight_input=True),
    "batched activation": dict(per_channel=True, bias="float", x_zp=3, y_zp=0, x_shape=(2, 8, 64)),
}


@pytest.mark.parametrize("name", sorted(QDQ_CASES))
def test_qdq_gemm(name, tmp_path):
    case = QDQ_CASES[name]
    rng = np.random.default_rng(sorted(QDQ_CASES).index(name))
    x_shape = case.get("x_shape", (16, 64))
    weight_q, w_scale, w_zp = _layer(rng, x_shape[-1], 24, case["per_channel"], case.get("w_zp", 0))
    bias = None
    if case["bias"] == "float":
        bias = rng.standard_normal(24).astype("float32")
    elif case["bias"] == "int32":
        bias = rng.integers(-5000, 5000, 24).astype("int32")
    params = dict(x_scale=0.05, x_zp=case["x_zp"], y_scale=0.08, y_zp=case["y_zp"], bias=bias,
                  bias_form=case["bias"] or "float")
    mod = qdq_gemm_module(x_shape, weight_q, w_scale, w_zp, weight_input=case.get("weight_input", False),
                          transposed=case.get("transposed", False), **params)
    assert offloaded(mod) == ["gemm_qdq"]
    x_q = rng.integers(-128, 128, x_shape).astype("int8")
    if case.get("weight_input"):
        inputs = [x_q, weight_q]
    else:
        inputs = [x_q]
    ours = build_and_run(mod, "deeploy", inputs, tmp_path)
    np.testing.assert_array_equal(ours, expected_qdq(x_q, weight_q, w_scale, w_zp, **params))
    tvm_float = build_and_run(mod, "llvm", inputs, tmp_path)
    assert np.abs(ours.astype(np.int32) - tvm_float).max() <= 1


def test_qdq_64x256x64_differs_from_tvm_float_on_under_one_percent(tmp_path):
    rng = np.random.default_rng(64)
    weight_q, w_scale, w_zp = _layer(rng, 256, 64)
    bias = rng.standard_normal(64).astype("float32")
    params = dict(x_scale=0.02, x_zp=-3, y_scale=0.25, y_zp=2, bias=bias)
    mod = qdq_gemm_module((64, 256), weight_q, w_scale, w_zp, **params)
    x_q = rng.integers(-128, 128, (64, 256)).astype("int8")
    ours = build_and_run(mod, "deeploy", [x_q], tmp_path)
    np.testing.assert_array_equal(ours, expected_qdq(x_q, weight_q, w_scale, w_zp, **params))
    diff = np.abs(ours.astype(np.int32) - build_and_run(mod, "llvm", [x_q], tmp_path))
    fraction = float((diff > 0).mean())
    print(f"\nint8 QDQ GEMM 64x256x64: max |ours - TVM llvm| = {diff.max()} LSB, "
          f"{fraction:.4%} of {diff.size} elements differ")
    assert diff.max() <= 1
    assert fraction < 0.01


def test_two_layer_qdq_mlp(tmp_path):
    """Chained QDQ layers: each layer bit-exact given its input; 1 LSB of TVM can propagate through
    a later layer, so only the first layer is held to 1 LSB end to end."""
    mod = int8_mlp()
    assert offloaded(mod) == ["gemm_qdq", "gemm_qdq"]
    x_q = np.random.default_rng(5).integers(-128, 128, (16, 64)).astype("int8")
    ours = build_and_run(mod, "deeploy", [x_q], tmp_path)
    tvm_float = build_and_run(mod, "llvm", [x_q], tmp_path)
    assert np.abs(ours.astype(np.int32) - tvm_float).max() <= 2


def int_requant_module(x_shape, weight_q, bias, mul, add, shift, out_zp, lo, hi):
    def body(bb, x):
        acc = bb.emit(relax.op.matmul(x, relax.const(weight_q), out_dtype="int32"))
        if bias is not None:
            acc = bb.emit(relax.op.add(acc, relax.const(bias)))
        if mul is not None:
            acc = bb.emit(relax.op.multiply(acc, relax.const(mul)))
        if add is not None:
            acc = bb.emit(relax.op.add(acc, relax.const(add)))
        acc = bb.emit(relax.op.right_shift(acc, relax.const(shift)))
        if out_zp:
            acc = bb.emit(relax.op.add(acc, relax.const(np.int32(out_zp))))
        return relax.op.astype(bb.emit(relax.op.clip(acc, lo, hi)), "int8")

    return graph([(x_shape, "int8")], body)


INT_CASES = {
    "full": dict(bias=True, mul="vector", add=True, shift=12, out_zp=-3, lo=-128, hi=127),
    "scalar multiplier": dict(bias=True, mul="scalar", add=False, shift=9, out_zp=0, lo=-128, hi=127),
    "shift only, relu clip": dict(bias=False, mul=None, add=False, shift=7, out_zp=0, lo=0, hi=127),
}


@pytest.mark.parametrize("name", sorted(INT_CASES))
def test_integer_requantized_gemm_is_bit_exact(name, tmp_path):
    case = INT_CASES[name]
    rng = np.random.default_rng(len(name))
    k, n = 48, 20
    weight_q = rng.integers(-128, 128, (k, n)).astype("int8")
    bias = rng.integers(-2000, 2000, n).astype("int32") if case["bias"] else None
    mul = {None: None, "scalar": np.int32(181), "vector": rng.integers(50, 300, n).astype("int32")}[case["mul"]]
    add = np.full(n, 1 << (case["shift"] - 1), "int32") if case["add"] else None
    shift = np.int32(case["shift"])
    mod = int_requant_module((12, k), weight_q, bias, mul, add, shift, case["out_zp"], case["lo"], case["hi"])
    assert offloaded(mod) == ["gemm_int_requant"]
    x_q = rng.integers(-128, 128, (12, k)).astype("int8")
    ours = build_and_run(mod, "deeploy", [x_q], tmp_path)
    np.testing.assert_array_equal(ours, build_and_run(mod, "llvm", [x_q], tmp_path))
    requant = reference.Requant(
        "int_ops", bias=bias, mul=None if mul is None else np.broadcast_to(mul, (n,)).astype(np.int32),
        add=add, shift=np.full(n, shift, np.int32), out_zp=case["out_zp"], lo=case["lo"], hi=case["hi"])
    np.testing.assert_array_equal(ours, reference.gemm_s8(x_q, weight_q, requant=requant))


def test_int8_clip_beyond_int8_stays_in_tvm():
    weight_q = np.ones((8, 4), "int8")
    mod = int_requant_module((2, 8), weight_q, None, None, None, np.int32(2), 0, -300, 300)
    assert offloaded(mod) == ["matmul"]
