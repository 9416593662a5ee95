#!/usr/bin/python3
"""Trains the small ViT shipped as samples/models/fashion-vit/fashion-vit.onnx (configs/vit-cam.yaml):
torchvision's VisionTransformer (28×28 input, 7×7 patches → class token + 4×4 grid, 2 blocks, 4 heads, width 64)
on Fashion-MNIST (Debian package dataset-fashion-mnist), 1 epoch, seed 0. The grey image is repeated to the 3 input
channels inside the exported graph, so the model takes N×1×28×28 pixels in [0, 1] normalised with mean 0.2860 and
std 0.3530 (the demo CNN's), exactly like samples/models/fashion-cnn.

    OMP_NUM_THREADS=2 /usr/bin/python3 samples/models/fashion-vit/train_fashion_vit.py
"""
import gzip
import os

import numpy as np
import torch
from torch import nn
from torchvision.models import VisionTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def idx(name, offset):
    with gzip.open(os.path.join(DATA, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


class FashionVit(nn.Module):
    def __init__(self):
        super().__init__()
        self.vit = VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)

    def forward(self, x):
        return self.vit(x.expand(-1, 3, -1, -1))


def main():
    torch.manual_seed(0)
    x = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xt = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    yt = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x, xt = (x - MEAN) / STD, (xt - MEAN) / STD
    model = FashionVit()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    epochs, bs = 1, 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * (len(x) // bs))
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(len(x) // bs):
            b = perm[i * bs:(i + 1) * bs]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if i % 100 == 0:
                print(f"  step {i}: loss {loss.item():.3f}", flush=True)
        model.eval()
        with torch.no_grad():
            acc = (torch.cat([model(xt[i:i + 1000]).argmax(1) for i in range(0, len(xt), 1000)]) == yt).float().mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {acc:.4f}", flush=True)
    torch.onnx.export(model, xt[:2], os.path.join(HERE, "fashion-vit.onnx"), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17)


if __name__ == "__main__":
    main()
