//! GIN (Xu et al. 2019, arXiv:1810.00826):
//! `h' = MLP((1 + eps) h + sum of neighbours' h)` with the MLP
//! `Linear -> BatchNorm -> ReLU -> Linear -> ReLU` (GraphCL's encoder), eps
//! fixed at 0. The neighbour sum is one [`Propagation`] product.
//! Variables `convs.{i}.nn.{0,1,3}.*`, PyG's `GINConv` names.
use super::Readout;
use crate::graph::View;
use crate::propagation::Propagation;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// `[encoder] kind = "gin"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GinConfig {
    pub hidden: i64,
    pub layers: usize,
    pub readout: Readout,
}

impl Default for GinConfig {
    /// GraphCL's unsupervised TU settings: 3 layers of 32, sum readout.
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 3,
            readout: Readout::Sum,
        }
    }
}

#[derive(Debug)]
struct GinConv {
    l1: nn::Linear,
    bn: nn::BatchNorm,
    l2: nn::Linear,
}

/// A stack of GIN layers.
#[derive(Debug)]
pub struct Gin {
    convs: Vec<GinConv>,
    pub cfg: GinConfig,
}

impl Gin {
    /// Builds the stack under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, cfg: &GinConfig) -> Self {
        let mut d = in_dim;
        let convs = (0..cfg.layers)
            .map(|i| {
                let q = p / "convs" / i / "nn";
                let c = GinConv {
                    l1: nn::linear(&q / 0, d, cfg.hidden, Default::default()),
                    bn: nn::batch_norm1d(&q / 1, cfg.hidden, Default::default()),
                    l2: nn::linear(&q / 3, cfg.hidden, cfg.hidden, Default::default()),
                };
                d = cfg.hidden;
                c
            })
            .collect();
        Self {
            convs,
            cfg: cfg.clone(),
        }
    }

    /// The neighbour sum of `v` this encoder aggregates with.
    pub fn propagation(&self, v: &View) -> Propagation {
        Propagation::neighbour_sum(v)
    }

    /// Node embeddings of features `x` after every layer, on the graph of
    /// `prop`.
    pub fn layers(&self, x: &Tensor, prop: &Propagation, train: bool) -> Vec<Tensor> {
        let mut h = x.to_kind(Kind::Float);
        let mut out = Vec::with_capacity(self.convs.len());
        for c in &self.convs {
            // The MLP's first layer is linear, so it goes before the sum:
            // W (h_i + sum_j h_j) + b = Wh_i + sum_j Wh_j + b. Messages then
            // have the hidden width, not the input width (10x less traffic
            // on the connectomes' 332 features).
            let hw = h.matmul(&c.l1.ws.tr());
            let agg = prop.apply(&hw) + &hw;
            let agg = match &c.l1.bs {
                Some(b) => agg + b,
                None => agg,
            };
            h = agg
                .apply_t(&c.bn, train && agg.size()[0] > 1)
                .relu()
                .apply(&c.l2)
                .relu();
            out.push(h.shallow_clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::{EncoderConfig, GraphEncoder};
    use crate::graph::{Featurize, GraphBuilder};

    #[test]
    fn one_layer_equals_the_textbook_formula() {
        let mut b = GraphBuilder::new(4);
        for (u, v) in [(0, 1), (1, 2), (1, 3)] {
            b.add_edge(u, v, 1.0);
        }
        let (f, d) = Featurize::Degree.apply(&b).unwrap();
        let view = b.build(f, d, None).tensors();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let gin = Gin::new(
            &vs.root(),
            3,
            &GinConfig {
                hidden: 5,
                layers: 1,
                readout: Readout::Sum,
            },
        );
        let got = gin
            .layers(&view.x, &gin.propagation(&view), false)
            .pop()
            .unwrap();
        // MLP((1 + 0) h + A h) with a dense adjacency.
        let a = Tensor::from_slice(&[
            0f32, 1., 0., 0., 1., 0., 1., 1., 0., 1., 0., 0., 0., 1., 0., 0.,
        ])
        .view([4, 4]);
        let c = &gin.convs[0];
        let want = (&view.x + a.matmul(&view.x))
            .apply(&c.l1)
            .apply_t(&c.bn, false)
            .relu()
            .apply(&c.l2)
            .relu();
        assert!(got.allclose(&want, 1e-5, 1e-6, false));
    }

    #[test]
    fn graph_embeddings_are_permutation_invariant() {
        let build = |perm: [usize; 4]| {
            let mut b = GraphBuilder::new(4);
            for (u, v) in [(0, 1), (1, 2), (2, 3), (3, 1)] {
                b.add_edge(perm[u], perm[v], 1.0);
            }
            let (f, d) = Featurize::Degree.apply(&b).unwrap();
            b.build(f, d, None).tensors()
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let enc = GraphEncoder::new(&vs.root(), 3, &EncoderConfig::Gin(GinConfig::default()));
        let a = View::batch_of(&[&build([0, 1, 2, 3]), &build([3, 2, 0, 1])]);
        let g = enc.graphs(&a, false);
        assert_eq!(g.size(), [2, 96]);
        assert!(g.get(0).allclose(&g.get(1), 1e-5, 1e-5, false));
    }
}
