#!/usr/bin/python3
"""Exports torchvision CNNs with random weights to ONNX for the runtime benchmarks.

    /usr/bin/python3 scripts/zoo_torchvision.py OUT_DIR [--models resnet18,mobilenet_v2,squeezenet1_1] [--seed 0]

Needs Debian's python3-torchvision (the `python3` on PATH may be another
interpreter without torch, hence /usr/bin/python3). Each model gets
torchvision's own initialisation from a fixed seed, then its BatchNorm layers
get random statistics and affine parameters (drawn from the same seed) so that
folding BatchNorm is exercised with values other than the identity. Exported
in eval mode with torch.onnx.export, opset 13, input [N, 3, 224, 224] with a
dynamic batch dimension; written to a temporary name and renamed.
"""
import argparse
import os
import sys

import torch
import torchvision


def build(name, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--models", default="resnet18,mobilenet_v2,squeezenet1_1")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for name in a.models.split(","):
        if not hasattr(torchvision.models, name):
            sys.exit(f"zoo_torchvision: unknown torchvision model '{name}'")
        model = build(name, a.seed)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(a.seed))
        out = os.path.join(a.out_dir, f"{name}.onnx")
        tmp = out + ".tmp"
        torch.onnx.export(model, x, tmp, opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        os.replace(tmp, out)
        print(f"zoo: {out} ({os.path.getsize(out):,} bytes)")


if __name__ == "__main__":
    main()
