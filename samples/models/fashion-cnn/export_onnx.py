#!/usr/bin/env python3
"""Exports the shipped demo CNN (fashion-cnn.safetensors) to fashion-cnn.onnx for Loupe's `onnx-runtime` backend
(forward-only steps: score-CAM, occlusion, max-patches, embeddings). Same weights, eval mode, dynamic batch, opset 13;
PyTorch's exporter folds each BatchNorm into its convolution. Layer names follow the modules (e.g. /relu3/Relu).

Usage: /usr/bin/python3 samples/models/fashion-cnn/export_onnx.py   (Debian python3-torch; not needed by CI)"""
import json, os, struct, sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tools", "bench"))
from python_bench import FashionCnn  # noqa: E402  (the architecture, module for module)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    types = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=types[t["dtype"]]).reshape(t["shape"]).copy())
    return out


def main():
    model = FashionCnn()
    state = read_safetensors(os.path.join(HERE, "fashion-cnn.safetensors"))
    model.load_state_dict(state)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), os.path.join(HERE, "fashion-cnn.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)


if __name__ == "__main__":
    main()
