"""PyTorch reference of selfsup's VQ tokenizer export (BEiT's visual tokenizer).

Rebuilds the network an export's config.json describes, loads
model.safetensors into it with strict=True, tokenizes a fixed input and
compares the codes (exactly) and the reconstructions (to 1e-4) with the ones
selfsup computed.

    python benchmarks/vq_tokenizer_reference.py EXPORT_DIR INPUT.safetensors EXPECTED.safetensors

INPUT holds `input` ([B, C, H, W], normalised as config.json's `normalize`
says); EXPECTED holds `codes` ([B, g, g], int64) and `reconstruction`
([B, C, H, W]). Prints PASS (exit 0) or FAIL (exit 1) with what differs.

The network (crates/selfsup-vision/src/methods/vq_tokenizer.rs):
  encoder: conv_in 3x3 -> [ReLU, down.i 4x4 stride 2] x log2(patch) -> res -> ReLU -> conv_out 1x1
  res:     x + conv2_1x1(ReLU(conv1_3x3(ReLU(x))))
  quantizer.embed [K, code_dim]: nearest code in Euclidean distance
  decoder: conv_in 3x3 -> res -> [ReLU, up.i 4x4 stride-2 transposed] x log2(patch) -> ReLU -> conv_out 3x3
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class Encoder(nn.Module):
    def __init__(self, c, h, d, levels):
        super().__init__()
        self.conv_in = nn.Conv2d(c, h, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(h, h, 4, stride=2, padding=1) for _ in range(levels))
        self.res = Res(h)
        self.conv_out = nn.Conv2d(h, d, 1)

    def forward(self, x):
        x = self.conv_in(x)
        for conv in self.down:
            x = conv(torch.relu(x))
        return self.conv_out(torch.relu(self.res(x)))


class Decoder(nn.Module):
    def __init__(self, c, h, d, levels):
        super().__init__()
        self.conv_in = nn.Conv2d(d, h, 3, padding=1)
        self.res = Res(h)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1) for _ in range(levels)
        )
        self.conv_out = nn.Conv2d(h, c, 3, padding=1)

    def forward(self, x):
        x = self.res(self.conv_in(x))
        for conv in self.up:
            x = conv(torch.relu(x))
        return self.conv_out(torch.relu(x))


class Quantizer(nn.Module):
    def __init__(self, k, d):
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(k, d))

    def codes(self, z):
        """z [B, D, g, g] -> codes [B, g, g]"""
        b, d, gh, gw = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.embed
        dist = (flat**2).sum(1, keepdim=True) - 2 * flat @ e.t() + (e**2).sum(1)[None, :]
        return dist.argmin(1).reshape(b, gh, gw)

    def lookup(self, codes):
        return self.embed[codes].permute(0, 3, 1, 2)


class VqTokenizer(nn.Module):
    def __init__(self, arch):
        super().__init__()
        c, h, d = arch["in_channels"], arch["hidden"], arch["code_dim"]
        p = arch["patch_size"]
        levels = p.bit_length() - 1
        assert 1 << levels == p, f"patch_size {p} is not a power of two"
        self.encoder = Encoder(c, h, d, levels)
        self.quantizer = Quantizer(arch["codebook_size"], d)
        self.decoder = Decoder(c, h, d, levels)

    @torch.no_grad()
    def tokenize(self, x):
        return self.quantizer.codes(self.encoder(x))

    @torch.no_grad()
    def reconstruct(self, codes):
        return self.decoder(self.quantizer.lookup(codes))


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    export, input_file, expected_file = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    cfg = json.loads((export / "config.json").read_text())
    if cfg.get("format") != "selfsup-vq-tokenizer-v1":
        print(f"FAIL: {export}/config.json: format {cfg.get('format')!r} is not a VQ tokenizer export")
        sys.exit(1)
    model = VqTokenizer(cfg["arch"]).eval()
    model.load_state_dict(load_file(str(export / "model.safetensors")), strict=True)
    x = load_file(input_file)["input"]
    expected = load_file(expected_file)
    codes = model.tokenize(x)
    recon = model.reconstruct(codes)
    want_codes = expected["codes"]
    if codes.shape != want_codes.shape or not torch.equal(codes, want_codes.to(codes.dtype)):
        differ = (codes != want_codes.to(codes.dtype)).sum().item() if codes.shape == want_codes.shape else "shape"
        print(f"FAIL: codes differ ({differ} of {want_codes.numel()}); shapes {tuple(codes.shape)} vs {tuple(want_codes.shape)}")
        sys.exit(1)
    err = (recon - expected["reconstruction"]).abs().max().item()
    if not err <= 1e-4:
        print(f"FAIL: reconstructions differ by up to {err:.3g} (tolerance 1e-4)")
        sys.exit(1)
    print(
        f"PASS: strict load; {codes.numel()} codes identical "
        f"({codes.unique().numel()} distinct of {cfg['arch']['codebook_size']}); "
        f"reconstructions within {err:.2g}"
    )


if __name__ == "__main__":
    main()
