"""GPT-2 next-token training with Hugging Face transformers on the CPU.

The peer of selfsup's next-token trainer
(`selfsup pretrain --config configs/text/next-token-cpu.toml`) for a tokens/s
comparison on the same cores; pass the model size, vocabulary, sequence
length, batch, learning rate and threads of selfsup's run:

    OMP_NUM_THREADS=2 ~/.cache/selfsup/bench-venv/bin/python benchmarks/hf_gpt2.py \
        --layers 2 --hidden 128 --heads 2 --intermediate 512 --vocab-size 4096 \
        --max-len 128 --batch-size 16 --steps 20 --threads 2

or take every shape setting from a finished selfsup run (its summary.json:
layers, hidden, heads, intermediate, vocabulary, sequence length, batch,
learning rate, threads; its config.toml: dropout), flags given explicitly
winning:

    selfsup pretrain --config configs/text/next-token-cpu.toml --run-dir runs/gpt-cpu
    OMP_NUM_THREADS=2 ~/.cache/selfsup/bench-venv/bin/python benchmarks/hf_gpt2.py \
        --from-run runs/gpt-cpu --steps 100

The JSON line then also carries the run's own figures, read from its
summary, not measured here: `step_tokens_per_s` (its median training step:
batching, forward, backward, clipping, optimiser, logging; the figure to set
beside this script's timed steps), `train_tokens_per_s` (its training epochs,
checkpoints included, the per-epoch validation excluded) and
`loop_tokens_per_s` (its whole training loop, validation included). Both
sides' figures come from the same machine only when both were run on it, one
after the other.

The model is transformers' `GPT2LMHeadModel` from a `GPT2Config` (pre-LN
blocks, gelu_new, learned positions, LM head tied to the token embeddings,
dropout `--dropout`) with `attn_implementation="sdpa"`, trained in float32
with AdamW (`--lr`, constant, betas 0.9/0.95, weight decay 0.01 on matrices
only, as selfsup skips 1-D parameters) and the gradients clipped to a global
norm of `--grad-clip` (selfsup's `[trainer] grad_clip`; 0: no clipping).

Data is the same shape of work as selfsup's: every sequence is `[CLS]=2`,
`max_len - 2` random ids in `[5, vocab)`, `[SEP]=3`; the model sees the first
`max_len - 1` tokens and predicts the next one at every position (labels
shifted inside `GPT2LMHeadModel`; the closing `[SEP]` is not a target, as in
selfsup). Batches are drawn inside the timed loop (a seeded generator).

`--warmup-steps` steps run first, untimed; throughput counts every input token
(`batch_size * (max_len - 1)` per step, selfsup's count) of the `--steps`
timed steps. Progress on stderr, one JSON line on stdout at the end:
tokens_per_s, steps, seconds, peak_rss_mb and final_loss, then the settings.
"""
import argparse
import json
import os
import resource
import sys
import time
import tomllib

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

CLS, SEP = 2, 3
FIRST_ORDINARY = 5


def batch(gen, batch_size, max_len, vocab_size):
    ids = torch.randint(FIRST_ORDINARY, vocab_size, (batch_size, max_len), generator=gen)
    ids[:, 0] = CLS
    ids[:, -1] = SEP
    inputs = ids[:, :-1].contiguous()
    # GPT2LMHeadModel shifts: labels[t] is scored at position t - 1; the
    # closing [SEP] is not in the inputs, so every label is a body token.
    return inputs, inputs.clone()


def run_defaults(run_dir):
    """The shape settings of a selfsup next-token run folder, as defaults."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            s = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"--from-run {run_dir}: cannot read summary.json ({e}); give the run folder "
                 "of a finished `selfsup pretrain` of a next-token config")
    if s.get("method") != "next_token":
        sys.exit(f"--from-run {run_dir}: summary.json is of method {s.get('method')!r}, "
                 "not next_token")
    m = s["model"]
    out = {
        "layers": m["layers"], "hidden": m["hidden"], "heads": m["heads"],
        "intermediate": m["intermediate"], "vocab_size": s["vocab_size"],
        "max_len": s["max_len"], "batch_size": s["batch_size"], "lr": s["lr"],
    }
    if s.get("threads"):
        out["threads"] = s["threads"]
    try:
        with open(os.path.join(run_dir, "config.toml"), "rb") as f:
            cfg = tomllib.load(f)
        out["dropout"] = cfg.get("model", {}).get("dropout", 0.0)
        out["grad_clip"] = cfg.get("trainer", {}).get("grad_clip", 0.0) or 0.0
    except (OSError, tomllib.TOMLDecodeError):
        pass
    figures = {k: s.get(k) for k in ("step_tokens_per_s", "train_tokens_per_s", "loop_tokens_per_s")}
    return out, figures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from-run", help="a selfsup next-token run folder: its shape as the defaults")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=60, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="global gradient-norm clip, as selfsup's [trainer] grad_clip (0: none)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run_figures = {}
    if a.from_run:
        defaults, run_figures = run_defaults(a.from_run)
        p.set_defaults(**defaults)
        a = p.parse_args()
    if a.max_len < 3 or a.vocab_size <= FIRST_ORDINARY or a.hidden % a.heads:
        sys.exit("need --max-len >= 3, --vocab-size > 5 and --hidden divisible by --heads")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    config = GPT2Config(
        vocab_size=a.vocab_size,
        n_embd=a.hidden,
        n_layer=a.layers,
        n_head=a.heads,
        n_inner=a.intermediate,
        n_positions=a.max_len,
        resid_pdrop=a.dropout,
        embd_pdrop=a.dropout,
        attn_pdrop=a.dropout,
        bos_token_id=CLS,
        eos_token_id=SEP,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.01},
            {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
        ],
        lr=a.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(a.seed + 1)

    def step():
        inputs, labels = batch(gen, a.batch_size, a.max_len, a.vocab_size)
        loss = model(input_ids=inputs, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        return loss.item()

    n_params = sum(q.numel() for q in params)
    print(
        f"hf_gpt2: GPT2LMHeadModel {a.layers} layers, hidden {a.hidden}, {a.heads} heads, "
        f"intermediate {a.intermediate}, vocab {a.vocab_size}, {n_params / 1e6:.2f} M parameters; "
        f"batch {a.batch_size} x {a.max_len - 1} tokens, {a.threads} threads, "
        f"transformers {transformers.__version__}",
        file=sys.stderr,
    )
    loss = float("nan")
    for _ in range(a.warmup_steps):
        loss = step()
    start = time.perf_counter()
    for i in range(a.steps):
        loss = step()
        if (i + 1) % 10 == 0 or i + 1 == a.steps:
            print(f"hf_gpt2: step {i + 1}/{a.steps} loss {loss:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    tokens = a.steps * a.batch_size * (a.max_len - 1)
    print(json.dumps({
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "steps": a.steps,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": loss,
        "warmup_steps": a.warmup_steps,
        "layers": a.layers, "hidden": a.hidden, "heads": a.heads, "intermediate": a.intermediate,
        "vocab_size": a.vocab_size, "max_len": a.max_len, "batch_size": a.batch_size,
        "threads": a.threads, "lr": a.lr, "dropout": a.dropout, "grad_clip": a.grad_clip,
        "seed": a.seed,
        "parameters": n_params, "attn_implementation": model.config._attn_implementation,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "from_run": a.from_run,
        **{f"selfsup_run_{k}": v for k, v in run_figures.items()},
    }))


if __name__ == "__main__":
    main()
