#!/usr/bin/env python3
"""Check that a selfsup ViT export loads into timm and computes selfsup's features.

Usage:
    python benchmarks/check_timm_export.py EXPORT_DIR INPUT.safetensors EXPECTED.safetensors

EXPORT_DIR holds `model.safetensors` and `config.json` as written by selfsup's
`export_encoder` for a `vit_tiny` / `vit_small` encoder. The model is timm's
`VisionTransformer`, built with `timm.create_model('vit_tiny_patch16_224',
img_size=.., patch_size=.., in_chans=.., num_classes=0, embed_dim=.., depth=..,
num_heads=.., dynamic_img_size=True)` from config.json (the recipe under
`timm.python` says the same), loaded with `strict=True`, put in eval mode and
run on the single tensor of INPUT (or its `input`); its output (the final-normed
class token) is compared with the single tensor of EXPECTED (or its `features`).
INPUT may have another size than `image_size`: both sides resample `pos_embed`.

Prints one line starting with PASS or FAIL; exits with 1 on FAIL.
Needs torch, timm and safetensors (`pip install timm` into the benchmark venv).
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


def build_vit(config):
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=int(config["image_size"]),
        patch_size=int(config["patch_size"]),
        in_chans=int(config["in_channels"]),
        num_classes=0,
        embed_dim=int(config["embed_dim"]),
        depth=int(config["depth"]),
        num_heads=int(config["heads"]),
        dynamic_img_size=True,
    )


def describe(config):
    return (
        f"{config['arch']} (patch {config['patch_size']}, image {config['image_size']}, "
        f"embed_dim {config['embed_dim']}, depth {config['depth']}, heads {config['heads']}, "
        f"{config['in_channels']} input channel(s))"
    )


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
    arch = config.get("arch")
    if arch not in ("vit_tiny", "vit_small"):
        fail(f"{config_path}: arch {arch!r} is not a ViT (use check_torchvision_export.py)")
    try:
        model = build_vit(config)
    except ImportError as e:
        fail(f"timm is needed for {arch}: {e}")

    weights_path = args.export_dir / config.get("weights", "model.safetensors")
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
        f"{describe(config)}: {len(state)} tensors loaded strictly, input {list(x.shape)}, "
        f"features {list(got.shape)}, max |diff| = {diff:.3g} (max |feature| = {scale:.3g}, "
        f"tolerance {TOLERANCE:g})"
    )
    if diff < TOLERANCE:
        print(f"PASS: {summary}")
    else:
        fail(summary)


if __name__ == "__main__":
    main()
