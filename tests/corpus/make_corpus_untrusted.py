"""Issue 26 corpus cases (untrusted files: external data, limits, truncation, metadata bombs, control characters),
kept out of make_corpus.py, which calls each function with its globals (the helpers y, o, img, ok_img, model, ...)."""
import io
import zlib

import numpy as np
from onnx import TensorProto, helper
from PIL import Image


def yaml_cases(g):
    y, PIPE = g["y"], g["PIPE"]
    # Issue 26: overflowing timeouts, NUL in paths, step ids with control characters, system output folders, /dev/zero
    # as labels, model.input over the memory budget, absurd thread counts (a warning, then the run is valid).
    y("timeout-overflow.yaml", PIPE + "settings: { step_timeout: 99999999999999999999h }\n", "must be a duration such as 30s")
    y("timeout-step-overflow.yaml", PIPE.replace("uses: grad-cam", "uses: grad-cam\n    timeout: 99999999999999999999999999999999999999999999s"), "must be a duration such as 30s")
    y("nul-in-path.yaml", PIPE.replace("path: ../../fixtures/fashion_input.npy", 'path: "../../fixtures/fashion\\0input.npy"'), "the path contains a NUL character")
    y("step-id-newline.yaml", PIPE.replace("id: cam", 'id: "cam\\n"'), "step id 'cam\n' may contain only letters")
    y("step-id-escape.yaml", PIPE.replace("id: cam", 'id: "cam\\e[2J"'), "step id 'cam?[2J' may contain only letters")
    y("output-dir-etc.yaml", PIPE + "output: { dir: /etc/loupe-runs }\n", "a system folder")
    y("output-dir-root.yaml", PIPE + "output: { dir: / }\n", "a system folder")
    y("output-dir-dev.yaml", PIPE + "output: { dir: /dev/shm/../loupe-runs }\n", "a system folder")
    y("labels-dev-zero.yaml", PIPE.replace("weights: ../../fixtures/fashion_cnn_seed0.pt }", "weights: ../../fixtures/fashion_cnn_seed0.pt }\n  labels: /dev/zero"), "is a character device, not a regular file")
    y("input-size-huge.yaml", PIPE.replace("weights: ../../fixtures/fashion_cnn_seed0.pt }", "weights: ../../fixtures/fashion_cnn_seed0.pt }\n  input: { size: [100000, 100000] }"), "is over the limits")


def onnx_cases(g):
    o, model, raw_tensor, nodes, X, Y = g["o"], g["model"], g["raw_tensor"], g["nodes"], g["X"], g["Y"]

    def external(location, **kv):
        t = raw_tensor("w", [10, 784], b"")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        for k, v in kv.items():
            t.external_data.add(key=k, value=v)
        return model(nodes, [X], [Y], [t])


    # Issue 26. SecurityTests copies this file next to a link 'linked' -> /etc: the real path must stay in the model's folder.
    o("external-data-via-link.onnx", external("linked/passwd"), "which is missing")
    o("external-offset-not-a-number.onnx", external("w.bin", offset="12abc"), "external data 'offset' is '12abc', not a whole number")
    o("external-offset-overflow.onnx", external("w.bin", offset="99999999999999999999"), "external data 'offset' is '99999999999999999999', not a whole number")
    o("external-length-negative.onnx", external("w.bin", length="-5"), "external data 'length' is '-5', not a whole number")
    twice = raw_tensor("w", [10, 784], b"")
    twice.data_location = TensorProto.EXTERNAL
    twice.external_data.add(key="location", value="w.bin")
    twice.external_data.add(key="location", value="../../etc/passwd")
    o("external-location-twice.onnx", model(nodes, [X], [Y], [twice]), "lists external data key 'location' 2 times")
    # An empty tensor whose other dims multiply past int64 (found by tools/Loupe.Fuzz): libtorch's stride computation
    # overflowed before the count check, which saw 0 elements.
    o("empty-tensor-huge-dims.onnx", model(nodes, [X], [Y], [raw_tensor("w", [0, 130436250, 1254989, 129181261], b"")]),
      "more elements than any model file holds")
    # A cubic Resize (opset 18, sizes of the listed axes) to 600 MB: within the budget for one tensor, not for the
    # output and libtorch's working copies (found by tools/Loupe.Fuzz: +1.3 GB while loading; 480 MB took over 5 s).
    o("resize-axes-two-copies.onnx", model([helper.make_node("Resize", ["x", "", "", "sz"], ["r"], mode="cubic", axes=[2, 3]),
                                            helper.make_node("ReduceMean", ["r", "ax"], ["y"], keepdims=0)], [X], [Y],
                                           [helper.make_tensor("sz", TensorProto.INT64, [2], [30000000, 5]), helper.make_tensor("ax", TensorProto.INT64, [2], [2, 3])], opset=18, ir=8),
      "output shape (1×1×30000000×5) is over the memory budget of 1024 MB (the operator holds 4 tensors of that size)")
    # Upsample (opset 7) linear to 822 MB: within the budget for one tensor, not for the six its linear pass holds
    # (found by tools/Loupe.Fuzz: 3.2 GB resident and over 5 s for a smaller one).
    o("upsample-linear-six-copies.onnx", model([helper.make_node("Upsample", ["x"], ["u"], mode="linear", scales=[1.0, 1.0, 131072.0, 2.0]),
                                                helper.make_node("ReduceMean", ["u"], ["y"], axes=[2, 3], keepdims=0)], [X], [Y], [], opset=7, ir=3),
      "output shape (1×1×3670016×56) is over the memory budget of 1024 MB (the operator holds 6 tensors of that size)")
    # A wrap Pad (opset 19) to 940 MB: gathered axis by axis, so two tensors of that size (the fuzzer's grew the
    # process by 1.3 GB).
    o("pad-wrap-two-copies.onnx", model([helper.make_node("Pad", ["x", "wp"], ["p"], mode="wrap"),
                                         helper.make_node("ReduceMean", ["p", "ax"], ["y"], keepdims=0)], [X], [Y],
                                        [helper.make_tensor("wp", TensorProto.INT64, [8], [0, 0, 0, 0, 0, 599999, 0, -14]),
                                         helper.make_tensor("ax", TensorProto.INT64, [3], [1, 2, 3])], opset=19, ir=9),
      "output shape (1×600000×28×14) is over the memory budget of 1024 MB (the operator holds 2 tensors of that size)")
    # Tile whose repeats multiply past int64 (28 × (2^62 + 3) wraps to a small number): the process aborted in libtorch
    # (found by tools/Loupe.Fuzz); refused before the product is formed.
    o("tile-repeats-overflow.onnx", model([helper.make_node("Tile", ["x", "reps"], ["t"]),
                                           helper.make_node("ReduceMean", ["t", "ax"], ["y"], keepdims=0)], [X], [Y],
                                          [helper.make_tensor("reps", TensorProto.INT64, [4], [1, 1, 1, 4611686018427387907]),
                                           helper.make_tensor("ax", TensorProto.INT64, [3], [1, 2, 3])], opset=13, ir=7),
      "repeats (1, 1, 1, 4611686018427387907) of (1×1×28×28) are over the memory budget of 1024 MB")
    # Pads whose sum wraps around int64 (28 + (2^63 − 1) + (2^63 − 1) = 26): refused before any sum is formed.
    o("pad-sum-wraps.onnx", model([helper.make_node("Pad", ["x", "wp"], ["p"]), helper.make_node("ReduceMean", ["p", "ax"], ["y"], keepdims=0)], [X], [Y],
                                  [helper.make_tensor("wp", TensorProto.INT64, [8], [0, 0, 9223372036854775807, 0, 0, 0, 9223372036854775807, 0]),
                                   helper.make_tensor("ax", TensorProto.INT64, [3], [1, 2, 3])], opset=13, ir=7),
      "are beyond any image (sums of them would wrap around)")
    o("opset-24.onnx", model(nodes, [X], [Y], [], opset=24, ir=10), "uses ONNX opset 24; the onnx backends support opsets 7–23")
    # Pad whose pads (from the file) ask for 1×1×200028×200028 floats (149 GB): bounded before libtorch allocates.
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 100000, 100000, 0, 0, 100000, 100000])
    o("pad-bomb.onnx", model([helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("ReduceMean", ["p"], ["y"], axes=[2, 3], keepdims=0)], [X], [Y], [pads]),
      "output shape (1×1×200028×200028) is over the memory budget of 1024 MB")
    # Expand and ConstantOfShape whose target shape (from the file) is 200000×200000 floats (149 GB): bounded too.
    big = helper.make_tensor("shape", TensorProto.INT64, [2], [200000, 200000])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    tail = [helper.make_node("ReduceMean", ["e"], ["m"], keepdims=0), helper.make_node("Add", ["x", "m"], ["s"]),
            helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3], keepdims=0)]
    o("expand-bomb.onnx", model([helper.make_node("Expand", ["one", "shape"], ["e"]), *tail], [X], [Y], [one, big]),
      "output shape (200000×200000) is over the memory budget of 1024 MB")
    o("constant-of-shape-bomb.onnx", model([helper.make_node("ConstantOfShape", ["shape"], ["e"]), *tail], [X], [Y], [big]),
      "output shape (200000×200000) is over the memory budget of 1024 MB")
    o("control-chars-in-names.onnx", external("\x1b]0;pwned\x07\x1b[2J.bin"), "'?]0;pwned??[2J.bin', which is missing")

    # Control flow and detection operators (the interpreter runs torchvision's detectors): nesting, endless loops and
    # sizes from the file are bounded, each with a message naming the node.
    vi = helper.make_tensor_value_info
    fc_tail = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0)]

    def nested_if(depth):
        out = helper.make_graph([helper.make_node("Identity", ["m"], ["r0"])], "leaf", [], [vi("r0", TensorProto.FLOAT, None)])
        for d in range(depth):
            out = helper.make_graph([helper.make_node("If", ["c"], [f"r{d + 1}"], then_branch=out, else_branch=out)], f"level{d}", [],
                                    [vi(f"r{d + 1}", TensorProto.FLOAT, None)])
        return out.node[0]

    top = nested_if(10)
    top.output[0] = "z"
    tail = [helper.make_node("Add", ["x", "z"], ["s"]), helper.make_node("Flatten", ["s"], ["fl"]),
            helper.make_node("Slice", ["fl", "zero", "ten", "one"], ["y"])]
    ints = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]), helper.make_tensor("ten", TensorProto.INT64, [1], [10]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]), helper.make_tensor("c", TensorProto.BOOL, [], [True])]
    o("if-nested-too-deep.onnx", model([*fc_tail, top, *tail], [X], [Y], ints), "If nodes nest deeper than 8")
    forever = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
                                [vi("i", TensorProto.INT64, []), vi("c_in", TensorProto.BOOL, []), vi("v_in", TensorProto.FLOAT, None)],
                                [vi("c_out", TensorProto.BOOL, []), vi("v_out", TensorProto.FLOAT, None)])
    o("loop-forever.onnx", model([*fc_tail, helper.make_node("Loop", ["", "c", "m"], ["z"], body=forever), *tail], [X], [Y], ints),
      "runs more than 10000 iterations")
    rois = helper.make_tensor("rois", TensorProto.FLOAT, [1, 4], [0, 0, 8, 8])
    bi = helper.make_tensor("bi", TensorProto.INT64, [1], [0])
    o("roialign-output-huge.onnx", model([helper.make_node("RoiAlign", ["x", "rois", "bi"], ["r"], output_height=100000, output_width=100000),
                                          helper.make_node("ReduceMean", ["r"], ["z"], keepdims=0), *tail], [X], [Y], [rois, bi, *ints], opset=10),
      "output_height and output_width must be 1–1024")
    o("roialign-batch-index-outside.onnx", model([helper.make_node("RoiAlign", ["x", "rois", "bad"], ["r"], output_height=2, output_width=2),
                                                  helper.make_node("ReduceMean", ["r"], ["z"], keepdims=0), *tail], [X], [Y],
                                                 [rois, helper.make_tensor("bad", TensorProto.INT64, [1], [7]), *ints], opset=10),
      "a batch index is outside 0..0")
    o("topk-k-too-large.onnx", model([helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("TopK", ["f", "k"], ["v", "ix"]),
                                      helper.make_node("ReduceMean", ["v"], ["z"], keepdims=0), *tail], [X], [Y],
                                     [helper.make_tensor("k", TensorProto.INT64, [1], [100000]), *ints], opset=11),
      "K = 100000 is outside 0..784")

    # ONNX Runtime's fused operators are expanded at load (for both backends); one ONNX Runtime would reject is refused
    # by name, and so is an attention with a text model's token mask.
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    o("contrib-fused-activation-unknown.onnx", model([helper.make_node("FusedConv", ["x", "w1"], ["c"], domain="com.microsoft", activation="Swish"),
                                                      helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Slice", ["f", "zero", "ten", "one"], ["y"])],
                                                     [X], [Y], [w1, *ints]),
      "com.microsoft.FusedConv node 'c': activation 'Swish' is not one ONNX Runtime fuses into a convolution")
    o("contrib-attention-token-mask.onnx", model([helper.make_node("Reshape", ["x", "tok"], ["t"]),
                                                  helper.make_node("Attention", ["t", "wqkv", "", "x"], ["a"], domain="com.microsoft", num_heads=2),
                                                  helper.make_node("Flatten", ["a"], ["f"]), helper.make_node("Slice", ["f", "zero", "ten", "one"], ["y"])],
                                                 [X], [Y], [helper.make_tensor("tok", TensorProto.INT64, [3], [0, 28, 28]),
                                                            helper.make_tensor("wqkv", TensorProto.FLOAT, [28, 84], np.zeros(28 * 84, np.float32).tobytes(), raw=True), *ints]),
      "mask_index (a text model's token mask) is not supported")

    # Found by tools/Loupe.Fuzz (2026-12-06): a MatMul missing its second input reached the fused plan's pattern match
    # (IndexOutOfRange at load); a pair's dequantisation scale of no element type reached the pair's comparison.
    o("matmul-missing-input.onnx", model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f"], ["y"])], [X], [Y]),
      "MatMul node 'y' (opset 13): failed on inputs (1×784)")
    bad_scale = helper.make_tensor("s2", TensorProto.FLOAT, [], [0.02])
    bad_scale.data_type = 0
    o("qdq-scale-undefined.onnx", model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s2", "z"], ["d"]),
                                         helper.make_node("Flatten", ["d"], ["f"]), helper.make_node("Slice", ["f", "zero", "ten", "one"], ["y"])], [X], [Y],
                                        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]), bad_scale, helper.make_tensor("z", TensorProto.UINT8, [], [128]), *ints]),
      "tensor 's2' has element type Undefined")

    # The QOperator form is rewritten into QDQ at load: a malformed integer operator is refused by name.
    qx = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    qtail = [helper.make_node("DequantizeLinear", ["c", "s", "z"], ["d"]), helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("Slice", ["f", "zero", "ten", "one"], ["y"])]
    qinits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("z", TensorProto.UINT8, [], [128]), *ints]
    o("qop-conv-missing-inputs.onnx", model([*qx, helper.make_node("QLinearConv", ["q"], ["c"]), *qtail], [X], [Y], qinits),
      "QLinearConv node 'c': input 1 is missing")
    o("qop-concat-input-count.onnx", model([*qx, helper.make_node("QLinearConcat", ["s", "z", "q", "s"], ["c"], domain="com.microsoft", axis=1), *qtail],
                                           [X], [Y], qinits),
      "needs Y_scale, Y_zero_point and triples of (X, scale, zero point), not 4 inputs")
    o("qop-channels-last.onnx", model([*qx, helper.make_node("QLinearGlobalAveragePool", ["q", "s", "z", "s", "z"], ["c"], domain="com.microsoft", channels_last=1),
                                       *qtail], [X], [Y], qinits),
      "channels_last = 1")

    # An unbatched image (torchvision's detector exports) beside another input: side inputs need a batch.
    o("unbatched-with-side-input.onnx", model([helper.make_node("Add", ["x", "x2"], ["s"]), helper.make_node("Flatten", ["s"], ["fl"]),
                                               helper.make_node("Slice", ["fl", "zero", "ten", "one"], ["y"])],
                                              [vi("x", TensorProto.FLOAT, [1, 28, 28]), vi("x2", TensorProto.FLOAT, [1, 28, 28])], [Y], ints),
      "side inputs are supported on graphs that take N×C×H×W images only")

    # The same bombs through the onnx-runtime backend (tests/corpus/onnx-runtime/, loaded with `uses: onnx-runtime`):
    # ONNX Runtime allocates whatever a node asks for, and constant-folds at session creation, so each output is sized
    # to allocate 2-4 GB if nothing stopped it (over the 1 GB budget, small enough that malloc would not refuse it).
    put = g["put"]

    def r(name, nodes_, inits_, expected, opset=13):
        put("onnx-runtime/" + name, model(nodes_, [X], [Y], inits_, opset=opset), expected)

    def i64(name, values):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)

    def f32(name, values):
        return helper.make_tensor(name, TensorProto.FLOAT, [len(values)], values)

    # Each bomb's output e is reduced to one number and added to x, so y depends on it (not dead code).
    rtail = [helper.make_node("ReduceMean", ["e"], ["m"], keepdims=0), helper.make_node("Add", ["x", "m"], ["s"]),
             helper.make_node("Flatten", ["s"], ["fl"]), helper.make_node("Slice", ["fl", "z", "ten", "ax"], ["y"])]
    rinits = [i64("z", [0]), i64("ten", [10]), i64("ax", [1])]
    budget = "is over the memory budget of 1024 MB"
    r("resize-bomb.onnx", [helper.make_node("Resize", ["x", "", "scales"], ["e"]), *rtail], [f32("scales", [1, 1, 1000, 1000]), *rinits],
      "Resize node 'e' (opset 13): output shape (1×1×28000×28000) " + budget)
    r("upsample-bomb.onnx", [helper.make_node("Upsample", ["x", "scales"], ["e"]), helper.make_node("ReduceMean", ["e"], ["m"], keepdims=0),
                             helper.make_node("Add", ["x", "m"], ["s"]), helper.make_node("Flatten", ["s"], ["fl"]),
                             helper.make_node("Slice", ["fl"], ["y"], starts=[0], ends=[10], axes=[1])],
      [f32("scales", [1, 1, 1000, 1000])], "Upsample node 'e' (opset 9): output shape (1×1×28000×28000) " + budget, opset=9)
    r("pad-bomb.onnx", [helper.make_node("Pad", ["x", "pads"], ["e"]), *rtail], [i64("pads", [0, 0, 12000, 12000, 0, 0, 12000, 12000]), *rinits],
      "Pad node 'e' (opset 13): output shape (1×1×24028×24028) " + budget)
    # Found by tools/Loupe.Fuzz's onnx-runtime target on the QOperator seeds (2026-12-06): the guard did not follow shapes
    # through QuantizeLinear, so a huge Pad of the integers went to ONNX Runtime unchecked (> 5 s, GBs).
    r("quantised-pad-bomb.onnx", [helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["q"]), helper.make_node("Pad", ["q", "pads"], ["qp"]),
                                  helper.make_node("DequantizeLinear", ["qp", "qs", "qz"], ["e"]), *rtail],
      [helper.make_tensor("qs", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("qz", TensorProto.UINT8, [], [128]),
       i64("pads", [0, 0, 12000, 12000, 0, 0, 12000, 12000]), *rinits], budget)
    r("expand-bomb.onnx", [helper.make_node("Expand", ["one", "shape"], ["e"]), *rtail], [f32("one", [1.0]), i64("shape", [30000, 30000]), *rinits],
      "Expand node 'e' (opset 13): output shape (30000×30000) " + budget)
    r("constant-of-shape-bomb.onnx", [helper.make_node("ConstantOfShape", ["shape"], ["e"]), *rtail], [i64("shape", [30000, 30000]), *rinits],
      "ConstantOfShape node 'e' (opset 13): output shape (30000×30000) " + budget)
    r("tile-bomb.onnx", [helper.make_node("Tile", ["x", "reps"], ["e"]), *rtail], [i64("reps", [1, 1, 1000, 1000]), *rinits],
      "Tile node 'e' (opset 13): output shape (1×1×28000×28000) " + budget)
    r("range-bomb.onnx", [helper.make_node("Range", ["start", "limit", "delta"], ["e"]), *rtail],
      [helper.make_tensor("start", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("limit", TensorProto.FLOAT, [], [9e8]),
       helper.make_tensor("delta", TensorProto.FLOAT, [], [1.0]), *rinits], "Range node 'e' (opset 13): output shape (900000000) " + budget)
    r("conv-transpose-bomb.onnx", [helper.make_node("ConvTranspose", ["x", "w1"], ["e"], strides=[1000, 1000]), *rtail],
      [helper.make_tensor("w1", TensorProto.FLOAT, [1, 1, 1, 1], [1.0]), *rinits], "ConvTranspose node 'e' (opset 13): output shape (1×1×27001×27001) " + budget)
    # ONNX Runtime's own operators that Loupe does not expand: their kernels are not hardened (1.31's CPU Attention
    # without a bias crashed the process), so onnx-runtime runs them only when the pipeline trusts the file.
    r("contrib-operator.onnx", [helper.make_node("Rfft", ["x"], ["e"], domain="com.microsoft"), *rtail], rinits,
      "is com.microsoft.Rfft, an operator of ONNX Runtime's own (or another runtime's), not of ONNX; the onnx-runtime backend runs such operators only with 'contrib_operators: true'")
    # A wrap Pad to 940 MB: within the budget for one tensor, not for the two ONNX Runtime's Pad holds (found by
    # tools/Loupe.Fuzz's onnx-runtime target: +1.7 GB).
    r("pad-wrap-two-copies.onnx", [helper.make_node("Pad", ["x", "wp"], ["e"], mode="wrap"), *rtail], [i64("wp", [0, 0, 0, 0, 0, 599999, 0, -14]), *rinits],
      "Pad node 'e' (opset 19): output shape (1×600000×28×14) is over the memory budget of 1024 MB (the operator holds 2 tensors of that size)", opset=19)
    # ONNX Runtime's linear/cubic Resize holds four tensors of its output (a cubic one to 600 MB ran past 5 s), and a
    # Resize by a vanishing scale gives an empty output, which the backend refuses by name (libtorch could not flatten it).
    r("resize-cubic-four-copies.onnx", [helper.make_node("Resize", ["x", "", "sz"], ["e"], mode="cubic", axes=[2, 3]), *rtail],
      [f32("sz", [30000000, 5]), *rinits], "Resize node 'e' (opset 18): output shape (1×1×840000000×140) is over the memory budget of 1024 MB (the operator holds 4 tensors of that size)", opset=18)
    r("resize-to-nothing.onnx", [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")], [f32("sc", [1.0, 1.0, 1e-30, 1.0])],
      "is empty (1×1×0×28)")
    # Opset 23's Attention with keys sliced to nothing: ONNX Runtime 1.31's kernel divides by their heads and the process
    # dies of SIGFPE (found by tools/Loupe.Fuzz's onnx-runtime target).
    r("attention-empty-key.onnx", [helper.make_node("Slice", ["x", "big", "ten", "ax"], ["k"]), helper.make_node("Attention", ["x", "k", "k"], ["y"])],
      [i64("big", [224]), i64("ten", [10]), i64("ax", [1])], "Attention node 'y' (opset 23): its key (1×0×28×28) is empty", opset=23)
    # ONNX Runtime's RoiAlign precomputes 48 bytes per sample of every bin of a box: a 100,000 × 1,696 output of one box
    # (678 MB, within the budget) took 8.6 GB that way (found by tools/Loupe.Fuzz's onnx-runtime target).
    r("roialign-tables.onnx", [helper.make_node("RoiAlign", ["x", "rois", "bi"], ["e"], output_height=100000, output_width=1696), *rtail],
      [helper.make_tensor("rois", TensorProto.FLOAT, [1, 4], [0, 0, 8, 8]), i64("bi", [0]), *rinits],
      "RoiAlign node 'e' (opset 13): ONNX Runtime's tables for 1 box(es) of 100000×1696 bins of 1×1 samples (7764 MB) are over the memory budget of 1024 MB")
    # The size computed in the graph, as exporters write it: Shape(x)[2:4] * 1000, then Resize to those sizes.
    r("computed-size-bomb.onnx", [helper.make_node("Shape", ["x"], ["shp"]), helper.make_node("Slice", ["shp", "two", "four"], ["hw"]),
                                  helper.make_node("Mul", ["hw", "k"], ["big"]), helper.make_node("Concat", ["nc", "big"], ["sizes"], axis=0),
                                  helper.make_node("Resize", ["x", "", "", "sizes"], ["e"]), *rtail],
      [i64("two", [2]), i64("four", [4]), i64("k", [1000]), i64("nc", [1, 1]), *rinits],
      "Resize node 'e' (opset 13): output shape (1×1×28000×28000) " + budget)


def image_cases(g):
    img, ok_img, png, jpg, png_chunk, pattern = g["img"], g["ok_img"], g["png"], g["jpg"], g["png_chunk"], g["pattern"]

    def pil_refuses(data):
        try:
            Image.open(io.BytesIO(data)).load()
        except (OSError, SyntaxError):
            return True
        return False


    # Issue 26: slightly truncated files that ImageSharp would decode and fill; PIL (the reference) refuses both.
    png_cut, jpg_cut = png[:-30], jpg[:-100]
    assert pil_refuses(png_cut) and pil_refuses(jpg_cut)
    img("truncated-last-bytes.png", png_cut, "truncated PNG")
    img("truncated-no-eoi.jpg", jpg_cut, "truncated JPEG: no end-of-image marker")
    # Text chunks that inflate to 2 × 160 MB: metadata is never inflated, the image itself is valid.
    bomb = zlib.compress(b"\0" * (160 << 20), 9)
    ztxt = png_chunk(b"zTXt", b"Comment\0\0" + bomb) + png_chunk(b"iTXt", b"Comment\0\1\0en\0\0" + bomb)
    ok_img("text-chunk-bomb.png", png[:33] + ztxt + png[33:], np.asarray(pattern()))
