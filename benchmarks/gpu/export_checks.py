#!/usr/bin/env python3
"""The GPU kit's export checks: a run's export loaded back by PyTorch tools on
the machine that trained it, computing what selfsup computed.

    python3 export_checks.py vision RUN_DIR DATA_DIR [--device cuda]
    python3 export_checks.py mlm RUN_DIR TEXT_FILE [--device cuda]

vision: RUN_DIR/export (torchvision resnet18 / resnet50 or small_cnn, built by
  benchmarks/check_torchvision_export.py) loaded with strict=True; features
  of the first `train_images` training images (the memory bank) and of every
  test image of DATA_DIR (IDX .gz, normalised with the export's mean / std);
  weighted kNN exactly as selfsup's (l2-normalised cosine, top-k, weights
  exp((s - s_max) / T)); the top-1 must equal summary.json's knn_top1 within
  --tolerance (default 0.005: selfsup evaluates under bf16 autocast on CUDA).
mlm: RUN_DIR/export loaded by BertForMaskedLM.from_pretrained with no
  missing, unexpected or mismatched keys, AutoTokenizer from the same folder;
  15 % of the tokens of TEXT_FILE's lines masked ([MASK]); masked-token
  accuracy reported beside summary.json's validation accuracy (a mis-loaded
  model falls to chance: it must lie within --tolerance, default 0.1).

Prints one JSON line (ok, the figures); exits 1 when a check fails.
"""
import argparse
import gzip
import json
import struct
import sys
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F


def read_idx(path, limit=None):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    n = dims[0] if limit is None else min(limit, dims[0])
    per = 1
    for d in dims[1:]:
        per *= d
    body = data[4 + 4 * ndim : 4 + 4 * ndim + n * per]
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(n, *dims[1:])


def knn_top1(train, train_y, test, test_y, k, t, classes):
    train = F.normalize(train, dim=1)
    test = F.normalize(test, dim=1)
    k = min(k, train.shape[0])
    correct = 0
    for s in range(0, test.shape[0], 1024):
        sim = test[s : s + 1024] @ train.t()
        top, idx = sim.topk(k, dim=1)
        w = ((top - top[:, :1]) / t).exp()
        scores = torch.zeros(top.shape[0], classes, device=top.device).scatter_add(1, train_y[idx], w)
        correct += (scores.argmax(1) == test_y[s : s + 1024]).sum().item()
    return correct / test.shape[0]


def vision(a):
    here = Path(__file__).resolve().parent
    # In the kit the reused check sits beside this file; in the checkout, one folder up.
    sys.path[:0] = [str(here), str(here.parent)]
    from check_torchvision_export import build_resnet, build_small_cnn
    from safetensors.torch import load_file

    run = Path(a.run_dir)
    summary = json.loads((run / "summary.json").read_text())
    cfg = tomllib.loads((run / "config.toml").read_text())
    export = json.loads((run / "export/config.json").read_text())
    arch = export["arch"]
    model = build_small_cnn(export) if arch == "small_cnn" else build_resnet(export)
    state = load_file(str(run / "export" / export.get("weights", "model.safetensors")))
    model.load_state_dict(state, strict=True)
    dev = torch.device(a.device)
    model = model.to(dev).eval()
    mean = torch.tensor(export["normalize"]["mean"], device=dev).view(1, -1, 1, 1)
    std = torch.tensor(export["normalize"]["std"], device=dev).view(1, -1, 1, 1)
    data = Path(a.data_dir)
    n_train = int(summary["train_images"])

    def feats(images):
        out = []
        with torch.no_grad():
            for s in range(0, images.shape[0], 512):
                x = images[s : s + 512].to(dev).float().div(255.0)
                x = x.unsqueeze(1) if x.ndim == 3 else x
                out.append(model((x - mean) / std).float())
        return torch.cat(out)

    train = feats(read_idx(data / "train-images-idx3-ubyte.gz", n_train))
    train_y = read_idx(data / "train-labels-idx1-ubyte.gz", n_train).long().to(dev)
    test = feats(read_idx(data / "t10k-images-idx3-ubyte.gz"))
    test_y = read_idx(data / "t10k-labels-idx1-ubyte.gz").long().to(dev)
    knn = cfg.get("eval", {}).get("knn", {})
    k, t = int(knn.get("k", summary.get("knn_k", 200))), float(knn.get("temperature", 0.1))
    got = knn_top1(train, train_y, test, test_y, k, t, 10)
    want = float(summary["knn_top1"])
    ok = bool(torch.isfinite(test).all().item()) and abs(got - want) <= a.tolerance
    return {
        "ok": ok,
        "check": f"torchvision {arch} strict load + kNN top-1 reproduced",
        "arch": arch,
        "tensors": len(state),
        "torch_knn_top1": got,
        "selfsup_knn_top1": want,
        "tolerance": a.tolerance,
    }


def mlm(a):
    from transformers import AutoTokenizer, BertForMaskedLM

    run = Path(a.run_dir)
    summary = json.loads((run / "summary.json").read_text())
    export = run / "export"
    model, info = BertForMaskedLM.from_pretrained(str(export), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    tok = AutoTokenizer.from_pretrained(str(export))
    dev = torch.device(a.device)
    model = model.to(dev).eval()
    max_len = int(summary.get("max_len", 128))
    # Windows of 60 words (corpus files may hold a whole address on one line).
    words = Path(a.data_dir).read_text(errors="replace").split()
    lines = [" ".join(words[i : i + 60]) for i in range(0, len(words), 60)][: a.lines]
    if not lines:
        raise SystemExit(f"FAIL: {a.data_dir} holds no text")
    enc = tok(lines, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    ids, att = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
    special = torch.tensor(
        tok.get_special_tokens_mask(ids.view(-1).tolist(), already_has_special_tokens=True), device=dev
    ).view(ids.shape).bool()
    g = torch.Generator(device="cpu").manual_seed(0)
    picked = (torch.rand(ids.shape, generator=g).to(dev) < 0.15) & att.bool() & ~special
    masked = torch.where(picked, torch.full_like(ids, tok.mask_token_id), ids)
    with torch.no_grad():
        logits = model(input_ids=masked, attention_mask=att).logits.float()
    finite = bool(torch.isfinite(logits).all().item())
    acc = (logits.argmax(-1)[picked] == ids[picked]).float().mean().item()
    val = (summary.get("val") or {}).get("masked_acc")
    close = val is not None and abs(acc - float(val)) <= a.tolerance
    return {
        "ok": not problems and finite and close,
        "check": "BertForMaskedLM.from_pretrained (no missing/unexpected/mismatched keys) + masked accuracy",
        "loading_problems": problems,
        "masked_tokens": int(picked.sum().item()),
        "torch_masked_accuracy": acc,
        "selfsup_val_accuracy": val,
        "tolerance": a.tolerance,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["vision", "mlm"])
    p.add_argument("run_dir")
    p.add_argument("data_dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tolerance", type=float, default=None)
    p.add_argument("--lines", type=int, default=256)
    a = p.parse_args()
    if a.tolerance is None:
        a.tolerance = 0.005 if a.kind == "vision" else 0.1
    out = vision(a) if a.kind == "vision" else mlm(a)
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
