#!/usr/bin/env python3
"""transformers' BertForMaskedLM training: the peer of `selfsup pretrain` with
configs/text/mlm-gpu.toml in the GPU kit (run.sh), same model and batch shape.

    python3 mlm_peer.py --device cuda --layers 4 --hidden 512 --heads 8 \
        --intermediate 2048 --vocab-size 16384 --max-len 128 --batch-size 64 --steps 60

The model is `BertForMaskedLM` from a `BertConfig` (sdpa attention, dropout
0.1), AdamW (lr --lr, weight decay 0.01 on matrices only, as selfsup), under
torch.autocast(bfloat16) on CUDA. Every sequence is [CLS]=2, max_len - 2 random
ids in [5, vocab), [SEP]=3; a Bernoulli(0.15) subset of the content positions
becomes [MASK]=4 and carries the labels (others -100), drawn on the device
inside the loop. --warmup steps run untimed first. Throughput counts every
input token (batch x max_len per step). Prints one JSON line: tokens_per_s,
steps, seconds, peak_gpu_mb, first_loss, last_loss, the settings.
"""
import argparse
import json
import sys
import time

import torch

CLS, SEP, MASK = 2, 3, 4


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--vocab-size", type=int, default=16384)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from transformers import BertConfig, BertForMaskedLM

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("FAIL: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        sys.exit(1)
    cfg = BertConfig(
        vocab_size=a.vocab_size,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=max(512, a.max_len),
        pad_token_id=0,
    )
    model = BertForMaskedLM._from_config(cfg, attn_implementation="sdpa").to(dev).train()
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr,
        betas=(0.9, 0.999),
        eps=1e-6,
    )
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    b, n = a.batch_size, a.max_len

    def batch():
        ids = torch.randint(5, a.vocab_size, (b, n), device=dev, generator=gen)
        ids[:, 0], ids[:, -1] = CLS, SEP
        picked = torch.rand((b, n), device=dev, generator=gen) < 0.15
        picked[:, 0] = picked[:, -1] = False
        labels = torch.where(picked, ids, torch.full_like(ids, -100))
        ids = torch.where(picked, torch.full_like(ids, MASK), ids)
        return ids, labels

    attention = torch.ones((b, n), dtype=torch.long, device=dev)

    def step():
        ids, labels = batch()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    losses = [step().item() for _ in range(a.warmup)]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed_start_unix = time.time()
    t0 = time.perf_counter()
    timed = [step() for _ in range(a.steps)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    timed_end_unix = time.time()
    losses += [t.item() for t in timed]
    print(
        json.dumps(
            {
                "tokens_per_s": a.steps * b * n / seconds,
                "timed_start_unix": timed_start_unix,
                "timed_end_unix": timed_end_unix,
                "steps": a.steps,
                "seconds": seconds,
                "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None,
                "batch_size": b,
                "max_len": n,
                "layers": a.layers,
                "hidden": a.hidden,
                "vocab_size": a.vocab_size,
                "device": str(dev) + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
                "transformers": __import__("transformers").__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
