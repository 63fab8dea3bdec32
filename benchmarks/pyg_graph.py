"""PyTorch Geometric's GRACE and DGI on the graph selfsup trained on.

`cargo xtask bench --graph` runs this beside `selfsup pretrain` with the same
hyper-parameters (read from the same preset, passed as flags), the same graph
(selfsup's export/graph/{x,edges,y}.npy) and the same thread count, and
prints one JSON line: seconds per epoch (one full-graph step, the mean over
all but the first epoch) and the linear-probe accuracy of the frozen node
embeddings, scored like selfsup's (standardised features, zero-initialised
logistic regression, Adam 1e-2 with cosine decay, weight decay 1e-4, 100
epochs) on exactly selfsup's samples: the validation part and the
train/test splits its final evaluation used, read from validation.npy,
split_train.npy and split_test.npy beside the graph. Each split's probe is
scored on the fixed validation part and on the split's test part; mean and
standard deviation over the splits, validation and test alike.

GRACE follows the authors' PyG model (GCNConv stack, ELU projection head,
`semi_loss` with intra- and inter-view negatives); DGI is
torch_geometric.nn.DeepGraphInfomax with one GCNConv + PReLU and features
shuffled across nodes. Edges are dropped per undirected edge and feature
columns masked as in selfsup.

`--adj edge_index` (default) passes the edge index, PyG's usual form
(messages gathered and scattered along the edges); `--adj sparse` passes a
`torch.sparse` adjacency instead (PyG's sparse-matrix path, one sparse
product per layer); `--adj dense` uses PyG's DenseGCNConv on a dense
adjacency (the form selfsup picks for small, dense enough graphs).
DGI's graph never changes during training, so its GCNConv layers run with
`cached=True` (the normalised adjacency computed once, PyG's advice for
transductive training); GRACE drops different edges in every view, so its
normalisation must be recomputed and it runs uncached, as selfsup's does.
"""
import argparse, json, time
import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import DeepGraphInfomax, DenseGCNConv, GCNConv


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--graph", required=True)
    p.add_argument("--method", choices=["grace", "dgi"], required=True)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--dims", default="256,128")
    p.add_argument("--proj-hidden", type=int, default=128)
    p.add_argument("--tau", type=float, default=0.4)
    p.add_argument("--drop-edge", default="0.2,0.4")
    p.add_argument("--mask-feature", default="0.3,0.4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adj", choices=["edge_index", "sparse", "dense"], default="edge_index")
    return p.parse_args()


class Encoder(torch.nn.Module):
    def __init__(self, dims, act, form, cached):
        super().__init__()
        if form == "dense":
            self.convs = torch.nn.ModuleList(DenseGCNConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        else:
            self.convs = torch.nn.ModuleList(GCNConv(a, b, cached=cached) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = torch.nn.ModuleList(act(b) for b in dims[1:])
        self.dense = form == "dense"

    def forward(self, x, ei):
        for c, a in zip(self.convs, self.acts):
            # DenseGCNConv works on batches of graphs: [1, N, F] out.
            x = a(c(x, ei).squeeze(0) if self.dense else c(x, ei))
        return x


class Grace(torch.nn.Module):
    def __init__(self, enc, d, hidden, tau):
        super().__init__()
        self.enc, self.tau = enc, tau
        self.fc1, self.fc2 = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

    def proj(self, z):
        return self.fc2(F.elu(self.fc1(z)))

    def semi_loss(self, z1, z2):
        f = lambda x: torch.exp(x / self.tau)
        refl = f(F.normalize(z1) @ F.normalize(z1).t())
        btw = f(F.normalize(z1) @ F.normalize(z2).t())
        return -torch.log(btw.diag() / (refl.sum(1) + btw.sum(1) - refl.diag()))

    def loss(self, h1, h2):
        return ((self.semi_loss(h1, h2) + self.semi_loss(h2, h1)) * 0.5).mean()


def adjacency(ei, n, form):
    """The graph as GCNConv takes it: the edge index, the transposed sparse
    adjacency (adj_t[target, source]), or DenseGCNConv's dense adjacency."""
    if form == "edge_index":
        return ei
    if form == "dense":
        adj = torch.zeros(n, n)
        adj[ei[1], ei[0]] = 1.0
        return adj
    return torch.sparse_coo_tensor(ei.flip(0), torch.ones(ei.size(1)), (n, n)).coalesce()


def view(x, und, pe, pf, form):
    keep = torch.rand(und.size(1)) >= pe
    e = und[:, keep]
    ei = torch.cat([e, e.flip(0)], 1)
    mask = (torch.rand(x.size(1)) >= pf).float()
    return x * mask, adjacency(ei, x.size(0), form)


def probe(z, y, val, train_parts, test_parts):
    vals, tests = [], []
    c = int(y.max()) + 1
    for tr, te in zip(train_parts, test_parts):
        mean, std = z[tr].mean(0, keepdim=True), z[tr].std(0, unbiased=False, keepdim=True)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        norm = lambda idx: (z[idx] - mean) / std
        xtr = norm(tr)
        lin = torch.nn.Linear(z.size(1), c)
        torch.nn.init.zeros_(lin.weight); torch.nn.init.zeros_(lin.bias)
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
        steps = 100
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            loss = F.cross_entropy(lin(xtr), y[tr]) + 0.5e-4 * lin.weight.square().sum()
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        with torch.no_grad():
            vals.append((lin(norm(val)).argmax(1) == y[val]).float().mean().item())
            tests.append((lin(norm(te)).argmax(1) == y[te]).float().mean().item())
    return (float(np.mean(vals)), float(np.std(vals))), (float(np.mean(tests)), float(np.std(tests)))


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x = torch.from_numpy(np.load(f"{a.graph}/x.npy")).float()
    und = torch.from_numpy(np.load(f"{a.graph}/edges.npy")).long()
    y = torch.from_numpy(np.load(f"{a.graph}/y.npy")).long()
    full = adjacency(torch.cat([und, und.flip(0)], 1), x.size(0), a.adj)
    dims = [x.size(1)] + [int(d) for d in a.dims.split(",")]
    if a.method == "grace":
        model = Grace(Encoder(dims, lambda d: torch.nn.ReLU(), a.adj, cached=False), dims[-1], a.proj_hidden, a.tau)
        pe, pf = [float(v) for v in a.drop_edge.split(",")], [float(v) for v in a.mask_feature.split(",")]
    else:
        enc = Encoder(dims, lambda d: torch.nn.PReLU(d), a.adj, cached=True)
        corrupt = lambda x, ei: (x[torch.randperm(x.size(0))], ei)
        model = DeepGraphInfomax(dims[-1], enc, lambda z, *args, **kw: torch.sigmoid(z.mean(0)), corrupt)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    times = []
    for _ in range(a.epochs):
        t = time.perf_counter()
        model.train(); opt.zero_grad()
        if a.method == "grace":
            x1, e1 = view(x, und, pe[0], pf[0], a.adj); x2, e2 = view(x, und, pe[1], pf[1], a.adj)
            loss = model.loss(model.proj(model.enc(x1, e1)), model.proj(model.enc(x2, e2)))
        else:
            pos, neg, s = model(x, full)
            loss = model.loss(pos, neg, s)
        loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        z = model.enc(x, full) if a.method == "grace" else model.encoder(x, full)
    idx = lambda name: torch.from_numpy(np.load(f"{a.graph}/{name}")).long()
    (vacc, vstd), (acc, std) = probe(z, y, idx("validation.npy"), idx("split_train.npy"), idx("split_test.npy"))
    print(json.dumps({"impl": "pyg", "adj": a.adj, "cached": a.method != "grace" and a.adj != "dense", "method": a.method, "epochs": a.epochs, "seconds_per_epoch": float(np.mean(times[1:])),
                      "final_loss": loss.item(), "val_probe_accuracy": vacc, "val_probe_std": vstd,
                      "probe_accuracy": acc, "probe_std": std, "threads": a.threads}))


if __name__ == "__main__":
    main()
