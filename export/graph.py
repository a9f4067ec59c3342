"""ONNX graph building and rewriting: torch → ONNX, BatchNorm folding, offline optimisation.

All functions take and return :class:`onnx.ModelProto` objects (in memory); nothing here
writes the final model file (that is :mod:`deepmine.export.exporter`'s job, atomically).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deepmine.inference.errors import DeepmineError, first_line

#: Offline optimisation levels: both keep to standard ONNX operators, so the saved graph runs
#: on any execution provider; the scanner's session applies the hardware-specific (ALL) level.
OPTIMIZATION_LEVELS = ("basic", "extended")


class ExportError(DeepmineError):
    """The model could not be turned into a correct ONNX graph (exit status 1)."""


class ExportWarning(UserWarning):
    """Something the user should know about an exported model (fallback exporter, int8 RP)."""


def torch_to_onnx(wrapper, example, input_name: str, output_names: list[str]) -> tuple[onnx.ModelProto, dict]:
    """Export ``wrapper`` (eval mode) with a dynamic batch axis; return the graph and how.

    Uses ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript) with
    ``dynamic_shapes`` on axis 0 and an example batch of at least 2 (a batch of 1 would be
    specialised). Falls back to the TorchScript exporter only if the dynamo path raises; the
    reason is returned (and warned) so that it lands in the model's metadata.
    """
    import torch

    if example.shape[0] < 2:
        example = torch.cat([example, example], dim=0)
    wrapper = wrapper.eval()
    info: dict = {"exporter": "dynamo", "torch": torch.__version__}
    with torch.no_grad(), _quiet_torch_logs():
        try:
            batch = torch.export.Dim("batch", min=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    wrapper, (example,), dynamo=True, input_names=[input_name], output_names=output_names,
                    dynamic_shapes={input_name: {0: batch}}, optimize=True, verbose=False,
                )  # fmt: skip
            model = program.model_proto
        except Exception as exc:  # noqa: BLE001 - any failure of the dynamo path triggers the fallback
            reason = f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}"
            warnings.warn(
                f"dynamo ONNX export failed ({reason}); falling back to the TorchScript exporter",
                ExportWarning, stacklevel=2,
            )  # fmt: skip
            info = {"exporter": "torchscript", "fallback_reason": reason[:500], "torch": torch.__version__}
            model = _legacy_export(wrapper, example, input_name, output_names)
    info["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return model, info


@contextlib.contextmanager
def _quiet_torch_logs():
    """Silence the exporter's notes that do not concern deepmine (e.g. torchvision not installed)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _legacy_export(wrapper, example, input_name: str, output_names: list[str]) -> onnx.ModelProto:
    import io

    import torch

    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), buf, dynamo=False, input_names=[input_name], output_names=output_names,
            dynamic_axes=axes, opset_version=17, do_constant_folding=True,
        )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Number of nodes of each operator type in the main graph."""
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def _rank_of(model: onnx.ModelProto, name: str) -> int | None:
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Fold every inference-mode ``BatchNormalization`` into constants.

    A BatchNorm in eval mode is the per-channel affine map ``y = a·x + b`` with
    ``a = γ / sqrt(σ² + ε)`` and ``b = β − μ·a``. When its input comes from a ``Conv`` that
    feeds nothing else, ``a`` and ``b`` are folded into that convolution's weights and bias.
    Otherwise (EZnet's BatchNorm → tanh → conv blocks act on concatenated, resized feature
    maps, which no single convolution produces) the node becomes ``Mul(x, a)`` → ``Add(·, b)``
    with precomputed constants. Returns a new model and ``{"into_conv": k, "to_affine": m}``.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses = collections.Counter(i for n in g.node for i in n.input)
    uses.update(o.name for o in g.output)
    folded = {"into_conv": 0, "to_affine": 0}
    new_nodes, drop = [], set()
    replaced: dict[str, list] = {}
    for node in g.node:
        if node.op_type != "BatchNormalization":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("training_mode", 0) or len([o for o in node.output if o]) != 1:
            continue
        x, scale, bias, mean, var = node.input[:5]
        if not all(k in inits for k in (scale, bias, mean, var)):
            continue
        eps = float(attrs.get("epsilon", 1e-5))
        s, b, m, v = (numpy_helper.to_array(inits[k]).astype(np.float64) for k in (scale, bias, mean, var))
        a = s / np.sqrt(v + eps)
        shift = b - m * a
        conv = producer.get(x)
        if (
            conv is not None and conv.op_type == "Conv" and uses[x] == 1 and conv.input[1] in inits
            and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in inits)
            and uses[conv.input[1]] == 1 and (len(conv.input) < 3 or not conv.input[2] or uses[conv.input[2]] == 1)
        ):  # fmt: skip
            w = numpy_helper.to_array(inits[conv.input[1]])
            dtype = w.dtype
            w = (w.astype(np.float64) * a.reshape(-1, *([1] * (w.ndim - 1)))).astype(dtype)
            inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w, conv.input[1]))
            if len(conv.input) >= 3 and conv.input[2]:
                cb = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
                inits[conv.input[2]].CopyFrom(numpy_helper.from_array((cb * a + shift).astype(dtype), conv.input[2]))
            else:
                bname = f"{conv.name or conv.output[0]}_folded_bias"
                g.initializer.append(numpy_helper.from_array(shift.astype(dtype), bname))
                while len(conv.input) < 3:
                    conv.input.append("")
                conv.input[2] = bname
            conv.output[0] = node.output[0]
            drop.add(id(node))
            folded["into_conv"] += 1
        else:
            rank = _rank_of(model, x) or 4
            dtype = numpy_helper.to_array(inits[scale]).dtype
            shape = (-1, *([1] * max(rank - 2, 0)))
            base = node.name or node.output[0]
            an, bn, mid = f"{base}_scale", f"{base}_shift", f"{base}_scaled"
            g.initializer.extend([
                numpy_helper.from_array(a.reshape(shape).astype(dtype), an),
                numpy_helper.from_array(shift.reshape(shape).astype(dtype), bn),
            ])  # fmt: skip
            replaced[id(node)] = [
                helper.make_node("Mul", [x, an], [mid], name=f"{base}_mul"),
                helper.make_node("Add", [mid, bn], [node.output[0]], name=f"{base}_add"),
            ]
            folded["to_affine"] += 1
    for node in g.node:
        if id(node) in drop:
            continue
        new_nodes.extend(replaced.get(id(node), [node]))
    del g.node[:]
    g.node.extend(new_nodes)
    _drop_unused_initializers(model)
    return model, folded


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order the main graph's nodes topologically (some converters append nodes out of order)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError("export: the ONNX graph has a cycle or an undefined input; cannot order it")
        pending = rest
    out = onnx.ModelProto.FromString(model.SerializeToString())
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    return out


def optimize_offline(model: onnx.ModelProto, level: str = "basic") -> onnx.ModelProto:
    """Apply onnxruntime's graph optimisations and return the saved, optimised graph.

    ``level`` is ``"basic"`` (constant folding, redundant-node elimination, Conv+Mul/Add/BN
    fusions) or ``"extended"`` (also fusions into onnxruntime's contrib operators, which only
    onnxruntime runs). Both avoid the layout transformations of ``ORT_ENABLE_ALL``, which tie a
    saved graph to the hardware that optimised it.
    """
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}  # fmt: skip
    if level not in levels:
        raise ExportError(f"export: optimisation level must be one of {OPTIMIZATION_LEVELS}, got {level!r}")
    with tempfile.TemporaryDirectory(prefix="deepmine-export-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[level]
        opts.optimized_model_filepath = os.fspath(out)
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(os.fspath(out))
    return optimized


#: what a classifier graph's input can be (``deepmine export --graph-input``)
GRAPH_INPUTS = ("float32", "uint8", "flux")


def prepend_uint8_input(model: onnx.ModelProto, input_name: str = "image") -> onnx.ModelProto:
    """Make the graph take normalised uint8 cutouts and divide them by 255 itself.

    The model's float input (0..1, what :func:`deepmine.inference.preprocess.prepare_batch`
    makes of uint8 cutouts: ``x / 255`` in float32) becomes an internal tensor computed by
    ``Cast(uint8 → float32)`` then ``Div(255)`` — the same float32 operation as numpy's, so the
    outputs are identical — and the graph input named ``input_name`` becomes uint8 of the same
    shape. A scanner then moves a quarter of the bytes to the device and does no arithmetic on
    the CPU (a float16 graph keeps its float32 input type, so the division stays in float32).
    """
    out = onnx.ModelProto.FromString(model.SerializeToString())
    g = out.graph
    (inp,) = [i for i in g.input if i.name == input_name]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError(f"export: --graph-input uint8 needs a float32 graph input, found element type "
                          f"{inp.type.tensor_type.elem_type}")
    inner = f"{input_name}_unit"
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == input_name:
                n.input[k] = inner
    inp.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    scale = numpy_helper.from_array(np.array(255.0, dtype=np.float32), f"{input_name}_scale")
    g.initializer.append(scale)
    nodes = [helper.make_node("Cast", [input_name], [f"{input_name}_float"], to=onnx.TensorProto.FLOAT,
                              name=f"{input_name}_cast"),
             helper.make_node("Div", [f"{input_name}_float", scale.name], [inner], name=f"{input_name}_div255")]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    onnx.checker.check_model(out)
    return out


def percentile_nodes(x: str, out: str, shape, low: float, high: float, prefix: str = "pct"):
    """Nodes and initialisers computing :func:`deepmine.inference.preprocess.percentile_normalization`
    followed by ``/ 255`` (the model input of percentile models), from float32 fluxes ``x``
    (N×C×H×W, N dynamic) to float32 ``out`` in 0..1.

    The same arithmetic as the Numba kernel, in float64: per image and band, the finite pixels
    sorted (``TopK`` ascending, non-finite pixels sent to +inf so they sort last), numpy's
    linear-interpolation percentiles at ``low`` and ``high`` among the ``m`` finite values,
    ``t = clip((v - lo) / (hi - lo), 0, 1)``, ``floor(255 t + 0.5)``, then float32 ``/ 255``;
    0 for non-finite pixels, constant bands and bands without a finite pixel.

    Returns ``(nodes, initializers)``.
    """
    c, h, w = (int(v) for v in shape)
    k = h * w
    P = prefix

    def name(s):
        return f"{P}_{s}"

    def const(s, value, dtype):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name(s))

    inits = [const("flat", [0, c, k], np.int64), const("back", [0, c, h, w], np.int64),
             const("k", [k], np.int64), const("one", 1.0, np.float64), const("zero", 0.0, np.float64),
             const("inf", np.inf, np.float64), const("c255", 255.0, np.float64), const("half", 0.5, np.float64),
             const("f255", 255.0, np.float32), const("f0", 0.0, np.float32),
             const("qlo", low / 100.0, np.float64), const("qhi", high / 100.0, np.float64)]
    n = helper.make_node
    D = onnx.TensorProto.DOUBLE
    nodes = [
        n("Cast", [x], [name("xd4")], to=D),
        n("Reshape", [name("xd4"), name("flat")], [name("xd")]),
        n("IsNaN", [name("xd")], [name("isnan")]),
        n("IsInf", [name("xd")], [name("isinf")]),
        n("Or", [name("isnan"), name("isinf")], [name("bad")]),
        n("Not", [name("bad")], [name("finite")]),
        n("Cast", [name("finite")], [name("finite_d")], to=D),
        n("ReduceSum", [name("finite_d"), name("axis2")], [name("m")], keepdims=1),
        n("Where", [name("finite"), name("xd"), name("inf")], [name("xs")]),
        n("TopK", [name("xs"), name("k")], [name("sorted"), name("order")], axis=2, largest=0, sorted=1),
        n("Sub", [name("m"), name("one")], [name("m1")]),
        # m - 1 floored at 0, so that a plane without a finite pixel still indexes inside the
        # array (its output is zeroed below)
        n("Max", [name("m1"), name("zero")], [name("m1c")]),
    ]
    inits.append(const("axis2", [2], np.int64))
    for tag in ("lo", "hi"):
        q = name("qlo") if tag == "lo" else name("qhi")
        t = f"{tag}_"
        nodes += [
            n("Mul", [q, name("m1c")], [name(t + "pos")]),
            n("Floor", [name(t + "pos")], [name(t + "a")]),
            n("Add", [name(t + "a"), name("one")], [name(t + "a1")]),
            n("Min", [name(t + "a1"), name("m1c")], [name(t + "b")]),
            n("Sub", [name(t + "pos"), name(t + "a")], [name(t + "frac")]),
            n("Cast", [name(t + "a")], [name(t + "ai")], to=onnx.TensorProto.INT64),
            n("Cast", [name(t + "b")], [name(t + "bi")], to=onnx.TensorProto.INT64),
            n("GatherElements", [name("sorted"), name(t + "ai")], [name(t + "va")], axis=2),
            n("GatherElements", [name("sorted"), name(t + "bi")], [name(t + "vb")], axis=2),
            n("Sub", [name(t + "vb"), name(t + "va")], [name(t + "dv")]),
            n("Mul", [name(t + "frac"), name(t + "dv")], [name(t + "step")]),
            n("Add", [name(t + "va"), name(t + "step")], [name(tag)]),
        ]
    nodes += [
        n("Sub", [name("hi"), name("lo")], [name("span")]),
        n("Sub", [name("xd"), name("lo")], [name("dx")]),
        n("Div", [name("dx"), name("span")], [name("t0")]),
        n("Max", [name("t0"), name("zero")], [name("t1")]),
        n("Min", [name("t1"), name("one")], [name("t2")]),
        n("Mul", [name("t2"), name("c255")], [name("t255")]),
        n("Add", [name("t255"), name("half")], [name("t255h")]),
        n("Floor", [name("t255h")], [name("q")]),
        n("Cast", [name("q")], [name("qf")], to=onnx.TensorProto.FLOAT),
        n("Div", [name("qf"), name("f255")], [name("unit")]),
        n("Greater", [name("span"), name("zero")], [name("spanok")]),
        n("And", [name("finite"), name("spanok")], [name("ok")]),
        n("Where", [name("ok"), name("unit"), name("f0")], [name("unit_ok")]),
        n("Reshape", [name("unit_ok"), name("back")], [out]),
    ]
    return nodes, inits


def prepend_flux_input(model: onnx.ModelProto, shape, low: float, high: float,
                       input_name: str = "image") -> onnx.ModelProto:
    """Make the graph take float32 fluxes and percentile-normalise them itself.

    :func:`percentile_nodes` in front of the model: the graph input ``input_name`` stays float32
    of the same shape but now holds raw fluxes (NaN/inf allowed), so a GPU does the per-band
    normalisation the CPU does for other graphs (:mod:`deepmine.inference.preprocess`).
    """
    out = onnx.ModelProto.FromString(model.SerializeToString())
    g = out.graph
    (inp,) = [i for i in g.input if i.name == input_name]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError("export: --graph-input flux needs a float32 graph input")
    inner = f"{input_name}_unit"
    for node in g.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = inner
    nodes, inits = percentile_nodes(input_name, inner, shape, low, high)
    g.initializer.extend(inits)
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    onnx.checker.check_model(out)
    return out


def percentile_model(shape, low: float, high: float) -> onnx.ModelProto:
    """The normalisation alone as a model (``flux`` → ``unit``), for parity tests."""
    c, h, w = (int(v) for v in shape)
    nodes, inits = percentile_nodes("flux", "unit", shape, low, high)
    graph = helper.make_graph(
        nodes, "percentile", [helper.make_tensor_value_info("flux", onnx.TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("unit", onnx.TensorProto.FLOAT, ["N", c, h, w])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m
