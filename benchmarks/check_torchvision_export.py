#!/usr/bin/env python3
"""Check that a selfsup export loads into PyTorch and computes selfsup's features.

Usage:
    python benchmarks/check_torchvision_export.py EXPORT_DIR INPUT.safetensors EXPECTED.safetensors

EXPORT_DIR holds `model.safetensors` and `config.json` as written by selfsup's
`export_encoder`. For `resnet18` / `resnet50` the model is torchvision's, with
`conv1` replaced for the CIFAR stem or a channel count other than 3, `maxpool`
replaced by `Identity` for the CIFAR stem, and `fc` replaced by `Identity` (the
encoder ends at the global average pool); `small_cnn` is rebuilt here from its
description in config.json. Weights are loaded with `strict=True`, the model is
put in eval mode and run on the single tensor of INPUT (or its `input`), and
the output is compared with the single tensor of EXPECTED (or its `features`).

Prints one line starting with PASS or FAIL; exits with 1 on FAIL.
Needs torch, torchvision and safetensors.
"""
import argparse
import json
import sys
from pathlib import Path

TOLERANCE = 1e-4


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def single_tensor(path, preferred):
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    if preferred in tensors:
        return tensors[preferred]
    fail(f"{path}: expected one tensor or one named '{preferred}', found {sorted(tensors)}")


def build_resnet(config):
    import torch
    import torchvision

    arch = config["arch"]
    stem = config.get("stem") or "imagenet"
    in_channels = int(config["in_channels"])
    model = getattr(torchvision.models, arch)(weights=None)
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    elif stem == "imagenet":
        if in_channels != 3:
            model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        fail(f"unknown stem {stem!r} in config.json")
    model.fc = torch.nn.Identity()
    return model


def build_small_cnn(config):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c_out)

    class SmallCnn(nn.Module):
        def __init__(self, in_channels, channels):
            super().__init__()
            widths = [in_channels] + list(channels)
            self.blocks = nn.ModuleList(Block(a, b) for a, b in zip(widths, widths[1:]))

        def forward(self, x):
            for i, block in enumerate(self.blocks):
                x = torch.relu(block.bn(block.conv(x)))
                if i < len(self.blocks) - 1:
                    x = nn.functional.max_pool2d(x, 2)
            return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    return SmallCnn(int(config["in_channels"]), config["channels"])


def describe(config):
    arch = config["arch"]
    detail = f"channels {config.get('channels')}" if arch == "small_cnn" else f"{config.get('stem')} stem"
    return f"{arch} ({detail}, {config['in_channels']} input channel(s), out_dim {config.get('out_dim')})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("expected", type=Path)
    args = parser.parse_args()

    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        fail(f"missing Python package: {e}")

    config_path = args.export_dir / "config.json"
    if not config_path.is_file():
        fail(f"{config_path}: not found (is {args.export_dir} an export folder?)")
    config = json.loads(config_path.read_text())
    weights_path = args.export_dir / config.get("weights", "model.safetensors")
    arch = config.get("arch")
    if arch in ("resnet18", "resnet50"):
        try:
            model = build_resnet(config)
        except ImportError as e:
            fail(f"torchvision is needed for {arch}: {e}")
    elif arch == "small_cnn":
        model = build_small_cnn(config)
    else:
        fail(f"{config_path}: unsupported arch {arch!r}")

    state = load_file(str(weights_path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        fail(f"{describe(config)}: load_state_dict(strict=True) refused {weights_path}: {e}")
    model.eval()

    x = single_tensor(args.input, "input").float()
    expected = single_tensor(args.expected, "features").float()
    with torch.no_grad():
        got = model(x)
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{describe(config)}: output shape {list(got.shape)} != expected {list(expected.shape)}")
    if not torch.isfinite(got).all():
        fail(f"{describe(config)}: non-finite features")
    diff = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    summary = (
        f"{describe(config)}: {len(state)} tensors loaded strictly, features {list(got.shape)}, "
        f"max |diff| = {diff:.3g} (max |feature| = {scale:.3g}, tolerance {TOLERANCE:g})"
    )
    if diff < TOLERANCE:
        print(f"PASS: {summary}")
    else:
        fail(summary)


if __name__ == "__main__":
    main()
