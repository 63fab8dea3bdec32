//! GRACE (Zhu et al. 2020, arXiv:2006.04131): two views of the graph by
//! edge dropping and feature masking, a GCN, a projection head
//! (`Linear -> ELU -> Linear`), and for every node an InfoNCE whose
//! negatives are all other nodes of *both* views (inter- and intra-view).
//!
//! That objective is exactly core's NT-Xent over the two views' node
//! projections: for anchor `u_i` the denominator is
//! `sum_j exp(s(u_i, v_j)/t) + sum_{j != i} exp(s(u_i, u_j)/t)`, and the
//! loss averages both directions. So GRACE calls
//! [`selfsup_core::loss::InfoNce::nt_xent`]; the test checks it against
//! GRACE's own `semi_loss` formulation computed in PyTorch.
use super::{view_of, GraphMethod};
use crate::encoders::{EncoderConfig, GraphEncoder};
use crate::graph::View;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// `[method] name = "grace"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraceConfig {
    /// Hidden width of the projection head (its output is the encoder's width).
    pub proj_hidden: i64,
    /// Temperature tau (GRACE Cora: 0.4).
    pub temperature: f64,
}

impl Default for GraceConfig {
    fn default() -> Self {
        Self {
            proj_hidden: 128,
            temperature: 0.4,
        }
    }
}

/// GRACE on a node-level graph.
pub struct Grace {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    fc1: nn::Linear,
    fc2: nn::Linear,
    loss: InfoNce,
    base: View,
}

impl Grace {
    /// Builds the method for `base` (the whole graph, used by `embed`).
    pub fn new(
        base: View,
        encoder: &EncoderConfig,
        cfg: &GraceConfig,
        device: tch::Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let enc = GraphEncoder::new(&(vs.root() / "encoder"), base.x.size()[1], encoder);
        let d = enc.node_dim();
        let fc1 = nn::linear(
            vs.root() / "proj" / "fc1",
            d,
            cfg.proj_hidden,
            Default::default(),
        );
        let fc2 = nn::linear(
            vs.root() / "proj" / "fc2",
            cfg.proj_hidden,
            d,
            Default::default(),
        );
        Self {
            vs,
            encoder: enc,
            fc1,
            fc2,
            loss: InfoNce::new(InfoNceConfig {
                temperature: cfg.temperature,
            }),
            base: base.to_device(device),
        }
    }

    fn head(&self, z: &Tensor) -> Tensor {
        z.apply(&self.fc1).elu().apply(&self.fc2)
    }
}

impl Method for Grace {
    fn name(&self) -> &'static str {
        "grace"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let (a, b) = (view_of(batch, 0), view_of(batch, 1));
        let h1 = self.head(&self.encoder.nodes(&a, true));
        let h2 = self.head(&self.encoder.nodes(&b, true));
        let loss = self.loss.nt_xent(&h1, &h2, ctx.comm);
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    /// Node embeddings of the whole graph with node features `xs`.
    fn embed(&self, xs: &Tensor) -> Tensor {
        let v = View {
            x: xs.shallow_clone(),
            ..self.base.share()
        };
        self.encoder.nodes(&v, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.head(&self.embed(xs))
    }
}

impl GraphMethod for Grace {
    fn encoder(&self) -> &GraphEncoder {
        &self.encoder
    }
    fn represent(&self, v: &View) -> Tensor {
        tch::no_grad(|| self.encoder.nodes(v, false))
    }
}
