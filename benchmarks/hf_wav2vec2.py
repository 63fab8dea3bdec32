"""wav2vec 2.0 pre-training with Hugging Face transformers on the CPU.

The peer of selfsup's wav2vec2 trainer (`selfsup pretrain --config
configs/audio/cpu.toml`): the model is transformers' `Wav2Vec2ForPreTraining`
built from the `[model]` table of the same preset (read from the TOML, so the
shapes, codebooks, negatives and masking are selfsup's), trained in float32
with AdamW at the preset's learning rate and batch, on the same number of
threads:

    OMP_NUM_THREADS=2 ~/.cache/selfsup/bench-venv/bin/python benchmarks/hf_wav2vec2.py \
        --config configs/audio/cpu.toml --steps 30 --threads 2

Each step is transformers' own pre-training recipe (as in its
`run_wav2vec2_pretraining_no_trainer.py`): `_compute_mask_indices` with the
preset's mask_time_prob / mask_time_length, `_sample_negative_indices`, the
Gumbel temperature annealed per step like selfsup's, the loss the model
returns (contrastive + diversity_loss_weight * diversity; transformers has no
feature penalty), gradient clipping at the preset's grad_clip.

Data: every step draws `batch_size` random crops of `crop_seconds` of
noise normalised to zero mean and unit variance (decoding Ogg is not part of
the measured step on either side; the clip content does not change the
work). Throughput counts seconds of audio (`batch_size * crop_seconds` per
step) over the `--steps` timed steps after `--warmup-steps` untimed ones.
Progress on stderr; one JSON line on stdout: audio_seconds_per_s, steps,
seconds, peak_rss_mb, final_loss, then the settings.
"""
import argparse
import json
import resource
import sys
import time
import tomllib

import numpy as np
import torch
import transformers
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)

MODEL_KEYS = [
    "conv_dim", "conv_kernel", "conv_stride", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups", "hidden_dropout", "attention_dropout",
    "mask_time_prob", "mask_time_length", "num_codevector_groups",
    "num_codevectors_per_group", "codevector_dim", "proj_codevector_dim",
    "num_negatives", "contrastive_logits_temperature", "diversity_loss_weight",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/audio/cpu.toml")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config, "rb") as f:
        preset = tomllib.load(f)
    m = preset.get("model", {})
    kwargs = {k: (tuple(m[k]) if isinstance(m[k], list) else m[k]) for k in MODEL_KEYS if k in m}
    cfg = Wav2Vec2Config(
        feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
        feat_proj_dropout=0.0, feat_quantizer_dropout=0.0, layerdrop=0.0,
        mask_time_min_masks=2, **kwargs)
    batch = args.batch_size or preset.get("run", {}).get("batch_size", 16)
    crop = int(preset.get("data", {}).get("crop_seconds", 1.0) * 16000)
    trainer = preset.get("trainer", {})
    opt_cfg = trainer.get("optimizer", {})
    lr = opt_cfg.get("lr", 0.016) * batch / 256.0
    method = preset.get("method", {})
    t_max = method.get("max_gumbel_temperature", 2.0)
    t_min = method.get("min_gumbel_temperature", 0.5)
    decay = method.get("gumbel_temperature_decay", 0.999995)
    clip = trainer.get("grad_clip", 10.0)

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(cfg)
    model.train()
    decay_params = [q for q in model.parameters() if q.dim() > 1]
    other = [q for q in model.parameters() if q.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": opt_cfg.get("weight_decay", 0.01)},
         {"params": other, "weight_decay": 0.0}],
        lr=lr, betas=tuple(opt_cfg.get("betas", (0.9, 0.98))), eps=opt_cfg.get("eps", 1e-6))
    frames = int(model._get_feat_extract_output_lengths(crop))
    gen = torch.Generator().manual_seed(0)
    np.random.seed(0)

    def step(i):
        wave = torch.randn(batch, crop, generator=gen)
        wave = (wave - wave.mean(-1, keepdim=True)) / torch.sqrt(wave.var(-1, keepdim=True) + 1e-7)
        mask = _compute_mask_indices((batch, frames), cfg.mask_time_prob, cfg.mask_time_length, min_masks=2)
        neg = _sample_negative_indices((batch, frames), cfg.num_negatives, mask)
        model.set_gumbel_temperature(max(t_max * decay ** i, t_min))
        out = model(wave, mask_time_indices=torch.tensor(mask, dtype=torch.bool),
                    sampled_negative_indices=torch.tensor(neg, dtype=torch.long))
        loss = out.loss / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.item()

    for i in range(args.warmup_steps):
        step(i)
    start = time.perf_counter()
    loss = float("nan")
    for i in range(args.steps):
        loss = step(args.warmup_steps + i)
        print(f"step {i + 1}/{args.steps} loss {loss:.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "audio_seconds_per_s": args.steps * batch * crop / 16000 / seconds,
        "steps": args.steps,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": loss,
        "batch_size": batch,
        "crop_samples": crop,
        "threads": args.threads,
        "parameters": sum(q.numel() for q in model.parameters()),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
