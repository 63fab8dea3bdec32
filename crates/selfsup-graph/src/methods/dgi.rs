//! Deep Graph Infomax (Velickovic et al. 2019, arXiv:1809.10341): node
//! embeddings of the graph (positives) and of a corrupted graph whose node
//! features are shuffled across nodes (negatives), a summary
//! `s = sigmoid(mean of the positive embeddings)` (the readout), and a
//! bilinear discriminator `D(h, s) = h W s + b` trained with binary
//! cross-entropy to tell them apart ([`dgi_loss`]).
use super::{view_of, GraphMethod};
use crate::encoders::{EncoderConfig, GraphEncoder};
use crate::graph::View;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// `[method] name = "dgi"` (no settings of its own: the encoder is the model).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgiConfig {}

/// DGI's loss: BCE-with-logits over the `2N` discriminator scores
/// (positives labelled 1, negatives 0), averaged, as the original
/// implementation's `nn.BCEWithLogitsLoss` on the concatenated logits.
/// `weight` is `[H, H]`, `bias` `[1]`, `summary` `[H]`.
pub fn dgi_loss(
    pos: &Tensor,
    neg: &Tensor,
    summary: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
) -> Tensor {
    let ws = weight.matmul(summary);
    let logits = Tensor::cat(&[pos.matmul(&ws), neg.matmul(&ws)], 0) + bias;
    let n = pos.size()[0];
    let labels = Tensor::cat(
        &[
            Tensor::ones([n], (Kind::Float, pos.device())),
            Tensor::zeros([neg.size()[0]], (Kind::Float, pos.device())),
        ],
        0,
    );
    logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, tch::Reduction::Mean)
}

/// DGI on a node-level graph.
pub struct Dgi {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    weight: Tensor,
    bias: Tensor,
    base: View,
}

impl Dgi {
    /// Builds the method for `base` (the whole graph).
    pub fn new(base: View, encoder: &EncoderConfig, _cfg: &DgiConfig, device: tch::Device) -> Self {
        let vs = nn::VarStore::new(device);
        let enc = GraphEncoder::new(&(vs.root() / "encoder"), base.x.size()[1], encoder);
        let h = enc.node_dim();
        let disc = vs.root() / "disc";
        // nn.Bilinear's Xavier-uniform initialisation, as in DGI's code.
        let bound = (6.0 / (2 * h) as f64).sqrt();
        let weight = disc.var(
            "weight",
            &[h, h],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let bias = disc.zeros("bias", &[1]);
        Self {
            vs,
            encoder: enc,
            weight,
            bias,
            base: base.to_device(device),
        }
    }
}

impl Method for Dgi {
    fn name(&self) -> &'static str {
        "dgi"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let v = view_of(batch, 0);
        let perm = &batch.views[1 + crate::graph::VIEW_TENSORS];
        // The corrupted graph is the same graph with its feature rows
        // shuffled: one propagation matrix serves both passes.
        let prop = self.encoder.propagation(&v);
        let pos = self.encoder.nodes_on(&v.x, &prop, true);
        let neg = self
            .encoder
            .nodes_on(&v.x.index_select(0, perm), &prop, true);
        let summary = pos
            .mean_dim([0i64].as_slice(), false, Kind::Float)
            .sigmoid();
        let loss = dgi_loss(&pos, &neg, &summary, &self.weight, &self.bias);
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        let v = View {
            x: xs.shallow_clone(),
            ..self.base.share()
        };
        self.encoder.nodes(&v, false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

impl GraphMethod for Dgi {
    fn encoder(&self) -> &GraphEncoder {
        &self.encoder
    }
    fn represent(&self, v: &View) -> Tensor {
        tch::no_grad(|| self.encoder.nodes(v, false))
    }
}
