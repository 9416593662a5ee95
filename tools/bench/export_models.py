#!/usr/bin/python3
"""The full-size torchvision models of the paired benchmark's transformer / modern-CNN rows (vit_b_16, convnext_tiny),
random weights seeded so that this script and python_bench.py build the same model, exported to ONNX (opset 17,
dynamic batch) for Loupe's `onnx` backend side of the rows (tests/Loupe.Benchmarks/OnnxFamilyBenchmarks.cs runs
this script when the files are missing; about 1 min and 440 MB).

    /usr/bin/python3 tools/bench/export_models.py [OUT_DIR=bench-models]      # OUT_DIR is git-ignored
"""
import os
import sys

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODELS = ("vit_b_16", "convnext_tiny")


def bench_model(name):
    """torchvision NAME with the weights of torch.manual_seed(0) and the default init, eval mode, frozen."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export(name, path):
    model = bench_model(name)
    for p in model.parameters():   # frozen, nn.MultiheadAttention takes its fused inference path, which does not export
        p.requires_grad_(True)
    x = torch.randn(2, 3, 224, 224)
    tmp = path + ".tmp"
    torch.onnx.export(model, x, tmp, input_names=["x"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.EVAL)
    os.replace(tmp, path)


def main():
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bench-models"))
    os.makedirs(out, exist_ok=True)
    for name in MODELS:
        path = os.path.join(out, f"{name}.onnx")
        if not os.path.exists(path):
            export(name, path)
        print(path)


if __name__ == "__main__":
    main()
