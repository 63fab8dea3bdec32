#!/usr/bin/env python3
"""Where a selfsup ViT export keeps what it knows: pooled or per-patch tokens.

Usage:
    python benchmarks/vit_pooling_probe.py --export runs/ijepa-cpu/export \
        --data ~/.cache/selfsup/datasets/fashion-mnist [--train 20000] [--test 10000]

Loads a Fashion-MNIST ViT export (`model.safetensors` + `config.json`, timm's
names) into timm's `VisionTransformer` with `strict=True` and compares, by the
same weighted kNN as selfsup (k = 200, T = 0.1, cosine) and by RankMe on the
first 1 024 training images:
  - `mean`: the mean of the final-normed patch tokens, the representation
    selfsup evaluates and I-JEPA / MAE evaluate;
  - `tokens`: every final-normed patch token, concatenated (N * D numbers);
  - `raw`: the normalised pixels themselves.
It also reports the same for a freshly initialised ViT of the same shape
(timm's initialisation), so that what training changed can be read off.

Analysis only: selfsup itself runs no Python.
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import fmnist


def rankme(z):
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + 1e-7
    return float((-(p * p.log()).sum()).exp())


def build(cfg):
    import timm

    m = cfg["model"]
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=m["image_size"],
        patch_size=m["patch_size"],
        in_chans=cfg["in_channels"],
        num_classes=0,
        embed_dim=m["embed_dim"],
        depth=m["depth"],
        num_heads=m["heads"],
    )


@torch.no_grad()
def features(model, x, batch=500):
    mean, tokens = [], []
    for i in range(0, len(x), batch):
        t = model.forward_features(x[i : i + batch])[:, model.num_prefix_tokens :]
        mean.append(t.mean(1))
        tokens.append(t.flatten(1))
    return {"mean": torch.cat(mean), "tokens": torch.cat(tokens)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from safetensors.torch import load_file

    cfg = json.loads((args.export / "config.json").read_text())
    mean, std = cfg["normalize"]["mean"][0], cfg["normalize"]["std"][0]
    xtr, ytr = fmnist.load(args.data, "train")
    xte, yte = fmnist.load(args.data, "t10k")
    prep = lambda x: ((torch.from_numpy(x.copy()).float() / 255 - mean) / std)[:, None]
    xtr, xte = prep(xtr[: args.train]), prep(xte[: args.test])
    ytr, yte = torch.from_numpy(ytr[: args.train]), torch.from_numpy(yte[: args.test])

    trained = build(cfg).eval()
    trained.load_state_dict(load_file(str(args.export / "model.safetensors")), strict=True)
    fresh = build(cfg).eval()
    rows = [("raw", "pixels", xtr.flatten(1), xte.flatten(1))]
    for name, model in [("trained", trained), ("fresh init", fresh)]:
        a, b = features(model, xtr), features(model, xte)
        for kind in ("mean", "tokens"):
            rows.append((name, kind, a[kind], b[kind]))
    print(f"{'encoder':11s} {'features':8s} {'dims':>6s} {'kNN top-1 %':>11s} {'RankMe':>7s}")
    for name, kind, a, b in rows:
        acc = 100 * fmnist.knn_top1(a, ytr, b, yte)
        print(f"{name:11s} {kind:8s} {a.shape[1]:6d} {acc:11.2f} {rankme(a[:1024]):7.1f}")


if __name__ == "__main__":
    main()
