"""Fashion-MNIST IDX reading and the weighted kNN shared by the reference scripts."""
import gzip
import os

import numpy as np
import torch
import torch.nn.functional as F


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, split):
    """(images uint8 [N, 28, 28], labels int64 [N]) of split 'train' or 't10k'."""
    def find(stem):
        for name in (stem + ".gz", stem):
            p = os.path.join(data_dir, name)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(os.path.join(data_dir, stem) + "[.gz]")

    x = read_idx(find(f"{split}-images-idx3-ubyte"))
    y = read_idx(find(f"{split}-labels-idx1-ubyte")).astype(np.int64)
    return x, y


@torch.no_grad()
def knn_top1(train_f, train_y, test_f, test_y, k=200, t=0.1, classes=10):
    """Weighted kNN (Wu et al. 2018): cosine similarity, weights exp(sim / t)."""
    train_f = F.normalize(train_f, dim=1)
    test_f = F.normalize(test_f, dim=1)
    k = min(k, train_f.shape[0])
    correct = 0
    for s in range(0, test_f.shape[0], 256):
        sim = test_f[s : s + 256] @ train_f.T
        w, idx = sim.topk(k, dim=1)
        w = (w / t).exp()
        votes = torch.zeros(sim.shape[0], classes).scatter_add_(1, train_y[idx], w)
        correct += (votes.argmax(1) == test_y[s : s + 256]).sum().item()
    return correct / test_f.shape[0]
