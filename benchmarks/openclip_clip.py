"""CLIP training throughput in PyTorch with open_clip's loss, on the towers of
selfsup's CPU preset: the peer of `cargo xtask bench --clip`.

Image tower: selfsup's small CNN (3x3 conv without bias, batch norm, ReLU,
2x2 max-pool between blocks, global average pool). Text tower: transformers'
BertModel (sdpa attention) pooled by the mean over non-padding tokens. Linear
projections without bias, a learnable logit scale clamped at ln(100) after
each step, open_clip's `ClipLoss` (the symmetric InfoNCE), AdamW. Same image
size, caption length, vocabulary, batch, optimiser settings and threads as the
selfsup run (xtask reads them from its summary and config).

The data are random tensors of those shapes, made before timing, so this side
does no augmentation, tokenisation or batch building (selfsup's figure
includes them). Captions are padded to the longest training caption
(selfsup pads each batch to its own longest caption: at most as long).

The C allocator gets the settings selfsup's CLIP workflow gives itself on the
CPU (glibc mallopt: M_MMAP_THRESHOLD 256 MiB, M_TRIM_THRESHOLD 1 GiB; freed
memory is kept for the next step instead of being returned to the kernel and
faulted in again), so that neither side has an allocator advantage.

Prints one JSON line: pairs_per_s, seconds, steps, peak_rss_mb, versions.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCnn(nn.Module):
    def __init__(self, channels, in_channels=3):
        super().__init__()
        blocks, c_in = [], in_channels
        for c in channels:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = c_in

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i < len(self.blocks) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))


class DualEncoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.vision = SmallCnn(a.cnn_channels)
        cfg = BertConfig(
            vocab_size=a.vocab_size, hidden_size=a.hidden, num_hidden_layers=a.layers,
            num_attention_heads=a.heads, intermediate_size=a.intermediate,
            max_position_embeddings=a.max_position, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, attn_implementation="sdpa",
        )
        self.text = BertModel(cfg, add_pooling_layer=False)
        self.visual_projection = nn.Linear(self.vision.out_dim, a.embed_dim, bias=False)
        self.text_projection = nn.Linear(a.hidden, a.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images, ids, attention):
        img = self.visual_projection(self.vision(images))
        h = self.text(input_ids=ids, attention_mask=attention).last_hidden_state
        m = attention.unsqueeze(-1).float()
        txt = self.text_projection((h * m).sum(1) / m.sum(1).clamp_min(1.0))
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1), self.logit_scale.exp()


def keep_freed_memory():
    """selfsup-multimodal's allocator settings (src/allocator.rs); False
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError, TypeError):
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--cnn-channels", type=lambda s: [int(c) for c in s.split(",")], default=[32, 64, 128, 256])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--max-position", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--betas", type=lambda s: tuple(float(b) for b in s.split(",")), default=(0.9, 0.98))
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--channels-last", action="store_true",
                   help="the CNN's weights and images in channels-last memory order (what selfsup's small CNN uses on the CPU)")
    a = p.parse_args()
    malloc_kept = keep_freed_memory()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import open_clip
    from open_clip.loss import ClipLoss

    model = DualEncoder(a)
    if a.channels_last:
        model.vision.to(memory_format=torch.channels_last)
    decay = [q for q in model.parameters() if q.dim() > 1]
    no_decay = [q for q in model.parameters() if q.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=a.betas, eps=a.eps,
    )
    loss_fn = ClipLoss()
    n = a.steps + a.warmup_steps
    b, s, l = a.batch_size, a.image_size, a.seq_len
    images = torch.randn(n, b, 3, s, s)
    ids = torch.randint(5, a.vocab_size, (n, b, l))
    lengths = torch.randint(3, l + 1, (n, b, 1))
    attention = (torch.arange(l).view(1, 1, l) < lengths).long()
    ids = ids * attention
    model.train()
    start = None
    for i in range(n):
        if i == a.warmup_steps:
            start = time.perf_counter()
        x = images[i].contiguous(memory_format=torch.channels_last) if a.channels_last else images[i]
        img, txt, scale = model(x, ids[i], attention[i])
        loss = loss_fn(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    seconds = time.perf_counter() - start
    import transformers

    print(json.dumps({
        "pairs_per_s": a.steps * b / seconds,
        "seconds": seconds,
        "steps": a.steps,
        "warmup_steps": a.warmup_steps,
        "final_loss": float(loss.detach()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "malloc_keeps_freed_memory": malloc_kept,
        "channels_last": a.channels_last,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "transformers": transformers.__version__,
        "args": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(a).items()},
    }))


if __name__ == "__main__":
    main()
