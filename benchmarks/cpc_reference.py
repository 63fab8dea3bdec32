"""A PyTorch reference of selfsup's CPC export (`selfsup export` of a
`[method] name = "cpc"` checkpoint, or a run's `export/` folder).

    python benchmarks/cpc_reference.py EXPORT_DIR [REFERENCE.safetensors]

Builds the network from EXPORT_DIR/config.json (model_type "cpc"), loads
EXPORT_DIR/model.safetensors with strict=True (no missing, no unexpected
key), and, given REFERENCE.safetensors (written by the selfsup-audio test
`tests/cpc_export.rs`: tensors "wave" [B, L], "lengths" [B], "z" [B, T, C],
"c" [B, T, H], "loss" []), checks that this module reproduces selfsup's
latent frames and contexts within 1e-4, and recomputes the InfoNCE loss with
its own code (below) within 1e-4. Prints PASS or FAIL (exit status 1).

Only torch and safetensors are needed. The module is the whole model: use
`CPC.from_export(dir)` and `model.features(wave)` to embed 16 kHz audio
(normalise each clip to zero mean and unit variance first, as
preprocessor_config.json says).
"""
import json
import sys

import torch
from torch import nn
import torch.nn.functional as F
from safetensors.torch import load_file


class ConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel, stride, group_norm):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, bias=False)
        if group_norm:
            # one group per channel, over time: wav2vec 2.0's "group" norm
            self.layer_norm = nn.GroupNorm(cout, cout, eps=1e-5, affine=True)

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "layer_norm"):
            x = self.layer_norm(x)
        return F.gelu(x)


class Encoder(nn.Module):
    def __init__(self, dims, kernels, strides):
        super().__init__()
        layers, cin = [], 1
        for i, (d, k, s) in enumerate(zip(dims, kernels, strides)):
            layers.append(ConvLayer(cin, d, k, s, i == 0))
            cin = d
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wave):
        x = wave.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class CPC(nn.Module):
    """Strided conv encoder -> layer norm (z_t) -> GRU (c_t) -> W_k c_t."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.get("model_type") != "cpc":
            raise ValueError(f"config.json: model_type {cfg.get('model_type')!r}, not 'cpc'")
        c = cfg["conv_dim"][-1]
        self.cfg = cfg
        self.encoder = Encoder(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])
        self.feature_norm = nn.LayerNorm(c, eps=cfg["layer_norm_eps"])
        self.context = nn.GRU(c, cfg["context_dim"], num_layers=cfg["context_layers"],
                              batch_first=True)
        self.predictors = nn.ModuleList(
            nn.Linear(cfg["context_dim"], c) for _ in range(cfg["prediction_steps"]))

    @classmethod
    def from_export(cls, folder):
        with open(f"{folder}/config.json") as f:
            model = cls(json.load(f))
        state = load_file(f"{folder}/model.safetensors")
        model.load_state_dict(state, strict=True)
        return model.eval()

    def frames(self, samples):
        for k, s in zip(self.cfg["conv_kernel"], self.cfg["conv_stride"]):
            samples = 0 if samples < k else (samples - k) // s + 1
        return samples

    def forward(self, wave, lengths=None):
        """z and c of [B, L] waveforms; with `lengths`, each row shorter than
        L is encoded alone on its valid samples (the first conv's group norm
        pools over time) and its frames zero-padded after the encoder."""
        if lengths is None or all(int(n) == wave.shape[1] for n in lengths):
            feats = self.encoder(wave)
        else:
            t = self.frames(wave.shape[1])
            rows = []
            for b, n in enumerate(lengths):
                n = int(n)
                enc = self.encoder(wave[b : b + 1, :n])
                rows.append(F.pad(enc, (0, t - enc.shape[2])))
            feats = torch.cat(rows)
        z = self.feature_norm(feats.transpose(1, 2))
        c, _ = self.context(z)
        return z, c

    def features(self, wave):
        """Time-averaged z and c of one unpadded clip batch: the probes' two layers."""
        z, c = self(wave)
        return z.mean(1), c.mean(1)


def info_nce(model, z, c, frame_lens):
    """CPC's loss, written independently of selfsup: for each step k, every
    context with a valid frame k ahead scores all such targets of the batch
    (its own is the positive); cross-entropy, mean over anchors, then over k."""
    losses = []
    for k, w in enumerate(model.predictors, start=1):
        pred, target = [], []
        for b, n in enumerate(frame_lens):
            if n > k:
                pred.append(w(c[b, : n - k]))
                target.append(z[b, k:n])
        pred, target = torch.cat(pred), torch.cat(target)
        logits = pred @ target.T
        losses.append(F.cross_entropy(logits, torch.arange(len(pred))))
    return torch.stack(losses).mean()


def main():
    folder = sys.argv[1]
    model = CPC.from_export(folder)
    if len(sys.argv) < 3:
        print(f"PASS: {folder} loaded strictly")
        return
    ref = load_file(sys.argv[2])
    with torch.no_grad():
        z, c = model(ref["wave"], ref["lengths"].tolist())
        lens = [model.frames(int(n)) for n in ref["lengths"]]
        loss = info_nce(model, z, c, lens)
    dz = max((z[b, :n] - ref["z"][b, :n]).abs().max().item() for b, n in enumerate(lens))
    dc = max((c[b, :n] - ref["c"][b, :n]).abs().max().item() for b, n in enumerate(lens))
    dl = abs(loss.item() - ref["loss"].item())
    if max(dz, dc, dl) > 1e-4:
        print(f"FAIL: |z diff| {dz:.3g}, |c diff| {dc:.3g}, |loss diff| {dl:.3g} (> 1e-4)")
        sys.exit(1)
    print(f"PASS: strict load; max |z diff| {dz:.2e}, |c diff| {dc:.2e}, "
          f"InfoNCE {loss.item():.6f} vs selfsup {ref['loss'].item():.6f}")


if __name__ == "__main__":
    main()
