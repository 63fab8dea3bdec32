#!/usr/bin/env python3
"""Plain PyTorch SimCLR: the peer of `selfsup pretrain` with
configs/vision/simclr-gpu.toml in the GPU kit (run.sh), same work per step.

    python3 simclr_peer.py --data data/fashion-mnist --device cuda --batch-size 512 \
        --steps 60 --warmup 10 [--compile [--compile-backend inductor]]

- data: the IDX .gz training images of --data (uint8, 1 channel, 28x28), all
  of them or the first --train-images;
- two views per image from a DataLoader (--workers processes): selfsup's default
  augmentations (RandomResizedCrop(28, scale 0.08-1, ratio 3/4-4/3), flip 0.5,
  colour jitter p 0.8 (brightness 0.4, contrast 0.4; saturation and hue do
  nothing to one channel), grayscale (a no-op on one channel)), then the
  Fashion-MNIST mean / std;
- torchvision's resnet18 with the CIFAR stem (3x3 stride-1 conv1 on 1
  channel, no max-pool, fc = Identity), channels_last;
- the projection head of the preset: Linear(512, 512) + BatchNorm1d + ReLU +
  Linear(512, 128);
- NT-Xent at temperature 0.5 over the 2N views; SGD (lr 0.06 x batch/256,
  momentum 0.9, weight decay 5e-4), torch.autocast(bfloat16) on CUDA.

--warmup steps run first (untimed: cuDNN autotuning, torch.compile); then
--steps timed steps. Prints one JSON line: images_per_s (training images, not
views, per second), steps, seconds, peak_gpu_mb (torch.cuda.max_memory_allocated),
first_loss / last_loss, compile_seconds, the settings.
"""
import argparse
import gzip
import json
import struct
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.2860, 0.3530


def read_idx_images(path, limit):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    n = dims[0] if limit is None else min(limit, dims[0])
    h, w = dims[1], dims[2]
    body = data[4 + 4 * ndim : 4 + 4 * ndim + n * h * w]
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(n, 1, h, w)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images):
        from torchvision.transforms import v2

        self.images = images
        side = images.shape[-1]
        self.augment = v2.Compose(
            [
                v2.RandomResizedCrop(side, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
                v2.RandomHorizontalFlip(0.5),
                v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([MEAN], [STD]),
            ]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        return self.augment(x), self.augment(x)


def resnet18_cifar():
    import torchvision

    m = torchvision.models.resnet18(weights=None)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    m.fc = nn.Identity()
    return m


class SimClr(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = resnet18_cifar()
        self.head = nn.Sequential(
            nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 128)
        )

    def forward(self, x):
        return self.head(self.encoder(x))


def nt_xent(z, temperature):
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0] // 2
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("FAIL: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        sys.exit(1)
    if cuda:
        torch.backends.cudnn.benchmark = True

    images = read_idx_images(f"{a.data}/train-images-idx3-ubyte.gz", a.train_images)
    loader = torch.utils.data.DataLoader(
        TwoViews(images),
        batch_size=a.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=a.workers,
        pin_memory=cuda,
        persistent_workers=a.workers > 0,
        prefetch_factor=4 if a.workers > 0 else None,
    )
    model = SimClr().to(dev).to(memory_format=torch.channels_last)
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.06 * a.batch_size / 256,
        momentum=0.9,
    )
    fwd = torch.compile(model, backend=a.compile_backend) if a.compile else model

    def step(v1, v2):
        x = torch.cat([v1, v2]).to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            z = fwd(x)
        loss = nt_xent(z, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def batches():
        while True:
            yield from loader

    it = batches()
    losses = []
    t0 = time.perf_counter()
    for _ in range(a.warmup):
        losses.append(step(*next(it)).item())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_seconds = time.perf_counter() - t0
    timed_start_unix = time.time()
    t1 = time.perf_counter()
    timed = []
    for _ in range(a.steps):
        timed.append(step(*next(it)).detach())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t1
    timed_end_unix = time.time()
    losses += [t.item() for t in timed]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    out = {
        "images_per_s": a.steps * a.batch_size / seconds,
        "timed_start_unix": timed_start_unix,
        "timed_end_unix": timed_end_unix,
        "steps": a.steps,
        "seconds": seconds,
        "warmup_steps": a.warmup,
        "compile_seconds": warmup_seconds if a.compile else None,
        "peak_gpu_mb": peak,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "non_finite_steps": sum(1 for v in losses if v != v or v in (float("inf"), float("-inf"))),
        "batch_size": a.batch_size,
        "workers": a.workers,
        "compile": a.compile,
        "compile_backend": a.compile_backend if a.compile else None,
        "device": str(dev) + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
