"""PyTorch reference for selfsup-video's exported encoder.

Usage: python tubelet_vit_reference.py EXPORT_DIR REFERENCE.safetensors

Builds the tubelet ViT from EXPORT_DIR/config.json in plain PyTorch (Conv3d
tubelet embedding, timm-style pre-norm blocks, final LayerNorm, mean over
tokens), loads EXPORT_DIR/encoder.safetensors with strict=True, checks the
stored `pos_embed` against a 3-D sin-cos embedding computed here, and
compares its features of the reference clips (`clips`) with selfsup's
(`features`) within 1e-4. Prints PASS or FAIL (exit status 1).
"""
import json
import sys

import torch
from safetensors.torch import load_file
from torch import nn


def sincos_1d(dim, length):
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    pos = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([pos.sin(), pos.cos()], dim=1)


def sincos_3d(dim, t, h, w):
    dt = dim // 4
    ds = (dim - dt) // 2
    et, eh, ew = sincos_1d(dt, t), sincos_1d(ds, h), sincos_1d(ds, w)
    grid = torch.cat(
        [
            et[:, None, None, :].expand(t, h, w, dt),
            eh[None, :, None, :].expand(t, h, w, ds),
            ew[None, None, :, :].expand(t, h, w, ds),
        ],
        dim=-1,
    )
    return grid.reshape(t * h * w, dim).float()


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, c, dim, t, p):
        super().__init__()
        self.proj = nn.Conv3d(c, dim, kernel_size=(t, p, p), stride=(t, p, p))


class TubeletViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["embed_dim"]
        self.grid = (
            cfg["frames"] // cfg["tubelet"],
            cfg["image_size"] // cfg["patch_size"],
            cfg["image_size"] // cfg["patch_size"],
        )
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.patch_embed = PatchEmbed(cfg["in_channels"], d, cfg["tubelet"], cfg["patch_size"])
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d), requires_grad=False)
        hidden = max(1, round(d * cfg["mlp_ratio"]))
        eps = cfg["layer_norm_eps"]
        self.blocks = nn.ModuleList(
            [Block(d, cfg["heads"], hidden, eps) for _ in range(cfg["depth"])]
        )
        self.norm = nn.LayerNorm(d, eps=eps)

    def forward(self, clips):
        x = self.patch_embed.proj(clips).flatten(2).transpose(1, 2) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).mean(dim=1)


def main():
    export, reference = sys.argv[1], sys.argv[2]
    cfg = json.load(open(f"{export}/config.json"))
    model = TubeletViT(cfg).eval()
    model.load_state_dict(load_file(f"{export}/encoder.safetensors"), strict=True)
    ref = load_file(reference)
    ok = True
    want_pos = sincos_3d(cfg["embed_dim"], *model.grid)
    pos_err = (model.pos_embed[0] - want_pos).abs().max().item()
    if pos_err > 1e-5:
        print(f"pos_embed differs from the 3-D sin-cos embedding by {pos_err:.2e}")
        ok = False
    with torch.no_grad():
        feats = model(ref["clips"])
    err = (feats - ref["features"]).abs().max().item()
    print(f"features: max abs difference {err:.2e} over {tuple(feats.shape)}")
    if err > 1e-4:
        ok = False
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
