//! Graph encoders whose message passing is one [`Propagation`] product per
//! layer (sparse, linear in nodes + edges, or dense for small dense graphs).
//!
//! - [`gcn`]: GCN (Kipf & Welling 2017), node embeddings
//! - [`gin`]: GIN (Xu et al. 2019), node embeddings; graph embeddings by a
//!   sum / mean / max [`readout`] of every layer, concatenated
pub mod gcn;
pub mod gin;
pub mod readout;

use crate::graph::View;
use crate::propagation::Propagation;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

pub use readout::Readout;

/// Non-linearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    /// PReLU with one slope per channel (DGI).
    Prelu,
}

/// `[encoder]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    Gcn(gcn::GcnConfig),
    Gin(gin::GinConfig),
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig::Gcn(gcn::GcnConfig::default())
    }
}

/// A built encoder.
#[derive(Debug)]
pub enum GraphEncoder {
    Gcn(gcn::Gcn),
    Gin(gin::Gin),
}

impl GraphEncoder {
    /// Builds the encoder for `in_dim` input features under `p`.
    pub fn new(p: &nn::Path, in_dim: i64, cfg: &EncoderConfig) -> Self {
        match cfg {
            EncoderConfig::Gcn(c) => GraphEncoder::Gcn(gcn::Gcn::new(p, in_dim, c)),
            EncoderConfig::Gin(c) => GraphEncoder::Gin(gin::Gin::new(p, in_dim, c)),
        }
    }

    /// The propagation matrix of `v` for this encoder: build it once when
    /// several feature matrices share a graph ([`GraphEncoder::nodes_on`]).
    pub fn propagation(&self, v: &View) -> Propagation {
        match self {
            GraphEncoder::Gcn(e) => e.propagation(v),
            GraphEncoder::Gin(e) => e.propagation(v),
        }
    }

    /// Node embeddings `[N, node_dim]` of `v`.
    pub fn nodes(&self, v: &View, train: bool) -> Tensor {
        self.nodes_on(&v.x, &self.propagation(v), train)
    }

    /// Node embeddings of features `x` on the graph of `prop`.
    pub fn nodes_on(&self, x: &Tensor, prop: &Propagation, train: bool) -> Tensor {
        match self {
            GraphEncoder::Gcn(e) => e.forward(x, prop),
            GraphEncoder::Gin(e) => e.layers(x, prop, train).pop().expect("at least one layer"),
        }
    }

    /// Graph embeddings `[num_graphs, graph_dim]`: GIN's readout of every
    /// layer concatenated; for GCN the readout of its output.
    pub fn graphs(&self, v: &View, train: bool) -> Tensor {
        match self {
            GraphEncoder::Gcn(e) => {
                let h = e.forward(&v.x, &e.propagation(v));
                e.cfg.readout.apply(&h, &v.batch, v.num_graphs)
            }
            GraphEncoder::Gin(e) => {
                let hs = e.layers(&v.x, &e.propagation(v), train);
                let pooled: Vec<Tensor> = hs
                    .iter()
                    .map(|h| e.cfg.readout.apply(h, &v.batch, v.num_graphs))
                    .collect();
                Tensor::cat(&pooled, 1)
            }
        }
    }

    /// Width of [`GraphEncoder::nodes`].
    pub fn node_dim(&self) -> i64 {
        match self {
            GraphEncoder::Gcn(e) => e.out_dim(),
            GraphEncoder::Gin(e) => e.cfg.hidden,
        }
    }

    /// Width of [`GraphEncoder::graphs`].
    pub fn graph_dim(&self) -> i64 {
        match self {
            GraphEncoder::Gcn(e) => e.out_dim(),
            GraphEncoder::Gin(e) => e.cfg.hidden * e.cfg.layers as i64,
        }
    }
}
