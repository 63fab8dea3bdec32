#!/usr/bin/env python3
"""Check that a selfsup MLM export loads into HF transformers unchanged.

Usage:
    python benchmarks/check_hf_export.py EXPORT_DIR REFERENCE.safetensors [TEXT]

EXPORT_DIR is what selfsup's `export_mlm` writes (config.json,
model.safetensors, tokenizer.json, vocab.txt, tokenizer_config.json).
REFERENCE holds `input_ids`, `attention_mask` (int64 [B, L]) and `logits`
(float32 [B, L, V]) computed by selfsup on the same weights in eval mode.

Checks: `BertForMaskedLM.from_pretrained(dir)` reports no missing, unexpected
or mismatched keys; its logits on `input_ids` match selfsup's within 1e-4;
`AutoTokenizer.from_pretrained(dir)` loads, and when TEXT is given its ids
(with [CLS]/[SEP]) equal the first row of `input_ids`'s non-padding tokens.
Prints one line starting with PASS or FAIL; exits with 1 on FAIL.
Needs torch, transformers and safetensors (the benchmark venv).
"""
import sys

TOLERANCE = 1e-4


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def main():
    if len(sys.argv) not in (3, 4):
        fail(__doc__.strip().splitlines()[2])
    export_dir, reference = sys.argv[1], sys.argv[2]
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForMaskedLM

    ref = load_file(reference)
    model, info = BertForMaskedLM.from_pretrained(export_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        fail(f"loading info not clean: {problems}")
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    diff = (out - ref["logits"]).abs().max().item()
    if diff > TOLERANCE:
        fail(f"logits differ by {diff:.3g} (> {TOLERANCE})")
    tok = AutoTokenizer.from_pretrained(export_dir)
    if len(sys.argv) == 4:
        ids = tok(sys.argv[3])["input_ids"]
        row = [int(i) for i, m in zip(ref["input_ids"][0], ref["attention_mask"][0]) if m]
        if ids != row:
            fail(f"tokenizer ids {ids} != selfsup's {row}")
    print(f"PASS: {type(model).__name__} loaded with no missing/unexpected keys, "
          f"max |logit diff| {diff:.2e}, tokenizer {type(tok).__name__}")


if __name__ == "__main__":
    main()
