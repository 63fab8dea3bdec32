//! Message passing as one matrix product. Summing messages `c_uv h_u` from
//! every edge `u -> v` at its target is `P h` with `P[v, u] = c_uv`, so the
//! encoders build `P` once per view and multiply: a dense `N x N` matrix
//! when the graph is small and dense enough for BLAS to win, else a sparse
//! COO matrix (memory and time linear in nodes + edges, as gathering along
//! the edges and scattering at their targets, without the `[M, D]` message
//! tensor that costs the gather/scatter form most of its time).
//!
//! Both forms give the same values and gradients (tested below); only the
//! speed differs. On the Drosophila connectome (213 neurons, 11,250
//! directed edges) a forward and backward pass at width 1024 took 418 ms
//! as gather/scatter, 45 ms as a sparse product and 25 ms dense (PyTorch
//! 2.11, 2 threads, loaded machine; the crossover below is where sparse and
//! dense took about the same time on random graphs of 213 to 5,000 nodes).
use crate::graph::{gcn_norm, View};
use tch::{Device, Kind, Tensor};

/// Dense when `N^2 <= DENSE_RATIO * nnz` ...
pub const DENSE_RATIO: i64 = 32;
/// ... and `N <= DENSE_MAX_NODES` (a 4096^2 float matrix is 64 MiB).
pub const DENSE_MAX_NODES: i64 = 4096;

/// The propagation matrix of one view.
#[derive(Debug)]
pub struct Propagation {
    matrix: Tensor,
    dense: bool,
}

impl Propagation {
    /// `P[dst, src] += coef` for each column `(src, dst)` of `index`
    /// `[2, M]` (repeated pairs add up), on `n` nodes.
    pub fn from_coefficients(index: &Tensor, coef: &Tensor, n: i64) -> Self {
        let (src, dst) = (index.get(0), index.get(1));
        let nnz = coef.size()[0];
        let device = coef.device();
        let dense = n <= DENSE_MAX_NODES && n * n <= DENSE_RATIO * nnz;
        let coef = coef.to_kind(Kind::Float);
        let matrix = if dense {
            Tensor::zeros([n, n], (Kind::Float, device)).index_put(
                &[Some(dst), Some(src)],
                &coef,
                true,
            )
        } else {
            Tensor::sparse_coo_tensor_indices_size(
                &Tensor::stack(&[dst, src], 0),
                &coef,
                [n, n],
                (Kind::Float, device),
                false,
            )
            .coalesce()
        };
        Self { matrix, dense }
    }

    /// GCN's `D^-1/2 (A + I) D^-1/2` of `v` ([`gcn_norm`]), with the edge
    /// weights when `weighted`, else 1 per edge.
    pub fn gcn(v: &View, weighted: bool) -> Self {
        let (ei, w) = v.directed();
        let (index, coef) = gcn_norm(&ei, weighted.then_some(&w), v.nodes());
        Self::from_coefficients(&index, &coef, v.nodes())
    }

    /// The plain neighbour sum of `v` (GIN): `P = A`, 1 per edge, no loops.
    pub fn neighbour_sum(v: &View) -> Self {
        let (ei, _) = v.directed();
        let ones = Tensor::ones([ei.size()[1]], (Kind::Float, ei.device()));
        Self::from_coefficients(&ei, &ones, v.nodes())
    }

    /// `P h` for `h` `[N, D]`.
    pub fn apply(&self, h: &Tensor) -> Tensor {
        self.matrix.mm(h)
    }

    /// Whether `P` is stored dense.
    pub fn is_dense(&self) -> bool {
        self.dense
    }

    /// The device `P` lives on.
    pub fn device(&self) -> Device {
        self.matrix.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gather/scatter, the textbook form: what both stored forms must equal.
    fn scatter(index: &Tensor, coef: &Tensor, h: &Tensor) -> Tensor {
        let msg = h.index_select(0, &index.get(0)) * coef.unsqueeze(1);
        h.zeros_like().index_add(0, &index.get(1), &msg)
    }

    #[test]
    fn dense_and_sparse_equal_gather_scatter_in_value_and_gradient() {
        tch::manual_seed(3);
        let n = 40;
        // Random edges with repeats, so duplicates must add up.
        let index = Tensor::randint(n, [2, 300], (Kind::Int64, Device::Cpu));
        let coef = Tensor::rand([300], (Kind::Float, Device::Cpu));
        let h = Tensor::randn([n, 7], (Kind::Float, Device::Cpu));
        let dense = Propagation::from_coefficients(&index, &coef, n);
        // 300 entries: 1600 <= 32 * 300, dense; 20 entries: sparse.
        assert!(dense.is_dense());
        let few = index.narrow(1, 0, 20);
        let sparse = Propagation::from_coefficients(&few, &coef.narrow(0, 0, 20), n);
        assert!(!sparse.is_dense());
        for (p, idx, c) in [
            (&dense, &index, coef.shallow_clone()),
            (&sparse, &few, coef.narrow(0, 0, 20)),
        ] {
            let x1 = h.detach().set_requires_grad(true);
            let x2 = h.detach().set_requires_grad(true);
            let (a, b) = (p.apply(&x1), scatter(idx, &c, &x2));
            assert!(a.allclose(&b, 1e-5, 1e-5, false));
            // Some loss that weighs the outputs unequally.
            let w = Tensor::randn([n, 7], (Kind::Float, Device::Cpu));
            (&a * &w).sum(Kind::Float).backward();
            (&b * &w).sum(Kind::Float).backward();
            assert!(x1.grad().allclose(&x2.grad(), 1e-5, 1e-5, false));
        }
    }
}
