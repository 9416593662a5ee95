#!/usr/bin/env bash
# Installs the system packages Loupe's build needs on Debian/Ubuntu. Idempotent; safe to re-run.
#   patchelf, gcc : the TorchSharp compatibility step (build/Loupe.NativeCompat.targets): on systems whose
#                   libstdc++ lacks GLIBCXX_3.4.32 (Debian 12, Ubuntu 22.04), and on every Linux for the deferred
#                   release of TorchSharp's scalars (docs/design.md, "Scalars freed mid-call").
#   chromium      : headless browser for the HTML report tests (tests/Loupe.Report.Tests, PuppeteerSharp).
#   tesseract-ocr : OCR of the labelled figures in the tests (LabelledRunTests reads comparison.png's words).
#   --train       : also dataset-fashion-mnist, to retrain the demo CNN (tools/Loupe.TrainDemo).
#   --fixtures    : also python3-torch/torchvision/sklearn/skimage/onnx, to regenerate tests/fixtures and run the Python
#                   side of the benchmarks (tools/bench, the t-SNE comparison), and Quantus 0.6's dependencies (pandas,
#                   opencv, tqdm, matplotlib, cachetools) for make_quantus_fixtures.py; never needed by CI.
#   --bench       : also OpenBLAS for Debian's PyTorch, the Python side of tools/bench's paired rows (without it torch
#                   falls back to the reference BLAS: vit_b_16's forward takes 13.7 s instead of ~0.3 s).
set -euo pipefail
pkgs=()
command -v patchelf >/dev/null 2>&1 || pkgs+=(patchelf)
command -v gcc >/dev/null 2>&1 || pkgs+=(gcc)
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
command -v tesseract >/dev/null 2>&1 || pkgs+=(tesseract-ocr tesseract-ocr-eng)
for arg in "$@"; do
  case "$arg" in
    --train) [ -d /usr/share/datasets/fashion-mnist ] || pkgs+=(dataset-fashion-mnist) ;;
    --bench) dpkg -s libopenblas0-pthread >/dev/null 2>&1 || pkgs+=(libopenblas0-pthread) ;;
    --fixtures) pkgs+=(python3-torch python3-torchvision python3-sklearn python3-skimage python3-onnx python3-pandas python3-opencv python3-tqdm python3-matplotlib python3-cachetools) ;;
  esac
done
if [ ${#pkgs[@]} -eq 0 ]; then echo "setup: nothing to install"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "setup: please install: ${pkgs[*]}" >&2; exit 1; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}"
echo "setup: installed ${pkgs[*]}"
