#!/usr/bin/python3
"""Writes the bad-input corpus (tests/corpus/<reader>/...) and corpus.json (file -> expected error substring, or
{"ok": ...} for odd but valid files). The files are committed, so CI needs no Python; rerun after changing this
script: /usr/bin/python3 tests/corpus/make_corpus.py (Debian 12: python3-torch, python3-onnx, python3-numpy,
python3-pil). Deterministic: fixed seeds, fixed zip timestamps."""
import gzip, io, json, os, pickle, random, struct, sys, zipfile, zlib

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image
import torch

sys.dont_write_bytecode = True  # no __pycache__/ inside the corpus folder (CorpusTests lists every file)
import make_corpus_untrusted as untrusted  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "/tmp/loupe-corpus-pickle-ran"      # the malicious pickles would create this file; the test asserts they never do
rng = random.Random(1234)
expect = {}


def put(rel, data, expected):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    expect[rel] = expected


def garbage(n):
    return bytes(rng.randrange(256) for _ in range(n))


# ---------------------------------------------------------------- YAML pipelines (run through the real parser/validator)
PIPE = """version: 1
name: corpus
model:
  uses: torchvision
  with: { architecture: fashion-cnn, weights: ../../fixtures/fashion_cnn_seed0.pt }
data:
  uses: npy
  with: { path: ../../fixtures/fashion_input.npy }
steps:
  - id: cam
    uses: grad-cam
    with: { layer: relu3 }
"""


def y(name, text, expected):
    put("yaml/" + name, text.encode("utf-8") if isinstance(text, str) else text, expected)


y("empty.yaml", "", "the pipeline file is empty")
y("comments-only.yaml", "# nothing here\n\n# at all\n", "the pipeline file is empty")
y("deep-nesting-flow.yaml", PIPE + "output: { dir: " + "[" * 5000 + "]" * 5000 + " }\n", "nesting deeper than 64 levels")
y("deep-nesting-block.yaml", PIPE + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n", "nesting deeper than 64 levels")
laughs = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 9) + "]\n" for i in range(1, 10))
y("billion-laughs.yaml", laughs + PIPE, "expands to more than 100000 YAML nodes")
y("alias-bomb-in-options.yaml", PIPE.replace("with: { layer: relu3 }", "with:\n      layer: relu3\n      x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" +
  "".join(f"      x{i}: &x{i} [" + ", ".join([f"*x{i-1}"] * 10) + "]\n" for i in range(1, 7))), "expands to more than 100000 YAML nodes")
y("huge-scalar.yaml", PIPE.replace("name: corpus", "name: " + "x" * ((1 << 20) + 10)), "pipeline file is larger than 1048576 bytes")
y("duplicate-top-key.yaml", PIPE + "steps:\n  - uses: saliency\n", "duplicate key 'steps' (first at line 9)")
y("duplicate-option-key.yaml", PIPE.replace("with: { layer: relu3 }", "with: { layer: relu3, layer: relu2 }"), "duplicate key 'layer'")
y("tabs.yaml", PIPE.replace("  - id: cam\n    uses", "  - id: cam\n\tuses"), "malformed YAML")
y("wrong-type-steps.yaml", PIPE.split("steps:")[0] + "steps: grad-cam\n", "'steps' must be a list")
y("wrong-type-version.yaml", PIPE.replace("version: 1", "version: [1]"), "'version' must be a single value")
y("wrong-type-option.yaml", PIPE.replace("with: { layer: relu3 }", "with: { layer: { name: relu3 } }"), "option 'layer' must be a string, got a mapping")
y("wrong-type-batch.yaml", PIPE + "settings: { batch_size: many }\n", "'settings.batch_size' must be an integer, got 'many'")
y("negative-batch.yaml", PIPE + "settings: { batch_size: -5 }\n", "'settings.batch_size' must be > 0, got -5")
y("int-overflow.yaml", PIPE.replace("name: corpus", "name: corpus\nseed: 99999999999999999999999"), "'seed' must be an integer")
y("unknown-key.yaml", PIPE.replace("steps:", "stepz:"), "unknown key 'stepz' in pipeline (did you mean 'steps'?)")
y("non-utf8.yaml", PIPE.replace("name: corpus", "name: caf\u00e9").encode("latin-1"), "not UTF-8 text")
y("binary-garbage.yaml", garbage(4096), "not UTF-8 text")
y("nul-bytes.yaml", PIPE.replace("name: corpus", "name: cor\0pus"), "malformed YAML")
y("control-chars.yaml", PIPE.replace("name: corpus", "name: \x07\x1b[31mred"), "'name' may not contain")
y("name-traversal.yaml", PIPE.replace("name: corpus", "name: ../../../etc/cron.d/x"), "'name' may not contain")
y("two-documents.yaml", PIPE + "---\n" + PIPE, "holds more than one YAML document")
untrusted.yaml_cases(globals())
y("root-is-list.yaml", "- version: 1\n- name: x\n", "the pipeline must be a mapping")
y("root-is-scalar.yaml", "just a string\n", "the pipeline must be a mapping")
y("unclosed-quote.yaml", PIPE.replace("name: corpus", "name: \"corpus"), "malformed YAML")
y("unclosed-flow.yaml", PIPE.replace("with: { layer: relu3 }", "with: { layer: relu3"), "malformed YAML")
y("version-2.yaml", PIPE.replace("version: 1", "version: 2"), "unsupported pipeline version '2'")
y("missing-model.yaml", "version: 1\nsteps:\n  - uses: saliency\n", "missing 'model' section")
y("unknown-component.yaml", PIPE.replace("uses: grad-cam", "uses: grad-kam"), "did you mean 'grad-cam'")
y("python-tag.yaml", PIPE.replace("name: corpus", "name: !!python/object/apply:os.system [\"touch " + MARKER + "\"]"), "'name' must be a single value")
y("missing-file.yaml", PIPE.replace("fashion_cnn_seed0.pt", "no-such-weights.pt"), "file not found")
y("missing-layer.yaml", PIPE.replace("relu3", "relu9"), "layer 'relu9' does not exist in the model")
y("bad-enum.yaml", PIPE.replace("model:\n", "model:\n  input: { size: [28, 28], channels: 7 }\n"), "model.input")
y("anchors-ok.yaml", PIPE.replace("with: { layer: relu3 }", "with: &opts { layer: relu3 }") + "  - id: cam2\n    uses: grad-cam\n    with: *opts\n", {"ok": "pipeline"})
y("bom-ok.yaml", "\ufeff" + PIPE, {"ok": "pipeline"})

# ---------------------------------------------------------------- .pt (torch.save zip checkpoints and malicious pickles)
torch.manual_seed(0)


def zip_bytes(entries, compress=zipfile.ZIP_STORED):
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", compress) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = compress
            z.writestr(info, data)
    return bio.getvalue()


def torch_zip(obj):
    bio = io.BytesIO()
    torch.save(obj, bio)
    return bio.getvalue()


def unzip(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def with_pickle(pkl, extra=()):
    return zip_bytes([("archive/data.pkl", pkl), ("archive/version", b"3\n"), *extra])


class Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def p(name, data, expected):
    put("pt/" + name, data, expected)


small = {"w": torch.arange(4, dtype=torch.float32)}
good = torch_zip(small)
p("garbage.pt", garbage(2048), "not a PyTorch zip checkpoint")
p("empty.pt", b"", "not a PyTorch zip checkpoint")
p("truncated-zip.pt", good[: len(good) // 2], "not a valid zip archive")
p("zip-magic-only.pt", b"PK\x03\x04" + garbage(60), "not a valid zip archive")
# The legacy format stores object ids as storage keys: this file differs on every run (the committed copy is kept).
bio = io.BytesIO(); torch.save(small, bio, _use_new_zipfile_serialization=False)
p("legacy-pickle.pt", bio.getvalue(), "legacy pickles and other formats are refused")
p("os-system.pt", with_pickle(pickle.dumps({"w": Reduce(os.system, "touch " + MARKER)}, protocol=2)), "refers to posix.system")
p("builtins-eval.pt", with_pickle(pickle.dumps(Reduce(eval, f"__import__('os').system('touch {MARKER}')"), protocol=2)), "refers to __builtin__.eval")
p("builtins-exec-nested.pt", with_pickle(pickle.dumps({"a": {"b": [1, 2, Reduce(exec, f"open('{MARKER}', 'w')")]}}, protocol=2)), "refers to __builtin__.exec")
p("stack-global-protocol4.pt", with_pickle(pickle.dumps(Reduce(os.system, "touch " + MARKER), protocol=4)), "refers to posix.system")
import subprocess
p("subprocess.pt", with_pickle(pickle.dumps(Reduce(subprocess.Popen, ["touch", MARKER]), protocol=4)), "refers to subprocess.Popen")
p("whole-model.pt", torch_zip(torch.nn.Linear(2, 2)), "refers to torch.nn.modules.linear.Linear")
p("inst-opcode.pt", with_pickle(b"(S'touch " + MARKER.encode() + b"'\nios\nsystem\n."), "uses pickle opcode 0x53")
entries = unzip(good)
pkl = next(d for n, d in entries if n.endswith("data.pkl"))
# The storage tuple ends with numel: 4 as BININT1 (K\x04). Declare 2^30 elements instead (LONG1 would be needed; BININT).
big_numel = pkl.replace(b"K\x04t", b"J\x00\x00\x00\x40t", 1)
assert big_numel != pkl
p("oversized-numel.pt", zip_bytes([(n, big_numel if n.endswith("data.pkl") else d) for n, d in entries]), "declares 1073741824 elements of FloatStorage")
# Shape (4,) -> (100000 * 100000,) via the size tuple K\x04\x85 -> J<1e9>\x85 while the storage keeps 4 elements.
huge_shape = pkl.replace(b"K\x04\x85", b"J\x00\xca\x9a\x3b\x85", 1)
assert huge_shape != pkl
p("huge-shape.pt", zip_bytes([(n, huge_shape if n.endswith("data.pkl") else d) for n, d in entries]), "rebuilds a tensor that reaches element 999999999 of a storage of 4 elements")
p("zip-bomb.pt", zip_bytes([(n, d) for n, d in entries] + [("archive/data/bomb", b"\0" * (64 << 20))], zipfile.ZIP_DEFLATED), "archive entries inflate to")
p("missing-storage.pt", zip_bytes([(n, d) for n, d in entries if "/data/" not in n]), "refers to storage data/0, which is not in the archive")
p("no-data-pkl.pt", zip_bytes([(n, d) for n, d in entries if not n.endswith("data.pkl")]), "expected one data.pkl in the archive, found 0")
p("truncated-pickle.pt", zip_bytes([(n, d[: len(d) // 2] if n.endswith("data.pkl") else d) for n, d in entries]), "data.pkl")
p("not-a-dict.pt", torch_zip([torch.zeros(2)]), "does not hold a dict of tensors")
p("wrong-architecture.pt", torch_zip({"fc.weight": torch.zeros(3, 3)}), "weights do not fit this architecture")

# ---------------------------------------------------------------- .safetensors


def st(header, data=b"", raw_len=None):
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h) if raw_len is None else raw_len) + h + data


def s(name, data, expected):
    put("safetensors/" + name, data, expected)


f32 = lambda shape, b, e: {"dtype": "F32", "shape": shape, "data_offsets": [b, e]}
s("empty.safetensors", b"", "truncated safetensors file")
s("header-length-huge.safetensors", struct.pack("<Q", 2**63 + 5) + b"{}", "safetensors header length 9223372036854775813 is invalid")
s("header-length-beyond-file.safetensors", st({"a": f32([1], 0, 4)}, b"\0" * 4, raw_len=100000), "safetensors header length 100000 is invalid")
s("header-not-json.safetensors", st(b"this is not json at all", b""), "safetensors header is not valid JSON")
s("header-array.safetensors", st([1, 2, 3]), "safetensors header must be a JSON object")
s("header-deep-json.safetensors", st(b"[" * 5000 + b"]" * 5000), "safetensors header is not valid JSON")
s("offsets-out-of-range.safetensors", st({"a": f32([4], 0, 16)}, b"\0" * 8), "are outside the 8 bytes of data")
s("offsets-overlap.safetensors", st({"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, b"\0" * 12), "overlaps another tensor's bytes")
s("offsets-hole.safetensors", st({"a": f32([1], 0, 4), "b": f32([1], 8, 12)}, b"\0" * 12), "has a hole before tensor 'b'")
s("offsets-reversed.safetensors", st({"a": f32([1], 8, 4)}, b"\0" * 8), "are outside the 8 bytes of data")
s("dtype-unknown.safetensors", st({"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4), "dtype 'F8_E4M3' is not supported")
s("dtype-missing.safetensors", st({"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "missing dtype")
s("shape-bytes-mismatch.safetensors", st({"a": f32([3], 0, 8)}, b"\0" * 8), "needs 12 bytes, but data_offsets hold 8")
s("shape-huge.safetensors", st({"a": f32([100000, 100000, 100000], 0, 16)}, b"\0" * 16), "needs 4000000000000000 bytes")
s("shape-negative.safetensors", st({"a": f32([-4], 0, 16)}, b"\0" * 16), "shape must be a list of non-negative integers")
s("shape-not-list.safetensors", st({"a": f32("big", 0, 16)}, b"\0" * 16), "shape must be a list of non-negative integers")
s("duplicate-name.safetensors", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4), "names tensor 'a' twice")
s("truncated-data.safetensors", st({"a": f32([64], 0, 256)}, b"\0" * 100), "are outside the 100 bytes of data")
s("trailing-bytes.safetensors", st({"a": f32([1], 0, 4)}, b"\0" * 12), "8 trailing bytes that belong to no tensor")
s("wrong-architecture.safetensors", st({"fc.weight": f32([2, 2], 0, 16)}, b"\0" * 16), "weights do not fit this architecture")

# ---------------------------------------------------------------- ONNX (through the onnx backend)


def model(nodes, inputs, outputs, inits=(), opset=13, ir=7):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m.SerializeToString()


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])


def fc(extra_nodes=(), w_shape=(10, 784), name="fc"):
    w = helper.make_tensor("w", TensorProto.FLOAT, list(w_shape), np.zeros(w_shape, np.float32).tobytes(), raw=True)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1, name=name), *extra_nodes]
    return nodes, [w]


def raw_tensor(name, dims, raw):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, raw_data=raw)
    t.dims.extend(dims)
    return t


def o(name, data, expected):
    put("onnx/" + name, data, expected)


nodes, inits = fc()
valid = model(nodes, [X], [Y], inits)
o("empty.onnx", b"", "is empty, not an ONNX model")
o("garbage.onnx", garbage(3000), "is not a valid ONNX model")
o("truncated.onnx", valid[: len(valid) // 2], "is not a valid ONNX model")
o("text-file.onnx", b"This is not a model, it is a README.\n" * 20, "is not a valid ONNX model")
huge = raw_tensor("w", [1000000, 1000000, 1000000], np.zeros(4, np.float32).tobytes())
o("huge-declared-dims.onnx", model(nodes, [X], [Y], [huge]), "more elements than any model file holds")
o("raw-data-short.onnx", model(nodes, [X], [Y], [raw_tensor("w", [10, 784], np.zeros(100, np.float32).tobytes())]), "has 400 bytes of data, expected 31360")
o("huge-input.onnx", model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 100000, 100000])], [Y], inits), "input 'x' is 1×100000×100000")
o("no-input.onnx", model([helper.make_node("Constant", [], ["y"], value=helper.make_tensor("c", TensorProto.FLOAT, [1, 10], [0.0] * 10))], [], [Y]), "has 0 inputs")
o("two-inputs.onnx", model(nodes, [X, helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 1, 28, 28])], [Y], inits), "has 2 N×C×H×W inputs")
o("unknown-op.onnx", model([helper.make_node("FrobnicateTensor", ["x"], ["y"])], [X], [Y]), "unsupported ONNX operator 'FrobnicateTensor'")
o("opset-99.onnx", model(nodes, [X], [Y], inits, opset=99), "uses ONNX opset 99")
o("ir-version-0.onnx", model(nodes, [X], [Y], inits, ir=0), "ir_version 0")
o("no-nodes.onnx", model([], [X], [Y]), "it has no graph, no nodes or no outputs")
o("dangling-input.onnx", model([helper.make_node("Relu", ["nowhere"], ["y"])], [X], [Y]), "input 'nowhere' is not produced by any earlier node")
o("matmul-mismatch.onnx", model(*fc(w_shape=(10, 700))[:1], [X], [Y], fc(w_shape=(10, 700))[1]), "cannot multiply matrices of shapes (1×784) and (700×10)")
ext = raw_tensor("w", [10, 784], b"")
ext.data_location = TensorProto.EXTERNAL
ext.external_data.add(key="location", value="../../../../../etc/passwd")
o("external-data-escape.onnx", model(nodes, [X], [Y], [ext]), "points outside the model's folder")
ext2 = raw_tensor("w", [10, 784], b"")
ext2.data_location = TensorProto.EXTERNAL
ext2.external_data.add(key="location", value="weights-that-do-not-exist.bin")
o("external-data-missing.onnx", model(nodes, [X], [Y], [ext2]), "which is missing")


untrusted.onnx_cases(globals())
# Protobuf nesting bomb: a GraphProto attribute inside a node inside a graph ... 150 levels deep.
inner = helper.make_graph([], "g0", [], [])
for i in range(150):
    inner = helper.make_graph([helper.make_node("If", ["x"], ["y"], then_branch=inner, else_branch=inner if i < 2 else helper.make_graph([], "e", [], []))], f"g{i+1}", [], [])
deep = helper.make_model(helper.make_graph([helper.make_node("If", ["x"], ["y"], then_branch=inner, else_branch=inner)], "top", [X], [Y]),
                         opset_imports=[helper.make_opsetid("", 13)])
o("protobuf-nesting.onnx", deep.SerializeToString(), "is not a valid ONNX model")

# ---------------------------------------------------------------- .npy (through the npy data source)


def npy_bytes(header, data=b"", version=(1, 0)):
    h = header.encode("latin-1")
    pad = (64 - (10 + len(h) + 1) % 64) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(h)) + h + data


def n(name, data, expected):
    put("npy/" + name, data, expected)


def saved(arr, **kw):
    bio = io.BytesIO(); np.save(bio, arr, **kw); return bio.getvalue()


n("bad-magic.npy", b"\x93NUMPZ\x01\x00" + garbage(200), "not a NumPy .npy file (bad magic)")
n("empty.npy", b"", "not a NumPy .npy file (bad magic)")
n("header-too-long.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{", ".npy header of 1073741824 bytes is too large")
n("header-truncated.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 500) + b"{'descr': '<f4',", "truncated .npy header")
n("version-9.npy", b"\x93NUMPY\x09\x00" + garbage(100), "unsupported .npy format version 9")
n("malformed-header.npy", npy_bytes("{garbage: yes}"), "malformed .npy header")
n("fortran-order-huge.npy", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (400000, 1, 28, 28), }", b"\0" * 64), "is read whole into memory, and that is more than")
n("object-dtype.npy", saved(np.array([{"x": 1}, None], dtype=object), allow_pickle=True), "dtype '|O' is not supported")
# Numbers of other dtypes are read as float32 (NumPy saves float64 by default); the values are the model input.
ramp = np.linspace(-0.8, 1.2, 2 * 28 * 28).reshape(2, 1, 28, 28)
n("float64.npy", saved(ramp), {"ok": "data", "mean": round(float(ramp.mean()), 4)})
n("big-endian.npy", saved(ramp.astype(">f4")), {"ok": "data", "mean": round(float(ramp.mean()), 4)})
n("float16-big-endian.npy", saved(ramp.astype(">f2")), {"ok": "data", "mean": round(float(ramp.astype(np.float16).astype(np.float64).mean()), 4)})
n("uint8.npy", saved(np.full((1, 1, 28, 28), 2, np.uint8)), {"ok": "data", "mean": 2.0})
n("bool.npy", saved(np.ones((1, 1, 28, 28), bool)), {"ok": "data", "mean": 1.0})
n("float64-beyond-float32.npy", saved(np.full((1, 1, 28, 28), 1e300)), "element 0 (1E+300) is beyond float32's range")
n("int64-inexact.npy", saved(np.full((1, 1, 28, 28), 2 ** 24 + 1, np.int64)), "element 0 (16777217) is an integer beyond")
n("complex.npy", saved(np.zeros((1, 1, 28, 28), np.complex64)), "dtype '<c8' is not supported")
n("float128.npy", npy_bytes("{'descr': '<f16', 'fortran_order': False, 'shape': (1, 1, 28, 28), }", b"\0" * 16 * 784), "dtype '<f16' is not supported")
n("float64-truncated.npy", saved(np.zeros((2, 1, 28, 28)))[:-8], "truncated: shape (2,1,28,28) needs 12544 bytes of data, the file has 12536")
n("shape-overflow.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904, 28, 28), }"), "declares more elements than any file can hold")
n("shape-negative.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 1, 28, 28), }"), "bad .npy shape")
n("shape-huge-n.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1, 28, 28), }", b"\0" * 64), "truncated: shape (1000000000000,1,28,28) needs")
n("truncated-data.npy", saved(np.zeros((4, 1, 28, 28), np.float32))[:-100], "truncated: shape (4,1,28,28) needs 12544 bytes of data, the file has 12444")
n("wrong-rank.npy", saved(np.zeros((28, 28), np.float32)), "expected 4 dimensions N×C×H×W (or N×H×W), found shape (28,28)")
n("three-dims.npy", saved(ramp.reshape(2, 28, 28)), {"ok": "data", "mean": round(float(ramp.mean()), 4)})   # N×H×W: a one-channel model's N×1×H×W
n("wrong-shape.npy", saved(np.zeros((2, 3, 28, 28), np.float32)), "does not match the model input N×1×28×28")
n("zero-items.npy", saved(np.zeros((0, 1, 28, 28), np.float32)), "the data source is empty")

# ---------------------------------------------------------------- IDX (through the idx data source, gzip or raw)


def idx(dims, data=b"", type_=0x08):
    return bytes([0, 0, type_, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims) + data


def i(name, data, expected):
    put("idx/" + name, data, expected)


i("bad-magic.idx", b"\x01\x02\x08\x03" + garbage(100), "not an IDX file (bad magic 01020803)")
i("empty.idx", b"", "truncated IDX header")
i("header-truncated.idx", idx([10, 28])[:9], "truncated IDX header")
i("dims-overflow.idx", idx([0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF]), "image size 2147483647×2147483647 is invalid or over the limit")
i("dims-negative.idx", idx([1, -28, 28]), "negative IDX dimension -28")
i("zero-dims.idx", idx([]), "IDX with 0 dimensions is not supported")
i("two-dims.idx", idx([10, 784], b"\0" * 7840), "expected an images file with 3 dimensions (N×H×W), found 2")
i("float-elements.idx", idx([1, 28, 28], b"\0" * 3136, 0x0D), "IDX element type 0x0d is not supported")
i("truncated.idx", idx([10, 28, 28], b"\0" * 100), "truncated: header declares 10 images of 28×28")
i("huge-images.idx", idx([1, 10000, 10000]), "image size 10000×10000 is invalid or over the limit")
i("gzip-truncated.idx.gz", gzip.compress(idx([10, 28, 28], bytes(range(256)) * 30), mtime=0)[:-40], "truncated: ended before item 10")
i("gzip-declares-more.idx.gz", gzip.compress(idx([1000000, 28, 28], b"\0" * 784 * 3), mtime=0), "truncated: ended before item")
i("gzip-garbage.idx.gz", b"\x1f\x8b\x08\x00" + garbage(500), "corrupt gzip data")

# ---------------------------------------------------------------- images (through the image-folder data source)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_header_only(w, h, bit_depth=8, colour=2, idat=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat or zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b"")


def img(name, data, expected):
    put("images/" + name, data, expected)


def pattern(mode="RGB"):
    yy, xx = np.mgrid[0:28, 0:28]
    rgb = np.stack([xx * 9, yy * 9, (xx + yy) * 4], -1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB") if mode == "RGB" else Image.fromarray(rgb, "RGB").convert(mode)


def encoded(im, fmt, **kw):
    bio = io.BytesIO(); im.save(bio, fmt, **kw); return bio.getvalue()


def grey_mean(data, rgb=None):
    # ImageSharp decodes to Rgb24 then converts to L8 with BT.709 luma; the source is 28×28, so no resize happens.
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB") if rgb is None else rgb, np.float64)
    return float(np.round(rgb @ np.array([0.2126, 0.7152, 0.0722])).mean() / 255)


def ok_img(name, data, rgb=None):
    img(name, data, {"ok": "image", "mean": round(grey_mean(data, rgb), 4)})


png = encoded(pattern(), "PNG")
jpg = encoded(pattern(), "JPEG", quality=95)
img("truncated.png", png[: len(png) // 2], "truncated PNG")
img("truncated.jpg", jpg[: len(jpg) // 3], "truncated JPEG")


untrusted.image_cases(globals())
img("empty.png", b"", "not a recognised image format")
img("garbage.png", garbage(1000), "not a recognised image format")
img("text.jpg", b"hello, I am not a JPEG\n" * 10, "not a recognised image format")
img("bomb-100000x100000.png", png_header_only(100000, 100000), "image is 100000×100000 = 10000000000 pixels, over the limit of 67108864")
img("bomb-65535x65535.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02\x44\x01\x00;", "over the limit of 67108864")
img("bomb-jpeg-65500x65500.jpg", jpg[:2] + b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 65500, 65500) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01" + jpg[2:], "over the limit of 67108864")
img("bomb-bmp-60000x60000.bmp", b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 2835, 2835, 0, 0), "over the limit of 67108864")
img("zero-width.png", png_header_only(0, 28), "image")
img("bad-crc.png", png.replace(b"IDAT", b"IDAT", 1)[:60] + bytes([png[60] ^ 0xFF]) + png[61:], "CRC Error")
ok_img("ok-rgb.png", png)
# PIL clips 16-bit grey when converting to RGB: the reference is the 8-bit source the 16-bit file was scaled from.
grey8 = np.asarray(pattern("L"))
ok_img("ok-16bit.png", encoded(Image.fromarray(grey8.astype(np.uint16) * 257), "PNG"), np.stack([grey8] * 3, -1))
ok_img("ok-palette.png", encoded(pattern().convert("P", palette=Image.ADAPTIVE, colors=16), "PNG"))
ok_img("ok-grey-alpha.png", encoded(pattern("LA"), "PNG"))
ok_img("ok-1bit.png", encoded(pattern("L").point(lambda v: 255 if v > 100 else 0).convert("1"), "PNG"))
ok_img("ok-rgba.png", encoded(pattern("RGBA"), "PNG"))
ok_img("ok-baseline.jpg", jpg)
ok_img("ok-progressive.jpg", encoded(pattern(), "JPEG", quality=95, progressive=True))
ok_img("ok-grey.jpg", encoded(pattern("L"), "JPEG", quality=95))
ok_img("ok-cmyk.jpg", encoded(pattern("CMYK"), "JPEG", quality=95))
ok_img("ok.gif", encoded(pattern().convert("P", palette=Image.ADAPTIVE, colors=64), "GIF"))
ok_img("ok-animated.gif", encoded(pattern().convert("P"), "GIF", save_all=True, append_images=[pattern("L").convert("P")] * 3))
ok_img("ok.bmp", encoded(pattern(), "BMP"))
ok_img("ok-8bit.bmp", encoded(pattern().convert("P"), "BMP"))
ok_img("ok.tga", encoded(pattern(), "TGA"))
ok_img("ok.tif", encoded(pattern(), "TIFF"))
ok_img("ok-lossless.webp", encoded(pattern(), "WEBP", lossless=True))
img("animated.webp", encoded(pattern(), "WEBP", lossless=True, save_all=True, append_images=[pattern("L").convert("RGB")] * 2), "animated WebP is not supported")

# ---------------------------------------------------------------- regressions found by tools/Loupe.Fuzz (kept as found)
FUZZ = {
    "yaml/fuzz-scanner-loop.yaml": "malformed YAML near here",             # YamlDotNet's scanner looped on Error tokens
    "yaml/fuzz-tagged-mapping-key.yaml": "unknown option",                 # a mapping as a key broke the manifest writer
    "yaml/fuzz-tagged-key.yaml": "unsupported pipeline version ''",        # a tagged key (!!binary version:) was missed by name: NullReferenceException
    "onnx/fuzz-matmul-abort.onnx": "cannot multiply matrices of shapes",   # THSTensor_matmul aborted the process
    "onnx/fuzz-constant-message.onnx": "has 3 values, expected 1",         # the error did not name the file
    # ImageSharp 2.1 exceptions on crafted files (content sniffed, whatever the extension says):
    "images/fuzz-jpeg-nullreference.png": "truncated JPEG: the file ends at byte 247 before its first scan",  # was a NullReferenceException in the decoder; now refused before it
    "images/fuzz-bmp-dividebyzero.png": "cannot decode image (DivideByZeroException",
    "images/fuzz-webp-indexoutofrange.png": "cannot decode image (IndexOutOfRangeException",
    "images/fuzz-gif-rowoutofrange.png": "cannot decode image (ArgumentOutOfRangeException",
    "images/fuzz-bmp-huge-palette.png": "BMP pixel data offset 1390423770 is beyond the end of the file (65 bytes)",
}
for rel, expected in FUZZ.items():
    assert os.path.exists(os.path.join(HERE, rel)), rel
    expect[rel] = expected

with open(os.path.join(HERE, "corpus.json"), "w") as f:
    json.dump({"_": "file -> expected error substring (or {ok: ...}); written by make_corpus.py", "pickle_marker": MARKER,
               "files": dict(sorted(expect.items()))}, f, indent=1, ensure_ascii=False)
print(len(expect), "files")
