"""torchvision's SimCLR two-view augmentation throughput: the reference for
selfsup's `cargo bench -p selfsup-vision --bench augment` (run by `cargo xtask bench`).

    ~/.cache/selfsup/bench-venv/bin/python benchmarks/torchvision_augment.py --threads 2 --size 28 --channels 1

Same pipeline as selfsup's defaults: RandomResizedCrop(size, scale=(0.08, 1)),
RandomHorizontalFlip(0.5), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
RandomGrayscale(0.2), to float, Normalize; no blur. Two views per image.
Measured three ways and the fastest reported, so the reference is the best
torchvision does on these cores: v1 transforms on PIL images, v2 transforms on
uint8 tensors (both in one process), and the faster of the two in a DataLoader
with `threads` worker processes. Prints one JSON line.
"""
import argparse
import json
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2

FMNIST = ([0.2860], [0.3530])
CIFAR = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])


def pipelines(size, channels):
    mean, std = FMNIST if channels == 1 else CIFAR
    t1 = v1.Compose([
        v1.RandomResizedCrop(size, scale=(0.08, 1.0)), v1.RandomHorizontalFlip(0.5),
        v1.RandomApply([v1.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v1.RandomGrayscale(0.2),
        v1.ToTensor(), v1.Normalize(mean, std),
    ])
    t2 = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=False), v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])
    return t1, t2


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, items, t):
        self.items, self.t = items, t

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        x = self.items[i]
        return self.t(x), self.t(x)


def rate_loop(items, t, n):
    start = time.perf_counter()
    for i in range(n):
        x = items[i % len(items)]
        t(x), t(x)
    return n / (time.perf_counter() - start)


def rate_loader(items, t, n, workers, batch=256):
    dl = torch.utils.data.DataLoader(TwoViews(items, t), batch_size=batch, num_workers=workers, shuffle=True)
    it, seen = iter(dl), 0
    next(it)  # start-up of the workers is not counted
    start = time.perf_counter()
    for a, _ in it:
        seen += a.shape[0]
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--data", default=None, help="Fashion-MNIST folder (else random images)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    if args.data and args.channels == 1:
        import fmnist
        raw = fmnist.load(args.data, "train")[0][: args.images]
    else:
        shape = (args.images, args.size, args.size) + ((args.channels,) if args.channels == 3 else ())
        raw = rng.integers(0, 256, size=shape, dtype=np.uint8)
    mode = "L" if args.channels == 1 else "RGB"
    pil = [Image.fromarray(x, mode=mode) for x in raw]
    tens = [torch.from_numpy(x).unsqueeze(0) if args.channels == 1 else torch.from_numpy(x).permute(2, 0, 1).contiguous() for x in raw]
    t1, t2 = pipelines(args.size, args.channels)
    n = len(raw)
    rates = {"v1_pil_1proc": rate_loop(pil, t1, n), "v2_tensor_1proc": rate_loop(tens, t2, n)}
    best_single = max(rates, key=rates.get)
    items, t = (pil, t1) if best_single.startswith("v1") else (tens, t2)
    rates[f"{best_single.split('_1proc')[0]}_dataloader_{args.threads}workers"] = rate_loader(items, t, 4 * n, args.threads)
    best = max(rates, key=rates.get)
    print(json.dumps({"impl": "torchvision", "torchvision_version": torchvision.__version__, "images_per_s": rates[best],
                      "best": best, "all": rates, "size": args.size, "channels": args.channels, "threads": args.threads,
                      "images": n}))


if __name__ == "__main__":
    main()
