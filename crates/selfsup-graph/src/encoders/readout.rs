//! Graph readouts: node embeddings `[N, D]` and the graph id of each node
//! -> one row per graph, by `index_add` (sum, mean) or `scatter_reduce`
//! (max). A graph with no node reads out as zeros.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How node embeddings are pooled into a graph embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    #[default]
    Sum,
    Mean,
    Max,
}

impl Readout {
    /// Pools `h` `[N, D]` by `batch` `[N]` into `[graphs, D]`.
    pub fn apply(self, h: &Tensor, batch: &Tensor, graphs: i64) -> Tensor {
        let d = h.size()[1];
        let zeros = Tensor::zeros([graphs, d], (h.kind(), h.device()));
        match self {
            Readout::Sum => zeros.index_add(0, batch, h),
            Readout::Mean => {
                let sum = zeros.index_add(0, batch, h);
                let count = Tensor::zeros([graphs], (Kind::Float, h.device())).index_add(
                    0,
                    batch,
                    &Tensor::ones([h.size()[0]], (Kind::Float, h.device())),
                );
                sum / count.clamp_min(1.0).unsqueeze(1)
            }
            Readout::Max => {
                let index = batch.unsqueeze(1).expand([-1, d], false);
                zeros.internal_scatter_reduce(0, &index, h, "amax", false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_per_graph() {
        let h = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0]).view([3, 2]);
        let batch = Tensor::from_slice(&[0i64, 0, 2]);
        let get = |r: Readout| Vec::<f32>::try_from(r.apply(&h, &batch, 3).view([-1])).unwrap();
        assert_eq!(get(Readout::Sum), vec![4.0, 2.0, 0.0, 0.0, 5.0, -6.0]);
        assert_eq!(get(Readout::Mean), vec![2.0, 1.0, 0.0, 0.0, 5.0, -6.0]);
        assert_eq!(get(Readout::Max), vec![3.0, 4.0, 0.0, 0.0, 5.0, -6.0]);
    }
}
