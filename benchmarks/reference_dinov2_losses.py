"""Reference values for selfsup-core's DINOv2 losses (koleo.rs, ibot.rs and
dino.rs's Sinkhorn-Knopp centring), computed with PyTorch from the papers'
formulas, on the fixed inputs of crates/selfsup-core/src/loss/test_fixture.rs.

    ~/.cache/selfsup/libtorch-2.11.0/bin/python benchmarks/reference_dinov2_losses.py
"""
import torch
import torch.nn.functional as F

torch.set_printoptions(precision=10)

# test_fixture.rs
z1 = torch.tensor([1.0, 0.0, 0.5, 0.2, 1.0, -0.3, -0.5, 0.3, 1.0, 0.4, -0.8, 0.1]).reshape(4, 3)
torch.manual_seed(0)
t = [torch.randn(4, 5) for _ in range(2)]
s = [torch.randn(4, 5) for _ in range(3)]
center = torch.randn(1, 5) * 0.1


def koleo(x, eps=1e-8):
    """Kozachenko-Leonenko: -mean log distance to the nearest other sample."""
    x = F.normalize(x, p=2, dim=-1, eps=eps)
    dots = x @ x.t()
    n = x.shape[0]
    dots[torch.arange(n), torch.arange(n)] = -2.0
    nearest = dots.argmax(dim=1)
    d = torch.nn.PairwiseDistance(p=2, eps=eps)(x, x[nearest])
    return -torch.log(d + eps).mean()


print("koleo(z1)", koleo(z1).item())
print("koleo(cat t)", koleo(torch.cat(t)).item())

# iBOT: three masked patches (two of image 0, one of image 1), three images.
sp = s[0][:3]
tp = F.softmax(t[0][:3] / 0.04, dim=-1)
w = torch.tensor([0.5, 0.5, 1.0])
ibot = -(w * (tp * F.log_softmax(sp / 0.1, dim=-1)).sum(-1)).sum() / 3
print("ibot", ibot.item())


def sinkhorn_knopp(x, temp, iters=3):
    q = torch.exp(x / temp).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


sk = [sinkhorn_knopp(x, 0.1) for x in t]
print("sk(t0)[0]", sk[0][0].tolist())
total, pairs = 0.0, 0
for iq, q in enumerate(sk):
    for v, sv in enumerate(s):
        if v == iq:
            continue
        total += torch.sum(-q * F.log_softmax(sv / 0.1, dim=-1), dim=-1).mean()
        pairs += 1
print("dino loss, sinkhorn-knopp targets", (total / pairs).item())
