"""SimCLR with lightly, configured like selfsup's `configs/vision/simclr-cpu.toml`.

The peer run of `cargo xtask bench`; by hand:

    ~/.cache/selfsup/bench-venv/bin/python benchmarks/lightly_simclr.py \
        --data ~/.cache/selfsup/datasets/fashion-mnist --threads 2 --epochs 6 --train-images 20000 --batch 256

Same as selfsup's preset: the first N training images; the 4-block CNN
(3x3 conv without bias + BN + ReLU, 32-64-128-256 channels, 2x2 max-pool after the first
three blocks, global average pool); a 256-512-128 projection head Linear-BN-ReLU-Linear
built with lightly's ProjectionHead (lightly 1.6's SimCLRProjectionHead adds a BN on
the output, unlike selfsup's head: `--head simclr` uses it as is);
lightly's NTXentLoss (temperature 0.5); lightly's SimCLRTransform at 28 px with
colour-jitter strength 0.5 (brightness/contrast/saturation 0.4, hue 0.1),
min crop scale, no blur; SGD lr 0.06 * batch / 256, momentum 0.9, weight decay
5e-4 (not on biases and norms), cosine decay to 0 per step; torch on `--threads`
intra-op threads; one DataLoader worker process by default (`--workers`; on 2 idle
cores 1 worker was ~5% faster than 0 and on par with 2). After training: weighted
kNN (k=200, T=0.1, cosine) of the encoder's l2-normalised features on the 10k test
split against the same training images (normalised, not augmented), and the
raw-pixel kNN by the same code. Seeded (`--seed`). Progress on stderr, one JSON line
on stdout at the end; peak_rss_mb is the peak RSS of this process plus that of its
largest worker (an upper bound: the forked worker's shared pages count twice);
`cargo xtask bench` reports instead the peak PSS of each side's process tree, sampled
by the same code (xtask/src/pss.rs). `--blur-kernel K` blurs with torchvision's
kernel-width GaussianBlur, as selfsup does, in place of lightly's PIL blur.

Data-parallel (the peer of `cargo xtask bench --scaling`): started by torchrun
(`python -m torch.distributed.run --nproc-per-node 2 lightly_simclr.py ...`), each
rank joins a Gloo group, reads its DistributedSampler share with `--batch` images per
rank, and trains the model as DDP with lightly's NTXentLoss over the gathered global
batch (gather_distributed); rank 0 evaluates and prints the JSON line, whose
images_per_s counts the global batch. PyTorch's SyncBatchNorm works on GPUs only, so
on CPU each rank's batch norm sees its own share (selfsup synchronises it: more work).
"""
import argparse
import json
import math
import random
import resource
import sys
import time

import os

import lightly
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision.transforms as T
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.modules.heads import ProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image

import fmnist

MEAN, STD = 0.2860, 0.3530


def encoder(channels=(32, 64, 128, 256)):
    layers, c_in = [], 1
    for i, c in enumerate(channels):
        layers += [nn.Conv2d(c_in, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i < len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        views = self.transform(Image.fromarray(self.images[i]))
        return views[0], views[1]


def same_blur(transform, kernel, p):
    """Replaces lightly's GaussianBlur in both views (one shared view transform) by
    torchvision's kernel-width blur with the same probability and sigma range."""
    from lightly.transforms.gaussian_blur import GaussianBlur as LightlyBlur
    replaced = 0
    for view in transform.transforms:
        steps = view.transform.transforms
        for i, t in enumerate(steps):
            if isinstance(t, LightlyBlur):
                steps[i] = T.RandomApply([T.GaussianBlur(kernel_size=kernel, sigma=(0.1, 2.0))], p=p)
                replaced += 1
    if not replaced:
        raise SystemExit("lightly's SimCLRTransform has no GaussianBlur step to replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 1)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-images", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.06)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--head", choices=("selfsup", "simclr"), default="selfsup",
                    help="selfsup: Linear-BN-ReLU-Linear; simclr: lightly's SimCLRProjectionHead (+ output BN)")
    ap.add_argument("--min-scale", type=float, default=0.08)
    ap.add_argument("--cj-strength", type=float, default=0.5,
                    help="lightly's cj_strength (brightness/contrast/saturation 0.8 s, hue 0.2 s)")
    ap.add_argument("--blur", type=float, default=0.0, help="probability of the Gaussian blur (sigma 0.1-2)")
    ap.add_argument("--blur-kernel", type=int, default=0,
                    help="odd kernel width: replace lightly's blur (PIL, radius = sigma, support growing with "
                         "sigma) by torchvision's GaussianBlur(kernel_size) at the same place, as selfsup "
                         "blurs; 0 keeps lightly's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    workers = 1 if args.workers is None else args.workers
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0

    train_x, train_y = fmnist.load(args.data, "train")
    test_x, test_y = fmnist.load(args.data, "t10k")
    train_x, train_y = train_x[: args.train_images], train_y[: args.train_images]

    transform = SimCLRTransform(
        input_size=28, cj_prob=0.8, cj_strength=args.cj_strength, min_scale=args.min_scale, random_gray_scale=0.2,
        gaussian_blur=args.blur, hf_prob=0.5, vf_prob=0.0, rr_prob=0.0, normalize={"mean": [MEAN], "std": [STD]},
    )
    if args.blur_kernel:
        same_blur(transform, args.blur_kernel, args.blur)
    pairs = Pairs(train_x, transform)
    sampler = (torch.utils.data.distributed.DistributedSampler(pairs, seed=args.seed, drop_last=True)
               if world > 1 else None)
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=args.batch, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )
    backbone = encoder()
    if args.head == "simclr":
        head = SimCLRProjectionHead(256, 512, 128)
    else:
        head = ProjectionHead([(256, 512, nn.BatchNorm1d(512), nn.ReLU()), (512, 128, None, None)])
    model = nn.Sequential(backbone, head)
    criterion = NTXentLoss(temperature=args.temperature, gather_distributed=world > 1)
    train_model = model
    if world > 1:
        # PyTorch's SyncBatchNorm refuses CPU modules: per-rank statistics on CPU.
        if torch.cuda.is_available():
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model.cuda())
            backbone = model[0]
        # Two forwards per step: buffers are not re-broadcast in between.
        train_model = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    lr = args.lr * args.batch * world / 256
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, momentum=args.momentum,
    )
    total = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    epoch_seconds, losses = [], []
    model.train()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        start, running = time.perf_counter(), 0.0
        for x0, x1 in loader:
            z0, z1 = train_model(x0), train_model(x1)
            loss = criterion(z0, z1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        epoch_seconds.append(time.perf_counter() - start)
        losses.append(running / len(loader))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}, "
              f"{len(loader) * args.batch * world / epoch_seconds[-1]:.0f} img/s",
              file=sys.stderr, flush=True)

    n_steps = len(loader)
    del loader  # joins the workers, so that RUSAGE_CHILDREN counts them
    if rank != 0:
        dist.destroy_process_group()
        return

    def tensor(x):
        return ((torch.tensor(x).float() / 255.0 - MEAN) / STD).unsqueeze(1)

    eval_start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        tr = torch.cat([backbone(b) for b in tensor(train_x).split(512)])
        te = torch.cat([backbone(b) for b in tensor(test_x).split(512)])
    ty, sy = torch.from_numpy(train_y), torch.from_numpy(test_y)
    knn = fmnist.knn_top1(tr, ty, te, sy)
    raw = fmnist.knn_top1(tensor(train_x).flatten(1), ty, tensor(test_x).flatten(1), sy)
    knn_seconds = time.perf_counter() - eval_start
    print(f"kNN top-1 {knn:.4f} (raw pixels {raw:.4f}), {knn_seconds:.1f} s", file=sys.stderr, flush=True)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({
        "impl": "lightly", "lightly_version": lightly.__version__, "torch_version": torch.__version__,
        "images_per_s": n_steps * args.batch * world * args.epochs / sum(epoch_seconds), "world_size": world,
        "epoch_seconds": epoch_seconds, "epoch_losses": losses,
        "peak_rss_mb": self_mb + children_mb, "peak_rss_self_mb": self_mb, "peak_rss_workers_mb": children_mb,
        "knn_top1": knn, "raw_knn_top1": raw, "epochs": args.epochs, "batch": args.batch, "blur_kernel": args.blur_kernel,
        "train_images": len(train_x), "threads": args.threads, "workers": workers,
        "head": args.head, "subset": "first", "knn_seconds": knn_seconds,
    }))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
