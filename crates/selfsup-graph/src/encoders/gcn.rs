//! GCN (Kipf & Welling 2017, arXiv:1609.02907):
//! `H' = act(D^-1/2 (A + I) D^-1/2 H W + b)`, as PyTorch Geometric's
//! `GCNConv`: the linear map first, then the normalised adjacency as one
//! [`Propagation`] product. Variables `convs.{i}.lin.weight`,
//! `convs.{i}.bias` (and `acts.{i}.weight` for PReLU), PyG's names.
use super::{Activation, Readout};
use crate::graph::View;
use crate::propagation::Propagation;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// `[encoder] kind = "gcn"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcnConfig {
    /// Output width of each layer (GRACE Cora: [256, 128]; DGI: [512]).
    pub dims: Vec<i64>,
    pub activation: Activation,
    /// Use edge weights in the propagation (else every edge counts 1).
    pub weighted: bool,
    /// Readout when graph embeddings are asked for.
    pub readout: Readout,
}

impl Default for GcnConfig {
    fn default() -> Self {
        Self {
            dims: vec![256, 128],
            activation: Activation::Relu,
            weighted: false,
            readout: Readout::Mean,
        }
    }
}

/// One GCN layer.
#[derive(Debug)]
pub struct GcnConv {
    lin: nn::Linear,
    bias: Tensor,
}

impl GcnConv {
    /// `in_dim -> out_dim` under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, out_dim: i64) -> Self {
        let lin = nn::linear(
            p / "lin",
            in_dim,
            out_dim,
            nn::LinearConfig {
                bias: false,
                ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
                ..Default::default()
            },
        );
        let bias = p.zeros("bias", &[out_dim]);
        Self { lin, bias }
    }

    /// `P x W^T + b`.
    pub fn forward(&self, x: &Tensor, prop: &Propagation) -> Tensor {
        prop.apply(&x.apply(&self.lin)) + &self.bias
    }
}

/// A stack of GCN layers with an activation after each.
#[derive(Debug)]
pub struct Gcn {
    convs: Vec<GcnConv>,
    prelu: Vec<Tensor>,
    pub cfg: GcnConfig,
}

impl Gcn {
    /// Builds the stack under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, cfg: &GcnConfig) -> Self {
        let mut convs = Vec::new();
        let mut prelu = Vec::new();
        let mut d = in_dim;
        for (i, &o) in cfg.dims.iter().enumerate() {
            convs.push(GcnConv::new(&(p / "convs" / i), d, o));
            if cfg.activation == Activation::Prelu {
                prelu.push((p / "acts" / i).ones("weight", &[o]) * 0.25);
            }
            d = o;
        }
        Self {
            convs,
            prelu,
            cfg: cfg.clone(),
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> i64 {
        *self.cfg.dims.last().expect("at least one layer")
    }

    /// The normalised adjacency of `v` this encoder propagates with.
    pub fn propagation(&self, v: &View) -> Propagation {
        Propagation::gcn(v, self.cfg.weighted)
    }

    /// Node embeddings of features `x` on the graph of `prop`.
    pub fn forward(&self, x: &Tensor, prop: &Propagation) -> Tensor {
        let mut h = x.to_kind(Kind::Float);
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h, prop);
            h = match self.cfg.activation {
                Activation::Relu => h.relu(),
                Activation::Prelu => h.prelu(&self.prelu[i]),
            };
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Featurize, GraphBuilder};

    #[test]
    fn propagation_equals_the_dense_formula() {
        let mut b = GraphBuilder::new(4);
        for (u, v) in [(0, 1), (1, 2), (1, 3)] {
            b.add_edge(u, v, 1.0);
        }
        let (f, d) = Featurize::Degree.apply(&b).unwrap();
        let view = b.build(f, d, None).tensors();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let conv = GcnConv::new(&vs.root(), 3, 2);
        let sparse = conv.forward(&view.x, &Propagation::gcn(&view, false));
        // Dense: D^-1/2 (A + I) D^-1/2 X W^T.
        let a = Tensor::from_slice(&[
            1f32, 1., 0., 0., 1., 1., 1., 1., 0., 1., 1., 0., 0., 1., 0., 1.,
        ])
        .view([4, 4]);
        let dinv = a
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .rsqrt();
        let norm = dinv.unsqueeze(1) * a * dinv.unsqueeze(0);
        let dense = norm.matmul(&view.x.matmul(&conv.lin.ws.tr()));
        assert!(sparse.allclose(&dense, 1e-5, 1e-6, false));
    }
}
