#!/usr/bin/env python3
"""Check that a selfsup BEiT export (timm `Beit` names) loads into timm and computes selfsup's features.

Usage:
    python benchmarks/check_timm_beit_export.py EXPORT_DIR INPUT.safetensors EXPECTED.safetensors

EXPORT_DIR holds `model.safetensors` and `config.json` as written by selfsup's
`export_beit` (a BEiT run writes them to `<run>/export/beit/`). The model is
`timm.create_model(config['timm']['model_name'], pretrained=False,
**config['timm']['kwargs'])` (beit_base_patch16_224 with selfsup's sizes,
absolute position embedding, no relative position bias, no layer scale (init_values=0.0),
global_pool='token', num_classes=0), loaded with `strict=True`, put in eval
mode and run on INPUT's `input`; its output (the final-normed class token) is
compared with EXPECTED's `features`.

Prints one line starting with PASS or FAIL; exits with 1 on FAIL.
Needs torch, timm and safetensors.
"""
import argparse
import json
import sys
from pathlib import Path

TOLERANCE = 1e-4


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("expected", type=Path)
    args = parser.parse_args()
    try:
        import timm
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        fail(f"missing Python package: {e}")

    config = json.loads((args.export_dir / "config.json").read_text())
    if config.get("format") != "selfsup-timm-beit-v1":
        fail(f"{args.export_dir}/config.json: format {config.get('format')!r} is not a timm Beit export")
    recipe = config["timm"]
    model = timm.create_model(recipe["model_name"], pretrained=False, **recipe["kwargs"])
    state = load_file(str(args.export_dir / "model.safetensors"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        fail(f"strict load into timm {type(model).__name__}: {e}")
    model.eval()
    x = load_file(str(args.input))["input"]
    want = load_file(str(args.expected))["features"]
    with torch.no_grad():
        got = model(x)
    if got.shape != want.shape:
        fail(f"features of shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err = (got - want).abs().max().item()
    if not err <= TOLERANCE:
        fail(f"timm Beit features differ from selfsup's by up to {err:.3g} (tolerance {TOLERANCE})")
    kw = recipe["kwargs"]
    print(
        f"PASS: timm {type(model).__name__} (patch {kw['patch_size']}, image {kw['img_size']}, "
        f"embed_dim {kw['embed_dim']}, depth {kw['depth']}, heads {kw['num_heads']}) loads "
        f"{len(state)} tensors strictly; features within {err:.2g} of selfsup's"
    )


if __name__ == "__main__":
    main()
