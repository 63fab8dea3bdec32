"""torchvision's SimCLR two-view augmentation throughput: the reference for
selfsup's `cargo bench -p selfsup-vision --bench augment` (run by `cargo xtask bench`).

    ~/.cache/selfsup/bench-venv/bin/python benchmarks/torchvision_augment.py \
        --threads 2 --size 28 --channels 1 --data ~/.cache/selfsup/datasets/fashion-mnist
    ~/.cache/selfsup/bench-venv/bin/python benchmarks/torchvision_augment.py --threads 2 --size 32 --channels 3

Same pipeline as selfsup's defaults: RandomResizedCrop(size, scale=(0.08, 1)),
RandomHorizontalFlip(0.5), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
RandomGrayscale(0.2), to float, Normalize (Fashion-MNIST 0.2860/0.3530 for 1
channel, CIFAR-10 statistics for 3); no blur. Saturation is 0.4 as in selfsup and
lightly's SimCLRTransform(cj_strength=0.5); on grey images it does nothing.
Images: the first `--images` Fashion-MNIST training images with `--data` and 1
channel, else seeded random uint8 images. Two views per image, batches of 256
stacked into tensors (as selfsup's loader and a DataLoader deliver them).

Four ways are measured and the fastest is `images_per_s`, so the reference is the
best torchvision does on these cores: v1 transforms on PIL images and v2
transforms on uint8 tensors (v2 crop without antialiasing, as selfsup), each in
one process and in a DataLoader with `threads` worker processes. Every process
runs torch with one intra-op thread (torch.set_num_threads(1), what DataLoader
workers do anyway): on 28-32 px images more threads only add overhead, e.g. v2 on
32x32x3 ran at ~40 img/s with 2 threads against ~700 with 1 on a busy 2-core
machine. Prints one JSON line on stdout.
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
BATCH = 256


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
    """`reps` passes over `items`, two views of each."""

    def __init__(self, items, t, reps=1):
        self.items, self.t, self.reps = items, t, reps

    def __len__(self):
        return len(self.items) * self.reps

    def __getitem__(self, i):
        x = self.items[i % len(self.items)]
        return self.t(x), self.t(x)


def rate_loop(items, t, n):
    """Images/s augmenting n images in this process, stacking batches of 256."""
    start = time.perf_counter()
    for s in range(0, n, BATCH):
        views = [t(items[i % len(items)]) for i in range(s, s + BATCH) for _ in range(2)]
        torch.stack(views[0::2]), torch.stack(views[1::2])
    return (n + BATCH - 1) // BATCH * BATCH / (time.perf_counter() - start)


def rate_loader(items, t, n, workers):
    """Images/s through a DataLoader with `workers` processes; their start-up and
    the first two batches per worker are not counted."""
    ds = TwoViews(items, t, reps=-(-n // len(items)) + 1)
    it = iter(torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, shuffle=True))
    for _ in range(2 * max(workers, 1)):
        next(it)
    seen, start = 0, time.perf_counter()
    for a, _ in it:
        seen += a.shape[0]
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="cores: DataLoader workers")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--images", type=int, default=4096, help="images augmented per measurement")
    ap.add_argument("--data", default=None, help="Fashion-MNIST folder (1 channel only; else random images)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.data and args.channels == 1:
        import fmnist
        raw = fmnist.load(args.data, "train")[0][: args.images].copy()
        source = "fashion-mnist"
    else:
        shape = (args.images, args.size, args.size) + ((3,) if args.channels == 3 else ())
        raw = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
        source = "random"
    pil = [Image.fromarray(x) for x in raw]
    tens = [torch.from_numpy(x).unsqueeze(0) if x.ndim == 2 else torch.from_numpy(x).permute(2, 0, 1).contiguous()
            for x in raw]
    t1, t2 = pipelines(args.size, args.channels)
    n, w = len(raw), args.threads
    rates = {
        "v1_pil_1proc": rate_loop(pil, t1, n),
        "v2_tensor_1proc": rate_loop(tens, t2, n),
        f"v1_pil_dataloader_{w}workers": rate_loader(pil, t1, n, w),
        f"v2_tensor_dataloader_{w}workers": rate_loader(tens, t2, n, w),
    }
    best = max(rates, key=rates.get)
    print(json.dumps({
        "impl": "torchvision", "torchvision_version": torchvision.__version__, "torch_version": torch.__version__,
        "images_per_s": rates[best], "best": best, "all": rates, "size": args.size, "channels": args.channels,
        "threads": args.threads, "images": n, "source": source,
    }))


if __name__ == "__main__":
    main()
