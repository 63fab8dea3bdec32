"""Checks a selfsup CLIP export (`runs/clip-cpu/export`) against PyTorch tools.

1. HF transformers' CLIPModel: `visual_projection.weight`, `text_projection.weight`
   and `logit_scale` have CLIPModel's names and shapes (for the export's
   projection_dim and tower widths) and load into it; every other CLIPModel key
   (the CLIP vision / text transformers) is listed as not provided, because
   selfsup's towers are not CLIP's transformers (see crates/selfsup-multimodal/src/export.rs).
2. The text tower loads into transformers' BertModel with strict=True (after
   stripping `text_model.bert.`); with --texts and --text-embeddings (the
   output of `selfsup embed --texts`), mean pooling + text_projection in
   PyTorch reproduce selfsup's embeddings.
3. The image tower (small_cnn) loads into the equivalent torch module; with
   --images and --image-embeddings (`selfsup embed --images`), its features +
   visual_projection reproduce selfsup's embeddings. Use images already at the
   export's image_size (PIL's and selfsup's bilinear resampling differ slightly).

    python benchmarks/check_hf_clip_export.py runs/clip-cpu/export \
        --texts t.txt --text-embeddings t.jsonl --images imgs --image-embeddings i.jsonl
Prints one JSON line; exits 1 when a check fails.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class SmallCnn(nn.Module):
    """selfsup-vision's small CNN with selfsup's names (blocks.N.conv / blocks.N.bn)."""

    def __init__(self, channels, in_channels=3):
        super().__init__()
        self.blocks = nn.ModuleList()
        for c in channels:
            b = nn.Module()
            b.conv = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
            b.bn = nn.BatchNorm2d(c)
            self.blocks.append(b)
            in_channels = c

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            x = F.relu(b.bn(b.conv(x)))
            if i < len(self.blocks) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))


def read_jsonl(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r["id"] for r in rows], torch.tensor([r["embedding"] for r in rows])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("export")
    p.add_argument("--texts")
    p.add_argument("--text-embeddings")
    p.add_argument("--images")
    p.add_argument("--image-embeddings")
    a = p.parse_args()
    cfg = json.load(open(os.path.join(a.export, "config.json")))
    sd = load_file(os.path.join(a.export, "model.safetensors"))
    meta = cfg["selfsup"]
    out, ok = {}, True

    # 1. CLIPModel names and shapes.
    from transformers import CLIPConfig, CLIPModel, BertConfig, BertModel, PreTrainedTokenizerFast

    d_text = sd["text_projection.weight"].shape[1]
    d_img = sd["visual_projection.weight"].shape[1]
    clip_cfg = CLIPConfig(
        projection_dim=cfg["projection_dim"],
        text_config={"hidden_size": d_text, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 64},
        vision_config={"hidden_size": d_img, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 64,
                       "image_size": meta["image_size"], "patch_size": 8},
    )
    hf = CLIPModel(clip_cfg)
    hf_sd = hf.state_dict()
    same = ["visual_projection.weight", "text_projection.weight", "logit_scale"]
    shapes_match = all(tuple(hf_sd[k].shape) == tuple(sd[k].shape) for k in same)
    missing, unexpected = hf.load_state_dict({k: sd[k] for k in same}, strict=False)
    loaded = all(torch.equal(hf.state_dict()[k], sd[k]) for k in same) and not unexpected
    out["clip_names_load"] = bool(shapes_match and loaded)
    out["clip_keys_not_provided"] = len(missing)
    out["selfsup_keys_not_in_clip"] = sum(1 for k in sd if k not in hf_sd)
    ok &= out["clip_names_load"]

    # 2. Text tower in BertModel.
    tc = {k: v for k, v in cfg["text_config"].items() if k not in ("architectures", "model_type")}
    bert = BertModel(BertConfig(**tc), add_pooling_layer=False).eval()
    prefix = "text_model.bert."
    text_sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    bert.load_state_dict(text_sd, strict=True)
    out["bert_strict_load"] = True
    if a.texts and a.text_embeddings:
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.export, "tokenizer.json"), pad_token="[PAD]")
        texts = [l.strip() for l in open(a.texts) if l.strip()]
        enc = tok(texts, padding=True, truncation=True, max_length=meta["max_len"], return_tensors="pt")
        with torch.no_grad():
            h = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = F.normalize(((h * m).sum(1) / m.sum(1)) @ sd["text_projection.weight"].T, dim=-1)
        ids, ref = read_jsonl(a.text_embeddings)
        assert ids == texts, "the embeddings file is not of these texts"
        cos = (e * ref).sum(1)
        out["text_min_cosine"] = float(cos.min())
        ok &= out["text_min_cosine"] > 0.9999

    # 3. Image tower.
    enc_cfg = meta["vision"]
    if enc_cfg["arch"] == "small_cnn":
        cnn = SmallCnn(enc_cfg.get("channels", [32, 64, 128, 256])).eval()
        prefix = "vision_model."
        img_sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        missing, unexpected = cnn.load_state_dict(img_sd, strict=False)
        out["vision_load"] = not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
        ok &= out["vision_load"]
        if a.images and a.image_embeddings:
            from PIL import Image

            ids, ref = read_jsonl(a.image_embeddings)
            s = meta["image_size"]
            mean = torch.tensor(meta["normalize"]["mean"]).view(3, 1, 1)
            std = torch.tensor(meta["normalize"]["std"]).view(3, 1, 1)
            xs = []
            for name in ids:
                im = Image.open(os.path.join(a.images, name)).convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im).convert("RGB")
                if im.size != (s, s):
                    im = im.resize((s, s), Image.BILINEAR)
                x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
                xs.append((x - mean) / std)
            with torch.no_grad():
                e = F.normalize(cnn(torch.stack(xs)) @ sd["visual_projection.weight"].T, dim=-1)
            out["image_min_cosine"] = float((e * ref).sum(1).min())
            ok &= out["image_min_cosine"] > 0.999
    else:
        out["vision_load"] = "not checked here: strip `vision_model.` and use check_torchvision_export.py / check_timm_export.py"
    out["ok"] = bool(ok)
    print(json.dumps(out))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
