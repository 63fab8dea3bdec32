"""BERT masked-language-model training with Hugging Face transformers on the CPU.

The peer of selfsup's MLM trainer (`selfsup pretrain --config configs/text/mlm-cpu.toml`)
in `cargo xtask bench --text`, which passes the model size, vocabulary, sequence
length, batch, learning rate and threads of selfsup's run; by hand:

    OMP_NUM_THREADS=2 ~/.cache/selfsup/bench-venv/bin/python benchmarks/hf_mlm.py \
        --layers 2 --hidden 128 --heads 2 --intermediate 512 --vocab-size 8192 \
        --max-len 128 --batch-size 32 --steps 20 --threads 2

The model is transformers' `BertForMaskedLM` built from a `BertConfig` (post-LN
encoder, GELU, learned absolute positions, tied input/output embeddings, dropout
`--dropout` on hidden states and attention probabilities) with
`attn_implementation="sdpa"`, trained in float32 with AdamW (`--lr`, constant,
weight decay 0.01 on matrices only, as selfsup skips 1-D parameters).

Data is the same shape of work as BERT's MLM, without a tokenizer: every
sequence is `[CLS]=2`, `max_len - 2` random token ids in `[5, vocab)`, `[SEP]=3`;
the attention mask is all ones; a Bernoulli(0.15) subset of the content positions
is replaced by `[MASK]=4` and only those positions carry labels (others -100).
Batches are drawn inside the timed loop (a seeded generator). Note that
`BertForMaskedLM` runs its prediction head and vocabulary projection on every
position, not only on the masked ones.

`--warmup-steps` steps run first, untimed; throughput counts every input token
(`batch_size * max_len` per step) of the `--steps` timed steps. Progress on stderr,
one JSON line on stdout at the end: tokens_per_s, steps, seconds, peak_rss_mb
(peak RSS of this process) and final_loss (the last step's loss), then the settings.
"""
import argparse
import json
import resource
import sys
import time

import torch
import transformers
from transformers import AutoModelForMaskedLM, BertConfig

CLS, SEP, MASK = 2, 3, 4
FIRST_ORDINARY = 5


def batch(gen, batch_size, max_len, vocab_size, mask_prob=0.15):
    ids = torch.randint(FIRST_ORDINARY, vocab_size, (batch_size, max_len), generator=gen)
    ids[:, 0] = CLS
    ids[:, -1] = SEP
    masked = torch.rand(batch_size, max_len, generator=gen) < mask_prob
    masked[:, 0] = False
    masked[:, -1] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, MASK), ids)
    return inputs, torch.ones_like(ids), labels


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.max_len < 3 or a.vocab_size <= FIRST_ORDINARY or a.hidden % a.heads:
        sys.exit("need --max-len >= 3, --vocab-size > 5 and --hidden divisible by --heads")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    config = BertConfig(
        vocab_size=a.vocab_size,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=a.max_len,
        hidden_dropout_prob=a.dropout,
        attention_probs_dropout_prob=a.dropout,
        pad_token_id=0,
    )
    model = AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.01},
            {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
        ],
        lr=a.lr,
    )
    gen = torch.Generator().manual_seed(a.seed + 1)

    def step():
        inputs, mask, labels = batch(gen, a.batch_size, a.max_len, a.vocab_size)
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    n_params = sum(q.numel() for q in params)
    print(
        f"hf_mlm: BertForMaskedLM {a.layers} layers, hidden {a.hidden}, {a.heads} heads, "
        f"intermediate {a.intermediate}, vocab {a.vocab_size}, {n_params / 1e6:.2f} M parameters; "
        f"batch {a.batch_size} x {a.max_len} tokens, {a.threads} threads, transformers {transformers.__version__}",
        file=sys.stderr,
    )
    loss = float("nan")
    for _ in range(a.warmup_steps):
        loss = step()
    start = time.perf_counter()
    for i in range(a.steps):
        loss = step()
        if (i + 1) % 10 == 0 or i + 1 == a.steps:
            print(f"hf_mlm: step {i + 1}/{a.steps} loss {loss:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    tokens = a.steps * a.batch_size * a.max_len
    print(json.dumps({
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "steps": a.steps,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": loss,
        "warmup_steps": a.warmup_steps,
        "layers": a.layers, "hidden": a.hidden, "heads": a.heads, "intermediate": a.intermediate,
        "vocab_size": a.vocab_size, "max_len": a.max_len, "batch_size": a.batch_size,
        "threads": a.threads, "lr": a.lr, "dropout": a.dropout, "seed": a.seed,
        "parameters": n_params, "attn_implementation": model.config._attn_implementation,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
