//! The product quantizer (transformers' `Wav2Vec2GumbelVectorQuantizer`):
//! `G` codebooks of `V` entries; each latent frame picks one entry per
//! codebook through a straight-through Gumbel softmax (training) or the
//! argmax (inference), and the picked entries are concatenated. Names:
//! `quantizer.weight_proj` (`[G * V, C]`) and `quantizer.codevectors`
//! (`[1, G * V, D / G]`).
use super::Wav2Vec2Config;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// What the quantizer produced for `N = B * T` frames.
#[derive(Debug)]
pub struct Quantized {
    /// `[B, T, D]` quantized vectors.
    pub vectors: Tensor,
    /// `[N, G, V]` softmax of the logits without noise (training) or the
    /// one-hot choice (inference): what the perplexity is measured on.
    pub probs: Tensor,
}

/// The Gumbel product quantizer.
#[derive(Debug)]
pub struct Quantizer {
    weight_proj: nn::Linear,
    codevectors: Tensor,
    groups: i64,
    entries: i64,
}

impl Quantizer {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let (g, v) = (cfg.num_codevector_groups, cfg.num_codevectors_per_group);
        let c = *cfg.conv_dim.last().unwrap_or(&1);
        let weight_proj = nn::linear(
            p / "weight_proj",
            c,
            g * v,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        );
        let codevectors = p.var(
            "codevectors",
            &[1, g * v, cfg.codevector_dim / g],
            nn::Init::Uniform { lo: 0.0, up: 1.0 },
        );
        Self {
            weight_proj,
            codevectors,
            groups: g,
            entries: v,
        }
    }

    /// Codebooks and entries per codebook.
    pub fn shape(&self) -> (i64, i64) {
        (self.groups, self.entries)
    }

    /// `[B, T, C]` features -> quantized vectors, at Gumbel `temperature`.
    pub fn forward_t(&self, feats: &Tensor, temperature: f64, train: bool) -> Quantized {
        let (b, t, _) = feats.size3().unwrap_or((0, 0, 0));
        let (g, v) = (self.groups, self.entries);
        let logits = self.weight_proj.forward(feats).view([b * t * g, v]);
        let (choice, probs) = if train {
            let u = logits.rand_like().clamp(1e-10, 1.0 - 1e-7);
            let gumbel = -(-u.log()).log();
            let soft = ((&logits + gumbel) / temperature).softmax(-1, Kind::Float);
            let hard = soft.argmax(-1, true);
            let one_hot = Tensor::zeros_like(&soft).scatter_value(-1, &hard, 1.0);
            let choice = one_hot - soft.detach() + &soft;
            let probs = logits.view([b * t, g, v]).softmax(-1, Kind::Float);
            (choice.to_kind(logits.kind()), probs)
        } else {
            let hard = logits.argmax(-1, true);
            let one_hot = Tensor::zeros_like(&logits).scatter_value(-1, &hard, 1.0);
            let probs = one_hot.view([b * t, g, v]).to_kind(Kind::Float);
            (one_hot, probs)
        };
        let d = self.codevectors.size()[2];
        let vectors = (choice.view([b * t, g * v, 1]) * &self.codevectors)
            .view([b * t, g, v, d])
            .sum_dim_intlist(-2, false, choice.kind())
            .view([b, t, g * d]);
        Quantized { vectors, probs }
    }
}
