#!/usr/bin/env python3
"""Use selfsup's exported weights from PyTorch.

Vision: loads a `selfsup pretrain` vision export (runs/<name>/export:
model.safetensors + config.json) into torchvision's ResNet-18 / ResNet-50 or
timm's VisionTransformer with strict loading, puts a linear head on it and
fine-tunes both a few steps on a folder of labelled images
(IMAGES/<class>/<image>), printing the loss and the accuracy on those images
before and after.

Text: loads a BERT export into transformers' BertForMaskedLM and its
tokenizer (every weight accounted for), embeds a few sentences (mean of the
last hidden states over the tokens, as selfsup's `embed` does), prints their
cosine similarities and the model's guesses for a [MASK].

    python finetune_export.py --vision runs/simclr-resnet18/export --images my-images/ --steps 10
    python finetune_export.py --text runs/mlm-cpu/export [--texts sentences.txt]

Needs torch, torchvision, safetensors, and timm (ViT exports) / transformers (text).
"""
import argparse
import json
import math
import sys
from pathlib import Path


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_config(export):
    path = Path(export) / "config.json"
    if not path.is_file():
        fail(f"{path}: no such file: give an export folder (runs/<name>/export)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(f"{path}: not JSON: {e}")


def mean_patch_tokens_class():
    import torch

    class MeanPatchTokens(torch.nn.Module):
        """A timm ViT whose features are its mean final-normed patch token."""

        def __init__(self, vit):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit.forward_features(x)[:, self.vit.num_prefix_tokens:].mean(1)

        def load_state_dict(self, state, strict=True):
            return self.vit.load_state_dict(state, strict=strict)

    return MeanPatchTokens


def vision_backbone(export, config):
    """The export's encoder as a torchvision / timm module (features [N, D])."""
    import torch
    from safetensors.torch import load_file

    arch = config.get("arch")
    c = int(config.get("in_channels", 3))
    if arch in ("resnet18", "resnet50"):
        import torchvision

        m = getattr(torchvision.models, arch)()
        stem = config.get("stem", "imagenet")
        if stem == "cifar":
            m.conv1 = torch.nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
            m.maxpool = torch.nn.Identity()
        elif c != 3:
            m.conv1 = torch.nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        m.fc = torch.nn.Identity()
    elif arch in ("vit_tiny", "vit_small"):
        import timm

        m = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=int(config["image_size"]),
            patch_size=int(config["patch_size"]), in_chans=c, num_classes=0,
            embed_dim=int(config["embed_dim"]), depth=int(config["depth"]),
            num_heads=int(config["heads"]), dynamic_img_size=True,
        )
        if config.get("method") in ("mae", "ijepa"):
            # MAE / I-JEPA never train the class token: the features are the
            # final-normed patch tokens, averaged (timm's global_pool="avg"
            # would rename `norm` to `fc_norm` and break the strict load).
            m = mean_patch_tokens_class()(m)
    else:
        fail(f"{Path(export) / 'config.json'}: arch {arch!r} has no torchvision / timm "
             "counterpart: pre-train with model.arch = resnet18, resnet50, vit_tiny or vit_small "
             "(the Rust example examples/finetune-vision takes every export)")
    weights = Path(export) / "model.safetensors"
    if not weights.is_file():
        fail(f"{weights}: no such file")
    # strict=True: every weight of the model is in the file, and nothing else.
    m.load_state_dict(load_file(str(weights)), strict=True)
    return m


def image_folder(images, config):
    import torch
    from torchvision import datasets, transforms

    if not Path(images).is_dir():
        fail(f"{images}: no such folder: give a folder of class folders (IMAGES/<class>/<image>)")
    size = int(config.get("image_size") or 0)
    if size <= 0:
        fail("config.json has no image_size (an export of `selfsup export`): pre-train with "
             "`selfsup pretrain`, whose export records it")
    norm = config.get("normalize") or {}
    c = int(config.get("in_channels", 3))
    steps = [transforms.Resize(size), transforms.CenterCrop(size)]
    steps.append(transforms.Grayscale(1) if c == 1 else transforms.Lambda(lambda im: im.convert("RGB")))
    steps.append(transforms.ToTensor())
    if "mean" in norm and "std" in norm:
        steps.append(transforms.Normalize(norm["mean"], norm["std"]))
    try:
        ds = datasets.ImageFolder(images, transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as e:
        fail(f"{images}: {e}")
    if len(ds.classes) < 2:
        fail(f"{images}: {len(ds.classes)} class folder(s): a classifier needs at least two")
    xs = torch.stack([x for x, _ in ds])
    ys = torch.tensor([y for _, y in ds])
    return xs, ys, ds.classes


def vision(args):
    import torch

    torch.manual_seed(args.seed)
    config = read_config(args.vision)
    backbone = vision_backbone(args.vision, config)
    xs, ys, classes = image_folder(args.images, config)
    backbone.eval()
    with torch.no_grad():
        dim = backbone(xs[:2]).shape[1]
    print(f"vision: {args.vision} -> {type(backbone).__module__}.{type(backbone).__name__} "
          f"({config.get('arch')}, strict load, {dim}-d features); "
          f"{len(xs)} images of {len(classes)} classes in {args.images}")
    model = torch.nn.Sequential(backbone, torch.nn.Linear(dim, len(classes)))
    opt = torch.optim.AdamW([
        {"params": backbone.parameters(), "lr": args.lr},
        {"params": model[1].parameters(), "lr": 10 * args.lr},
    ], weight_decay=1e-4)

    def accuracy():
        model.eval()
        with torch.no_grad():
            return (model(xs).argmax(1) == ys).float().mean().item()

    before = accuracy()
    losses = []
    for _ in range(args.steps):
        model.train()
        batch = torch.randperm(len(xs))[: args.batch_size]
        loss = torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if not all(math.isfinite(v) for v in losses):
        fail(f"non-finite loss while fine-tuning: {losses}")
    print(f"fine-tuned {args.steps} steps (batch {args.batch_size}): loss {losses[0]:.4f} -> "
          f"{losses[-1]:.4f}; accuracy on these images {100 * before:.1f}% -> {100 * accuracy():.1f}%")


def text(args):
    import torch
    import transformers
    from transformers import AutoTokenizer, BertForMaskedLM

    transformers.utils.logging.disable_progress_bar()
    export = Path(args.text)
    read_config(export)
    model, info = BertForMaskedLM.from_pretrained(str(export), output_loading_info=True)
    # Strict: no weight missing, none left over (the tied decoder is not stored).
    problems = {k: v for k, v in info.items() if v and k != "missing_keys"}
    missing = [k for k in info.get("missing_keys", []) if k != "cls.predictions.decoder.weight"]
    if problems or missing:
        fail(f"{export}: the export does not fit BertForMaskedLM: {problems or ''} {missing or ''}")
    tok = AutoTokenizer.from_pretrained(str(export))
    model.eval()
    if args.texts:
        try:
            lines = [t.strip() for t in Path(args.texts).read_text().splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            fail(f"{args.texts}: {e}")
    else:
        lines = ["the cat sat on the mat", "a cat was sitting on a mat", "stock prices fell sharply"]
    if len(lines) < 2:
        fail(f"{args.texts}: give at least two non-empty lines")
    lines = lines[:8]
    enc = tok(lines, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    sim = emb @ emb.T
    print(f"text: {export} -> transformers BertForMaskedLM ({model.config.num_hidden_layers} layers, "
          f"hidden {model.config.hidden_size}, vocabulary {model.config.vocab_size}); cosine similarity:")
    for i, line in enumerate(lines):
        print("  " + " ".join(f"{v:6.3f}" for v in sim[i].tolist()) + f"  {line[:50]}")
    masked = f"the {tok.mask_token} of the union"
    enc = tok(masked, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    where = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0].item()
    guesses = tok.convert_ids_to_tokens(logits[0, where].topk(3).indices.tolist())
    print(f"fill-mask {masked!r}: {guesses}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vision", help="a vision export folder (resnet18 / resnet50 / vit)")
    p.add_argument("--images", help="with --vision: IMAGES/<class>/<image> to fine-tune on")
    p.add_argument("--steps", type=int, default=5, help="fine-tuning steps (default 5)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="backbone lr; the head gets 10x")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", help="a text (BERT) export folder")
    p.add_argument("--texts", help="with --text: a file of sentences, one a line (first 8 used)")
    args = p.parse_args()
    if not args.vision and not args.text:
        p.error("give --vision EXPORT --images DIR, --text EXPORT, or both")
    if args.vision and not args.images:
        p.error("--vision needs --images DIR (class folders of labelled images)")
    if args.steps < 1 or args.batch_size < 2:
        p.error("--steps must be at least 1 and --batch-size at least 2")
    if args.vision:
        vision(args)
    if args.text:
        text(args)


if __name__ == "__main__":
    main()
