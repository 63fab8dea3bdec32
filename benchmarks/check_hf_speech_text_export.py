"""Checks a selfsup speech-text CLIP export against PyTorch / transformers.

    python benchmarks/check_hf_speech_text_export.py EXPORT_DIR REFERENCE.safetensors [FORM ...]

EXPORT_DIR is what `selfsup export` writes for a speech-text checkpoint
(model.safetensors, config.json, vocab.txt). REFERENCE holds selfsup's own
outputs on a fixed input: `wave` (float32 [B, L], 16 kHz, normalised),
`lengths` (int64 [B]: valid samples of each row), `audio_embeddings` [B, E],
`ids` / `attention` (int64 [N, T]) and `text_embeddings` [N, E] (unit
vectors, eval mode).

1. CLIPModel names: `text_projection.weight`, `logit_scale` and
   `audio_projection.weight` (as CLIPModel's `visual_projection.weight`) load
   into transformers' CLIPModel with its shapes.
2. Text tower: `text_model.bert.*` loads into transformers' BertModel with
   strict=True; mean pooling over the attention + text_projection reproduce
   `text_embeddings`. With FORMs, vocab.txt spells them into `ids` (one token
   per character, [CLS] ... [SEP], [PAD] = 0 after).
3. Audio tower: `audio_model.*` loads with strict=True into transformers'
   Wav2Vec2Model (audio_config kind wav2vec2; every row must be unpadded) or
   into the log-mel module below (selfsup-log-mel: written from the
   description in config.json, not from selfsup's code); its pooling +
   audio_projection reproduce `audio_embeddings`.
Each embedding must be within 1e-4 (max abs difference). Prints one line
starting with PASS or FAIL; exits 1 on FAIL.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

TOLERANCE = 1e-4


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def htk_filterbank(n_fft, n_mels, sr):
    """Triangular HTK-mel filters [n_fft / 2 + 1, n_mels] on 0..sr/2."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lo, hi = mel(0.0), mel(sr / 2.0)
    edges = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bins = n_fft // 2 + 1
    w = torch.zeros(bins, n_mels, dtype=torch.float64)
    for b in range(n_mels):
        l, c, r = edges[b], edges[b + 1], edges[b + 2]
        for k in range(bins):
            f = k * sr / n_fft
            if l < f <= c:
                w[k, b] = (f - l) / (c - l)
            elif c < f < r:
                w[k, b] = (r - f) / (r - c)
    return w.float()


class LogMelTower(nn.Module):
    """The selfsup-log-mel audio tower as config.json's audio_config describes it."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList()
        c_in = cfg["n_mels"]
        for c, k, s in zip(cfg["channels"], cfg["kernels"], cfg["strides"]):
            layer = nn.Module()
            layer.conv = nn.Conv1d(c_in, c, k, stride=s, padding=k // 2)
            layer.layer_norm = nn.LayerNorm(c, eps=1e-5)
            self.layers.append(layer)
            c_in = c
        self.register_buffer("fbank", htk_filterbank(cfg["n_fft"], cfg["n_mels"], cfg["sampling_rate"]), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg["window"], periodic=True), persistent=False)

    @staticmethod
    def _mask(valid, t):
        return (torch.arange(t)[None, :] < valid[:, None]).float()[..., None]

    def forward(self, wave, lengths):
        cfg, eps = self.cfg, self.cfg["eps"]
        win, hop = cfg["window"], cfg["hop"]
        n = wave.shape[1]
        if n < win:
            wave = F.pad(wave, (0, win - n))
        frames = wave.unfold(1, win, hop) * self.window
        power = torch.fft.rfft(frames, n=cfg["n_fft"]).abs() ** 2
        x = torch.log(power @ self.fbank + cfg["log_offset"])
        t = x.shape[1]
        lengths = lengths.clamp(max=n)
        valid = torch.where(lengths >= win, 1 + (lengths - win) // hop, torch.zeros_like(lengths)).clamp(max=t)
        m = self._mask(valid, t)
        count = (m.sum(1, keepdim=True) * x.shape[2]).clamp(min=1.0)
        centred = (x - (x * m).sum((1, 2), keepdim=True) / count) * m
        x = centred / torch.sqrt((centred ** 2).sum((1, 2), keepdim=True) / count + eps)
        h, last = x.transpose(1, 2), None
        for layer, s in zip(self.layers, cfg["strides"]):
            y = layer.conv(h)
            valid = torch.where(valid > 0, (valid - 1) // s + 1, valid)
            m = self._mask(valid, y.shape[2])
            last = F.gelu(layer.layer_norm(y.transpose(1, 2))) * m
            h = last.transpose(1, 2)
        count = m.sum(1).clamp(min=1.0)
        mean = last.sum(1) / count
        var = (((last - mean[:, None]) * m) ** 2).sum(1) / count
        return torch.cat([mean, torch.sqrt(var + eps)], 1)


def strip(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def main():
    if len(sys.argv) < 3:
        fail("usage: check_hf_speech_text_export.py EXPORT_DIR REFERENCE.safetensors [FORM ...]")
    export, reference, forms = sys.argv[1], sys.argv[2], sys.argv[3:]
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, Wav2Vec2Config, Wav2Vec2Model

    cfg = json.load(open(os.path.join(export, "config.json")))
    if cfg.get("format") != "selfsup-speech-text-v1":
        fail(f"config.json format {cfg.get('format')!r} is not selfsup-speech-text-v1")
    sd = load_file(os.path.join(export, "model.safetensors"))
    ref = load_file(reference)
    notes = []

    # 1. CLIPModel's names for the projections and the scale.
    d_text, d_audio = sd["text_projection.weight"].shape[1], sd["audio_projection.weight"].shape[1]
    clip = CLIPModel(CLIPConfig(
        projection_dim=cfg["projection_dim"],
        text_config={"hidden_size": d_text, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8},
        vision_config={"hidden_size": d_audio, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8,
                       "image_size": 8, "patch_size": 8},
    ))
    same = {"text_projection.weight": sd["text_projection.weight"], "logit_scale": sd["logit_scale"],
            "visual_projection.weight": sd["audio_projection.weight"]}
    _, unexpected = clip.load_state_dict(same, strict=False)
    if unexpected or any(not torch.equal(clip.state_dict()[k], v) for k, v in same.items()):
        fail(f"projections / logit_scale do not load into CLIPModel (unexpected {unexpected})")

    # 2. Text tower in BertModel, strictly; the vocabulary spells the forms.
    tc = {k: v for k, v in cfg["text_config"].items() if k not in ("architectures", "model_type")}
    bert = BertModel(BertConfig(**tc), add_pooling_layer=False).eval()
    bert.load_state_dict(strip(sd, "text_model.bert."), strict=True)
    with open(os.path.join(export, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().split("\n")[:-1]
    if len(vocab) != tc["vocab_size"] or vocab[:4] != ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]:
        fail(f"vocab.txt: {len(vocab)} tokens for vocab_size {tc['vocab_size']}, first {vocab[:4]}")
    ids, att = ref["ids"], ref["attention"]
    if forms:
        index = {t: i for i, t in enumerate(vocab)}
        rows = [[2] + [index.get(c, 1) for c in form][: ids.shape[1] - 2] + [3] for form in forms]
        spelled = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            spelled[i, : len(r)] = torch.tensor(r)
        if len(rows) != ids.shape[0] or not torch.equal(spelled, ids):
            fail(f"vocab.txt spells {forms} as {spelled.tolist()}, selfsup as {ids.tolist()}")
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=att).last_hidden_state
        m = att[..., None].float()
        text = F.normalize(((h * m).sum(1) / m.sum(1)) @ sd["text_projection.weight"].T, dim=-1)
    text_diff = (text - ref["text_embeddings"]).abs().max().item()

    # 3. Audio tower, strictly.
    ac = cfg["audio_config"]
    wave, lengths = ref["wave"], ref["lengths"]
    audio_sd = strip(sd, "audio_model.")
    with torch.no_grad():
        if ac.get("model_type") == "wav2vec2":
            if bool((lengths != wave.shape[1]).any()):
                fail("a wav2vec2 reference must have unpadded rows (group norm sees the padding)")
            w2v = Wav2Vec2Model(Wav2Vec2Config(**{k: v for k, v in ac.items() if k != "architectures"})).eval()
            w2v.load_state_dict(audio_sd, strict=True)
            pooled = w2v(wave).last_hidden_state.mean(1)
            notes.append("Wav2Vec2Model strict")
        elif ac.get("model_type") == "selfsup-log-mel":
            tower = LogMelTower(ac).eval()
            tower.load_state_dict(audio_sd, strict=True)
            pooled = tower(wave, lengths)
            notes.append("log-mel module strict")
        else:
            fail(f"audio_config model_type {ac.get('model_type')!r}")
        audio = F.normalize(pooled @ sd["audio_projection.weight"].T, dim=-1)
    audio_diff = (audio - ref["audio_embeddings"]).abs().max().item()
    if text_diff > TOLERANCE or audio_diff > TOLERANCE:
        fail(f"embeddings differ: text {text_diff:.3g}, audio {audio_diff:.3g} (> {TOLERANCE})")
    print(f"PASS: BertModel strict, {', '.join(notes)}, CLIPModel projection names; "
          f"max |diff| text {text_diff:.2e}, audio {audio_diff:.2e}")


if __name__ == "__main__":
    main()
