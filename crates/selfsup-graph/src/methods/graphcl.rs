//! GraphCL (You et al. 2020, arXiv:2010.13902): two augmented views of each
//! graph of a batch (node dropping, random-walk subgraphs, edge dropping,
//! feature masking), a GIN with a readout, a projection head
//! (`Linear -> ReLU -> Linear`) and NT-Xent over the graph embeddings:
//! core's [`selfsup_core::loss::InfoNce::nt_xent`].
use super::{view_of, GraphMethod};
use crate::encoders::{EncoderConfig, GraphEncoder};
use crate::graph::View;
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// `[method] name = "graphcl"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphClConfig {
    /// Temperature (GraphCL: 0.2).
    pub temperature: f64,
}

impl Default for GraphClConfig {
    fn default() -> Self {
        Self { temperature: 0.2 }
    }
}

/// GraphCL on a set of graphs.
pub struct GraphCl {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    p1: nn::Linear,
    p2: nn::Linear,
    loss: InfoNce,
    base: View,
}

impl GraphCl {
    /// Builds the method; `base` is every graph side by side (for `embed`).
    pub fn new(
        base: View,
        encoder: &EncoderConfig,
        cfg: &GraphClConfig,
        device: tch::Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let enc = GraphEncoder::new(&(vs.root() / "encoder"), base.x.size()[1], encoder);
        let d = enc.graph_dim();
        let p1 = nn::linear(vs.root() / "proj" / "0", d, d, Default::default());
        let p2 = nn::linear(vs.root() / "proj" / "2", d, d, Default::default());
        Self {
            vs,
            encoder: enc,
            p1,
            p2,
            loss: InfoNce::new(InfoNceConfig {
                temperature: cfg.temperature,
            }),
            base: base.to_device(device),
        }
    }

    fn head(&self, g: &Tensor) -> Tensor {
        g.apply(&self.p1).relu().apply(&self.p2)
    }
}

impl Method for GraphCl {
    fn name(&self) -> &'static str {
        "graphcl"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let (a, b) = (view_of(batch, 0), view_of(batch, 1));
        let z1 = self.head(&self.encoder.graphs(&a, true));
        let z2 = self.head(&self.encoder.graphs(&b, true));
        Ok(LossOut {
            loss: self.loss.nt_xent(&z1, &z2, ctx.comm),
            terms: vec![],
        })
    }
    /// Graph embeddings of every graph, with node features `xs`.
    fn embed(&self, xs: &Tensor) -> Tensor {
        let v = View {
            x: xs.shallow_clone(),
            ..self.base.share()
        };
        self.encoder.graphs(&v, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.head(&self.embed(xs))
    }
}

impl GraphMethod for GraphCl {
    fn encoder(&self) -> &GraphEncoder {
        &self.encoder
    }
    fn represent(&self, v: &View) -> Tensor {
        tch::no_grad(|| self.encoder.graphs(v, false))
    }
}
