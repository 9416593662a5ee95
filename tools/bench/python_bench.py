#!/usr/bin/env python3
"""The Python side of Loupe's side-by-side benchmarks (tools/bench/side-by-side.sh).

Each row does the same work as the Loupe benchmark of the same name (tests/Loupe.Benchmarks), with the formulas the
reference libraries use (Captum for gradients/paths/occlusion, pytorch-grad-cam for CAMs, Lucent-style pixel
optimisation), written directly against Debian's python3-torch 1.13 / torchvision 0.14 so no other package is needed.
Same model architecture (random resnet18 weights, seed 0, eval mode; the demo CNN with its fixture weights), same input
sizes and batch, same intra-op threads. Prints one JSON object: row name -> median milliseconds.

Usage: python3 tools/bench/python_bench.py [--threads 2] [--repeats 15] [--only SUBSTRING]
       python3 tools/bench/python_bench.py --paired tests/Loupe.Benchmarks/bin/Release/net10.0/Loupe.Benchmarks.dll
  --paired alternates single calls of each Python row, the Loupe row of the same name and the Loupe row of the passes
  it needs (tools/bench/paired.sh). Not needed by CI.
"""
import argparse, json, os, statistics, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def timed(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1000)
    return statistics.median(t)


def top1_score(out, cls):
    return out.gather(1, cls.unsqueeze(1)).squeeze(1)


# ---- gradient methods (Captum conventions) --------------------------------------------------------------------
def input_gradient(model, x, cls):
    x = x.detach().clone().requires_grad_(True)
    s = top1_score(model(x), cls).sum()
    return torch.autograd.grad(s, x)[0]


def saliency(model, x, cls):          # Captum Saliency(abs=True): |dS/dx| per channel
    return input_gradient(model, x, cls).abs()


def gradient_x_input(model, x, cls):
    return input_gradient(model, x, cls) * x


class _Guided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g.clamp(min=0) * (z > 0).to(g.dtype)


class _Deconv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class _Rule(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z):
        return self.fn.apply(z)


def with_relu_rule(model, fn):
    """A copy of the model whose ReLU modules apply a backward rule (as Captum's GuidedBackprop/Deconvolution)."""
    import copy
    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, cname, _Rule(fn))
    return m.eval()


# ---- CAM family (pytorch-grad-cam conventions: ReLU -> per-map min-max -> bilinear resize) -----------------------
def layer_and_grad(model, layer, x, cls, need_grad=True):
    store = {}

    def hook(m, i, o):
        # The graph starts at the layer (weights frozen, input without grad): the backward stops there, as Loupe's.
        store["a"] = o.detach().requires_grad_(need_grad)
        return store["a"]
    h = layer.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    a = store["a"]
    if not need_grad:
        return a, None, out
    g = torch.autograd.grad(top1_score(out, cls).sum(), a)[0]
    return a, g, out


def finish_cam(cam, size):
    cam = F.relu(cam)
    flat = cam.flatten(1)
    mn, mx = flat.min(1)[0].view(-1, 1, 1), flat.max(1)[0].view(-1, 1, 1)
    cam = (cam - mn) / (mx - mn + 1e-7)
    return F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def grad_cam(model, layer, x, cls):
    a, g, _ = layer_and_grad(model, layer, x, cls)
    w = g.mean((2, 3), keepdim=True)
    cam = (w * a).sum(1)
    return finish_cam(cam, x.shape[2:]), cam


def grad_cam_pp(model, layer, x, cls):
    a, g, _ = layer_and_grad(model, layer, x, cls)
    g2, g3 = g ** 2, g ** 3
    denom = 2 * g2 + (a.sum((2, 3), keepdim=True) * g3)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    cam = (w * a).sum(1)
    return finish_cam(cam, x.shape[2:]), cam


def layer_cam(model, layer, x, cls):
    a, g, _ = layer_and_grad(model, layer, x, cls)
    cam = (F.relu(g) * a).sum(1)
    return finish_cam(cam, x.shape[2:]), cam


def score_cam(model, layer, x, cls, chunk=64):
    with torch.no_grad():
        a, _, _ = layer_and_grad(model, layer, x, cls, need_grad=False)
        n, k = a.shape[:2]
        up = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=False)
        flat = up.flatten(2)
        mn, mx = flat.min(2)[0][..., None, None], flat.max(2)[0][..., None, None]
        masks = (up - mn) / (mx - mn + 1e-8)
        weights = torch.empty(n, k)
        for i in range(n):
            for c0 in range(0, k, chunk):
                m = masks[i, c0:c0 + chunk].unsqueeze(1)
                out = model(x[i:i + 1] * m)
                weights[i, c0:c0 + chunk] = out[:, cls[i]]
        weights = F.softmax(weights, 1)
        cam = (weights[..., None, None] * a).sum(1)
        return finish_cam(cam, x.shape[2:]), cam


def ablation_cam(model, layer, x, cls, chunk=64):
    with torch.no_grad():
        a, _, out = layer_and_grad(model, layer, x, cls, need_grad=False)
        base = top1_score(out, cls)
        n, k = a.shape[:2]
        ablated = torch.empty(n, k)
        for i in range(n):
            for c0 in range(0, k, chunk):
                c = min(chunk, k - c0)
                keep = torch.ones(c, k)
                keep[torch.arange(c), torch.arange(c0, c0 + c)] = 0
                keep = keep.view(c, k, 1, 1)
                h = layer.register_forward_hook(lambda m, inp, o: o * keep)
                try:
                    o = model(x[i:i + 1].expand(c, -1, -1, -1))
                finally:
                    h.remove()
                ablated[i, c0:c0 + c] = o[:, cls[i]]
        w = (base.view(n, 1) - ablated) / (base.view(n, 1) + 1e-7)
        cam = (w[..., None, None] * a).sum(1)
        return finish_cam(cam, x.shape[2:]), cam


# ---- the outputs every Loupe attribution step produces (so both sides do the same work) ------------------------
# Loupe's rows run the real IAnalysis classes: besides the maps they copy each input's map out of the tensor, make a
# heatmap overlay per input (min-max per map, 256-entry colour table, alpha 0.55 over the de-normalised image) and
# tile the overlays into the step's grid. pytorch-grad-cam's show_cam_on_image and Captum's visualize_image_attr do
# the same per image; here it is one batched pass, as Loupe's Display.Overlays.
_LUT = torch.linspace(0, 1, 256).unsqueeze(1) * torch.tensor([[0.99, 0.91, 0.14]]) + 0.01   # any 256 x 3 table


def emit(x, raw, display, extra_raw=None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    n, c, h, w = x.shape
    pixels = (x * torch.tensor(std).view(1, c, 1, 1) + torch.tensor(mean).view(1, c, 1, 1)).clamp(0, 1)
    arrays = [r.numpy().copy() for r in raw.detach().float().contiguous()]
    if extra_raw is not None:
        arrays += [r.numpy().copy() for r in extra_raw.detach().float().contiguous()]
    m = display if display.shape[-2:] == (h, w) else F.interpolate(display.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    flat = m.reshape(n, -1)
    mn = flat.amin(1, keepdim=True)
    rng = flat.amax(1, keepdim=True) - mn
    scaled = torch.where(rng > 0, (flat - mn) / rng.clamp_min(1e-30), torch.zeros_like(flat))
    heat = _LUT.index_select(0, (scaled * 255).round().long().flatten()).view(n, h, w, 3)
    bg = pixels.expand(-1, 3, -1, -1) if c == 1 else pixels
    rgb = ((bg.permute(0, 2, 3, 1) * 0.45 + heat * 0.55) * 255).round().to(torch.uint8).contiguous().numpy()
    tiles = [rgb[i].copy() for i in range(n)]
    cols = int(np.ceil(np.sqrt(n)))
    rows = (n + cols - 1) // cols
    grid = np.full((rows * h + (rows + 1) * 2, cols * w + (cols + 1) * 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        oy, ox = 2 + (i // cols) * (h + 2), 2 + (i % cols) * (w + 2)
        grid[oy:oy + h, ox:ox + w] = t
    return arrays, tiles, grid


def emitted(fn, x, **norm):
    """fn's maps, then Loupe's outputs for them (display of a per-channel map: max |.| over channels)."""
    out = fn()
    maps, extra = out if isinstance(out, tuple) else (out, None)
    display = maps.abs().amax(1) if maps.dim() == 4 else maps
    return emit(x, maps, display, extra, **norm)


# ---- path and perturbation methods (Captum) ----------------------------------------------------------------------
def integrated_gradients(model, x, cls, steps=50):
    # Captum's default: Gauss-Legendre points and weights on [0, 1], zero baseline; all steps in one batch per image.
    pts, wts = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((pts + 1) / 2, dtype=torch.float32)
    weights = torch.tensor(wts / 2, dtype=torch.float32)
    result = []
    for i in range(x.shape[0]):
        path = (alphas.view(-1, 1, 1, 1) * x[i:i + 1]).requires_grad_(True)
        s = model(path)[:, cls[i]].sum()
        g = torch.autograd.grad(s, path)[0]
        result.append((g * weights.view(-1, 1, 1, 1)).sum(0) * x[i])
    return torch.stack(result)


def occlusion(model, x, cls, window=56, stride=56, chunk=64):
    # Captum Occlusion with a zero baseline: score drop of each window, averaged over the windows covering a pixel.
    n, c, h, w = x.shape
    pos = [(y, z) for y in range(0, h - window + 1, stride) for z in range(0, w - window + 1, stride)]
    with torch.no_grad():
        base = top1_score(model(x), cls)
        attr = torch.zeros(n, c, h, w)
        count = torch.zeros(1, 1, h, w)
        for y, z in pos:
            count[..., y:y + window, z:z + window] += 1
        for i in range(n):
            for p0 in range(0, len(pos), chunk):
                ps = pos[p0:p0 + chunk]
                copies = x[i:i + 1].repeat(len(ps), 1, 1, 1)
                for j, (y, z) in enumerate(ps):
                    copies[j, :, y:y + window, z:z + window] = 0
                drop = base[i] - model(copies)[:, cls[i]]
                for j, (y, z) in enumerate(ps):
                    attr[i, :, y:y + window, z:z + window] += drop[j]
        return attr / count.clamp(min=1)


FASHION = dict(mean=(0.2860,), std=(0.3530,))


# ---- demo CNN ------------------------------------------------------------------------------------------------------
class FashionCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1); self.bn1 = nn.BatchNorm2d(32); self.relu1 = nn.ReLU(); self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1); self.bn2 = nn.BatchNorm2d(64); self.relu2 = nn.ReLU(); self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1); self.bn3 = nn.BatchNorm2d(128); self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1); self.flatten = nn.Flatten(); self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(self.flatten(self.gap(x)))


def activation_max_steps(model, steps=20, lr=0.05):
    # Lucent-style pixel optimisation: sigmoid parameterisation, Adam, one class objective per image (batch 10).
    torch.manual_seed(0)
    p = torch.randn(10, 1, 28, 28).mul_(0.01).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    mean, std = 0.286, 0.353
    for _ in range(steps):
        opt.zero_grad()
        img = torch.sigmoid(p)
        loss = -model((img - mean) / std).diagonal().sum()
        loss.backward()
        opt.step()
    return torch.sigmoid(p).detach()


def max_patches_topk(model, images, batch=250, k=16, channels=16):
    # One streaming pass: relu3 activations, top-k (value, image, y, x) per channel kept across batches.
    store = {}
    h = model.relu3.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    best_v = torch.full((channels, k), -float("inf"))
    best_i = torch.zeros((channels, k), dtype=torch.long)
    try:
        with torch.no_grad():
            for b0 in range(0, images.shape[0], batch):
                model(images[b0:b0 + batch])
                a = store["a"][:, :channels]                        # b x C x 7 x 7
                flat = a.transpose(0, 1).reshape(channels, -1)
                v, i = flat.topk(min(k, flat.shape[1]), 1)
                allv = torch.cat([best_v, v], 1)
                alli = torch.cat([best_i, i + b0 * 49], 1)
                best_v, sel = allv.topk(k, 1)
                best_i = alli.gather(1, sel)
    finally:
        h.remove()
    return best_v, best_i


def kernel_shap(model, x, cls, samples, cell):
    """Captum KernelShap's work: per input, `samples` coalitions of grid cells (the first all, the second none) scored in
    one batched forward (zero fill), then a weighted linear regression (weights 1e6 for all/none, 1 otherwise)."""
    from sklearn.linear_model import LinearRegression
    n, c, h, w = x.shape
    gx = (w + cell - 1) // cell
    labels = (torch.arange(h)[:, None] // cell) * gx + torch.arange(w)[None, :] // cell
    m = int(labels.max()) + 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model(x)                                                   # target selection
    maps = []
    for i in range(n):
        z = (torch.rand(samples, m, generator=g) < 0.5).float()
        z[0], z[1] = 1, 0
        with torch.no_grad():
            y = model(x[i:i + 1] * z[:, labels.flatten()].view(samples, 1, h, w))[:, cls[i]]
        weights = np.ones(samples); weights[:2] = 1e6
        coef = LinearRegression().fit(z.numpy(), y.double().numpy(), sample_weight=weights).coef_
        maps.append(torch.from_numpy(coef).float()[labels].expand(c, h, w))
    return torch.stack(maps)


def issue20_rows(row, r18, x, cls, tag):
    """Issue 20's methods with the reference formulas of tests/fixtures (pytorch-grad-cam's FullGrad and ShapleyCAM,
    Zennit's EpsilonPlus, Captum's DeepLift rescale rule) and Captum's KernelShap work."""
    import copy
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    from make_cams_fixtures import full_grad, shapley_cam, rest, prepared
    from make_lrp_fixtures import lrp_resnet
    from fixture_models import rescaled, deeplift
    hooked = prepared(copy.deepcopy(r18))            # out-of-place ReLUs: gradients at the hooked layer outputs
    dl = rescaled(r18)
    c = cls.tolist()
    row(f"{tag} | full-grad", lambda: emitted(lambda: full_grad(hooked, x, c), x))
    row(f"{tag} | shapley-cam (layer4, rest)", lambda: emitted(lambda: shapley_cam(hooked, hooked.layer4, x, c, rest), x))
    row(f"{tag} | lrp (epsilon-plus)", lambda: emitted(lambda: lrp_resnet(r18, x, "epsilon-plus", None, None), x))
    row(f"{tag} | deeplift", lambda: emitted(lambda: deeplift(dl, x, torch.zeros_like(x), c), x))
    row(f"{tag} | kernel-shap, 25 coalitions, cells of 32", lambda: emitted(lambda: kernel_shap(r18, x, c, 25, 32), x))


# ---- Quantus-style metrics on the demo CNN (the expensive ones; tests/Loupe.Benchmarks QualityMetricBenchmarks) ------
def _norm_max(a):
    return a / a.abs().amax(1, keepdim=True).clamp_min(1e-30)


def road_metric(model, x, cls, percentages=(10, 30, 50, 70, 90), noise=0.01):
    """ROAD (Rong et al. 2022) as its reference code does it: the saliency map, then per image and percentage the
    noisy linear imputation solved with scipy's sparse solver, and one forward of all imputed images."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla
    n, c, h, w = x.shape
    a = _norm_max(input_gradient(model, x, cls).sum(1).reshape(n, -1))
    order = torch.argsort(-a, dim=1, stable=True).numpy()
    offsets = [(-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12)]
    imgs = []
    for i in range(n):
        xi = x[i].double().numpy().reshape(c, -1)
        for p in percentages:
            unknown = np.zeros(h * w, bool)
            unknown[order[i, :int(np.floor(h * w * p / 100 + 1e-9))]] = True
            idx = -np.ones(h * w, int)
            idx[unknown] = np.arange(unknown.sum())
            rows, cols, vals = [], [], []
            rhs = np.zeros((unknown.sum(), c))
            for q in np.flatnonzero(unknown):
                yy, xx = divmod(q, w)
                total = 0.0
                for dy, dx, wt in offsets:
                    y2, x2 = yy + dy, xx + dx
                    if 0 <= y2 < h and 0 <= x2 < w:
                        total += wt
                        r = y2 * w + x2
                        if unknown[r]:
                            rows.append(idx[q]); cols.append(idx[r]); vals.append(-wt)
                        else:
                            rhs[idx[q]] += wt * xi[:, r]
                rows.append(idx[q]); cols.append(idx[q]); vals.append(total)
            out = xi.copy()
            if unknown.any():
                A = sp.csc_matrix((vals, (rows, cols)), shape=(unknown.sum(),) * 2)
                sol = spla.spsolve(A, rhs).reshape(unknown.sum(), c)
                out[:, unknown] = sol.T + noise * np.random.randn(c, unknown.sum())
            imgs.append(torch.from_numpy(out.reshape(c, h, w)).float())
    with torch.no_grad():
        pred = model(torch.stack(imgs)).argmax(1).view(n, -1)
    return (pred == cls.view(n, 1)).double().mean(1)


def region_perturbation_metric(model, x, cls, patch=4, regions=49):
    """Region perturbation (Samek et al. 2017) with Quantus's uniform fill: patches ranked by attribution sum,
    replaced cumulatively, every perturbed copy in one forward; AOPC of the softmax probability."""
    n, c, h, w = x.shape
    a = _norm_max(input_gradient(model, x, cls).sum(1).reshape(n, -1)).view(n, 1, h, w)
    sums = F.avg_pool2d(a, patch).reshape(n, -1) * patch * patch
    order = torch.argsort(-sums, dim=1, stable=True)[:, :regions]
    region = (torch.arange(h)[:, None] // patch) * (w // patch) + torch.arange(w)[None, :] // patch
    full = torch.full((n, (h // patch) * (w // patch)), regions, dtype=torch.long)   # regions not perturbed: never
    full.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    step = full.gather(1, region.reshape(1, -1).expand(n, -1)).view(n, 1, 1, h, w)
    fill = torch.rand(n, 1, c, h, w)
    m = step <= torch.arange(regions).view(1, -1, 1, 1, 1)
    copies = torch.where(m, fill, x.unsqueeze(1)).reshape(-1, c, h, w)
    with torch.no_grad():
        p0 = F.softmax(model(x), 1).gather(1, cls[:, None])
        ps = F.softmax(model(copies), 1).view(n, regions, -1).gather(2, cls.view(n, 1, 1).expand(n, regions, 1)).squeeze(2)
    return torch.cat([torch.zeros(n, 1), p0 - ps], 1).mean(1)


def local_lipschitz_metric(model, x, cls, samples=10, sigma=0.1):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018; Quantus defaults): saliency of the input and of
    `samples` noisy copies (one batch), max over copies of ||e - e'|| / ||x - x'||, maps normalised by their max."""
    n = x.shape[0]
    e = _norm_max(input_gradient(model, x, cls).reshape(n, -1))
    xs = x.unsqueeze(0) + sigma * torch.randn((samples,) + tuple(x.shape))
    es = _norm_max(input_gradient(model, xs.reshape(-1, *x.shape[1:]), cls.repeat(samples)).reshape(samples * n, -1)).view(samples, n, -1)
    return ((e.unsqueeze(0) - es).norm(dim=2) / (x.unsqueeze(0) - xs).reshape(samples, n, -1).norm(dim=2)).amax(0)


def define_rows():
    """The Python rows in order: (name, function, repeats or None for the default)."""
    rows = []

    def row(name, fn, repeats=None):
        rows.append((name, fn, repeats))

    torch.manual_seed(0)
    r18 = torchvision.models.resnet18().eval()
    for p in r18.parameters():
        p.requires_grad_(False)
    guided, deconv = with_relu_rule(r18, _Guided), with_relu_rule(r18, _Deconv)
    for b in (1, 8):
        torch.manual_seed(0)
        x = torch.randn(b, 3, 224, 224)
        with torch.no_grad():
            cls = r18(x).argmax(1)
        tag = f"resnet18 b{b}"

        def fwd(x=x):
            with torch.no_grad():
                r18(x)
        row(f"{tag} | forward (no grad)", fwd)
        row(f"{tag} | forward+backward to input", lambda x=x, cls=cls: input_gradient(r18, x, cls))
        row(f"{tag} | saliency", lambda x=x, cls=cls: emitted(lambda: saliency(r18, x, cls), x))
        row(f"{tag} | gradient-x-input", lambda x=x, cls=cls: emitted(lambda: gradient_x_input(r18, x, cls), x))
        row(f"{tag} | guided-backprop", lambda x=x, cls=cls: emitted(lambda: input_gradient(guided, x, cls), x))
        row(f"{tag} | deconvnet", lambda x=x, cls=cls: emitted(lambda: input_gradient(deconv, x, cls), x))
        row(f"{tag} | grad-cam (layer4)", lambda x=x, cls=cls: emitted(lambda: grad_cam(r18, r18.layer4, x, cls), x))
        row(f"{tag} | grad-cam-plus-plus (layer4)", lambda x=x, cls=cls: emitted(lambda: grad_cam_pp(r18, r18.layer4, x, cls), x))
        row(f"{tag} | layer-cam (layer4)", lambda x=x, cls=cls: emitted(lambda: layer_cam(r18, r18.layer4, x, cls), x))
        if b == 8:
            issue20_rows(row, r18, x, cls, tag)
            # ROAD at ImageNet size: scipy's solver on 40 systems of up to 45,000 unknowns, ~a minute a call.
            row(f"{tag} | road, 5 percentages", lambda x=x, cls=cls: road_metric(r18, x, cls), 5)
        if b == 1:
            row(f"{tag} | integrated-gradients, 50 steps", lambda x=x, cls=cls: emitted(lambda: integrated_gradients(r18, x, cls, 50), x), 7)
            row(f"{tag} | occlusion, 16 windows of 56²", lambda x=x, cls=cls: emitted(lambda: occlusion(r18, x, cls, 56, 56), x))

    fashion = FashionCnn()
    fashion.load_state_dict(torch.load(os.path.join(ROOT, "tests", "fixtures", "fashion_cnn_seed0.pt")))
    fashion.eval()
    for p in fashion.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    x8 = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        cls8 = fashion(x8).argmax(1)
    row("fashion-cnn b8 | score-cam (relu3)", lambda: emitted(lambda: score_cam(fashion, fashion.relu3, x8, cls8), x8, **FASHION))
    row("fashion-cnn b8 | ablation-cam (relu3)", lambda: emitted(lambda: ablation_cam(fashion, fashion.relu3, x8, cls8), x8, **FASHION))
    row("fashion-cnn b8 | road, 5 percentages", lambda: road_metric(fashion, x8, cls8))
    row("fashion-cnn b8 | region-perturbation, 4×4 patches, 49 regions", lambda: region_perturbation_metric(fashion, x8, cls8))
    row("fashion-cnn b8 | local-lipschitz, 10 samples", lambda: local_lipschitz_metric(fashion, x8, cls8))
    row("fashion-cnn b10 | activation-max, 20 steps, pixels", lambda: activation_max_steps(fashion))
    imgs = torch.randn(10000, 1, 28, 28)
    row("fashion-cnn 10k | max-patches top-k pass (relu3, 16 channels)", lambda: max_patches_topk(fashion, imgs), 5)

    # Transformers / modern CNNs, the models Loupe's onnx backend runs from export_models.py's files (same weights).
    # Built on their first call (the warm-up calls of both modes), so other rows do not pay for them.
    from export_models import MODELS, bench_model
    built = {}
    # swin_t and regnet_y_400mf: the torchvision backend builds them itself (its rows "swin_t b1, torchvision | ...").
    for name in (*MODELS, "swin_t", "regnet_y_400mf"):
        for b in (1, 8):
            torch.manual_seed(0)
            x = torch.randn(b, 3, 224, 224)

            def model(name=name):
                if name not in built:
                    built[name] = bench_model(name)
                return built[name]

            def fwd(x=x, model=model):
                with torch.no_grad():
                    model()(x)

            row(f"{name} b{b} | forward (no grad)", fwd, 7)
            row(f"{name} b{b} | forward+backward to input", lambda x=x, model=model: input_gradient(model(), x, top_class(model(), x)), 7)
    return rows


_top = {}


def top_class(model, x):
    """The predicted classes of x, computed once per (model, input): the timed call is forward+backward only."""
    key = (id(model), id(x))
    if key not in _top:
        with torch.no_grad():
            _top[key] = model(x).argmax(1)
    return _top[key]


class LoupeServer:
    """tests/Loupe.Benchmarks --serve: single calls of Loupe's rows on request (protocol in Serve.cs)."""

    def __init__(self, dll):
        import subprocess
        self.proc = subprocess.Popen(["dotnet", dll, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        first = self.proc.stdout.readline()
        if not first.startswith("ROWS "):
            raise RuntimeError(f"Loupe server did not start: {first!r}")
        rows = json.loads(first[5:])
        self.floor = {r["name"]: r["floor"] for r in rows}
        # Loupe rows per Python row: the row of the same name, and the same work on another backend
        # ("fashion-cnn b8, onnx-runtime | score-cam (relu3)" is compared with "fashion-cnn b8 | score-cam (relu3)").
        self.variants = {}
        for r in rows:
            self.variants.setdefault(r["python"], []).append(r["name"])

    def run(self, name, count=1):
        self.proc.stdin.write(f"{name}\t{count}\n")
        answer = self.proc.stdout.readline()
        if not answer.startswith("["):
            raise RuntimeError(f"Loupe row {name!r}: {answer.strip()}")
        return json.loads(answer)

    def close(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait()


def paired(rows, dll, repeats, pause, only=""):
    """Per row: warm both sides, then `repeats` rounds, each one Python call, one Loupe call and (when the row has one)
    one call of its Loupe floor, in the order of `round_order` with `pause` seconds between calls (OpenMP workers of the side that
    just ran stop spinning). Ratios are medians of per-round ratios: each round's calls ran within seconds. `only` picks
    rows by a substring of the Python row's name or of a Loupe row's ("onnx-runtime" names only Loupe rows: the same work
    on another backend, compared with the one Python row)."""
    server = LoupeServer(dll)
    out = {}
    try:
        for pyname, fn, rep in rows:
            names = server.variants.get(pyname, [])
            if only not in pyname:
                names = [n for n in names if only in n]
                if not names:
                    continue
            elif not names:
                print(f"{pyname}: no Loupe row", file=sys.stderr, flush=True)
            for name in names:
                try:
                    out[name] = paired_row(server, name, fn, rep or repeats, pause)
                except RuntimeError as e:       # one failing row must not lose the others' results
                    print(f"{name}: FAILED: {e}", file=sys.stderr, flush=True)
    finally:
        server.close()
    return out


def warm(call, calls=30, seconds=1.0):
    """Warm-up of one side until it runs as it will in a long run: at least 2 calls, and up to `calls` calls or
    `seconds` in all (a row of ~10 ms gets 30). .NET compiles a method first without optimisation and again, optimised,
    on a background thread after ~30 calls; with only 2 warm-up calls a 10 ms Loupe row was timed in that transition —
    its own unoptimised code and the compiler's thread competing for the 2 cores — and read 1.1-2.0x its floor from one
    run to the next (1.14-1.24x with every method compiled optimised at once, DOTNET_TieredCompilation=0).
    Python's side gets the same warm-up (PyTorch's allocator and kernel caches warm up too)."""
    s = time.perf_counter()
    for i in range(calls):
        call()
        if i >= 1 and time.perf_counter() - s >= seconds:
            break


def round_order(sides, r):
    """The order of round r's calls: Python leads every round, then an untimed Loupe call ("wake"), then Loupe and its
    floor taking turns (P w L F, P w F L, ...; rows without a floor: P w L). Python's single-threaded calls leave the
    VM's second vCPU idle for as long as they run, and on this 2-core VM the next call after a vCPU has idled for
    ~100 ms or more runs at about half speed (2026-12-05, the demo CNN's ROAD floor: median 9.3 ms 50 ms after another
    Loupe call, 19.7 ms 50 ms after Python's ROAD call; tools/bench/round_order_probe.py). Without the wake-up call,
    whichever of Loupe and its floor followed Python took that penalty: a rotation of the three put Loupe there in two
    rounds of three and its floor in one, and alternating them made the per-round ratios bimodal (~2x and ~0.5x)."""
    python = sides[0]
    wake = ("wake", sides[-1][1])
    rest = sides[1:] if r % 2 == 0 else sides[1:][::-1]
    return [python, wake, *rest]


def paired_row(server, name, fn, n, pause):
    """One Loupe row against its Python function (and its Loupe floor), `n` rounds (order: `round_order`)."""
    floor = server.floor[name]
    warm(fn)
    warm(lambda: server.run(name)[0])
    if floor:
        warm(lambda: server.run(floor)[0])

    def python_call():
        s = time.perf_counter()
        fn()
        return (time.perf_counter() - s) * 1000
    sides = [("python", python_call), ("loupe", lambda: server.run(name)[0])]
    if floor:
        sides.append(("floor", lambda: server.run(floor)[0]))
    t = {k: [] for k, _ in sides}
    for r in range(n):
        for k, call in round_order(sides, r):
            time.sleep(pause)
            v = call()
            if k in t:
                t[k].append(v)
    med = statistics.median
    o = {
        "python_ms": round(med(t["python"]), 2), "loupe_ms": round(med(t["loupe"]), 2),
        "ratio": round(med([a / b for a, b in zip(t["loupe"], t["python"])]), 3),
        "ratios": [round(a / b, 3) for a, b in zip(t["loupe"], t["python"])],
    }
    o["times"] = {k: [round(v, 3) for v in vs] for k, vs in t.items()}   # per round, in round order (round_order)
    if floor:
        o.update(floor=floor, floor_ms=round(med(t["floor"]), 2),
                 floor_ratio=round(med([a / b for a, b in zip(t["loupe"], t["floor"])]), 3))
    print(f"{name}: Loupe {o['loupe_ms']} ms, Python {o['python_ms']} ms, {o['ratio']}x"
          + (f", {o['floor_ratio']}x its floor" if floor else ""), file=sys.stderr, flush=True)
    return o


def table(results, rounds):
    """Markdown table of paired results."""
    lines = ["| model, batch | work (same model, input, batch, 2 threads) | Loupe median | Python median | "
             f"Loupe / Python (median of {rounds} paired rounds) | Loupe / its floor (the passes it needs) |",
             "|---|---|---:|---:|---:|---|"]
    for name, o in results.items():
        tag, work = name.split(" | ", 1)
        fl = f"{o['floor_ratio']:.2f}× ({o['floor'].split(' | ', 1)[1]}: {o['floor_ms']:.1f} ms)" if "floor" in o else "— (is a floor)"
        lines.append(f"| {tag} | {work} | {o['loupe_ms']:.1f} ms | {o['python_ms']:.1f} ms | **{o['ratio']:.2f}×** | {fl} |")
    if not results:
        return "\n".join(lines) + "\n\nrows: 0 (no row ran: see the log above)"
    worst = max(o["ratio"] for o in results.values())
    lines.append(f"\nrows: {len(results)}, worst Loupe / Python {worst:.2f}×, "
                 f"worst Loupe / floor {max((o['floor_ratio'] for o in results.values() if 'floor_ratio' in o), default=0):.2f}×")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", default="")
    ap.add_argument("--paired", metavar="LOUPE_BENCHMARKS_DLL",
                    help="alternate single calls with Loupe's rows (Loupe.Benchmarks.dll --serve); prints JSON, then a table on stderr")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between calls in --paired mode")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.paired:
        # Every Python row goes to paired(), which also matches `only` against the Loupe rows' names.
        results = paired(define_rows(), args.paired, args.repeats, args.pause, args.only)
        print(json.dumps(results, indent=1, ensure_ascii=False))
        print(table(results, args.repeats), file=sys.stderr)
        if not results:
            sys.exit(f"python_bench.py: no row ran (--only {args.only!r} matches no Python or Loupe row, or every row failed)")
        return
    rows = [r for r in define_rows() if args.only in r[0]]
    results = {}
    for name, fn, repeats in rows:
        results[name] = round(timed(fn, repeats or args.repeats), 2)
        print(f"{name}: {results[name]} ms", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
