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
    ///
    /// Runs in float32 with autocast off: under bfloat16 the uniform draw's
    /// upper clamp `1 - 1e-7` rounds to 1 (Gumbel noise `+inf`, a NaN code)
    /// and the noise itself keeps only 8 significant bits.
    pub fn forward_t(&self, feats: &Tensor, temperature: f64, train: bool) -> Quantized {
        let noise = train.then(|| {
            let (b, t, _) = feats.size3().unwrap_or((0, 0, 0));
            gumbel_noise(&[b * t * self.groups, self.entries], feats.device())
        });
        self.quantize(feats, noise.as_ref(), temperature)
    }

    /// As [`Quantizer::forward_t`] with the Gumbel noise (`[B * T * G, V]`)
    /// given: `None` is inference (the argmax).
    fn quantize(&self, feats: &Tensor, noise: Option<&Tensor>, temperature: f64) -> Quantized {
        selfsup_core::autocast::full_precision(|| {
            self.quantize_f32(&feats.to_kind(Kind::Float), noise, temperature)
        })
    }

    fn quantize_f32(&self, feats: &Tensor, noise: Option<&Tensor>, temperature: f64) -> Quantized {
        let (b, t, _) = feats.size3().unwrap_or((0, 0, 0));
        let (g, v) = (self.groups, self.entries);
        let logits = self
            .weight_proj
            .forward(feats)
            .to_kind(Kind::Float)
            .view([b * t * g, v]);
        let (choice, probs) = if let Some(gumbel) = noise {
            let soft = ((&logits + gumbel) / temperature).softmax(-1, Kind::Float);
            let hard = soft.argmax(-1, true);
            let one_hot = Tensor::zeros_like(&soft).scatter_value(-1, &hard, 1.0);
            let choice = one_hot - soft.detach() + &soft;
            let probs = logits.view([b * t, g, v]).softmax(-1, Kind::Float);
            (choice, probs)
        } else {
            let hard = logits.argmax(-1, true);
            let one_hot = Tensor::zeros_like(&logits).scatter_value(-1, &hard, 1.0);
            let probs = one_hot.view([b * t, g, v]);
            (one_hot, probs)
        };
        let d = self.codevectors.size()[2];
        let vectors = (choice.view([b * t, g * v, 1]) * self.codevectors.to_kind(Kind::Float))
            .view([b * t, g, v, d])
            .sum_dim_intlist(-2, false, Kind::Float)
            .view([b, t, g * d]);
        Quantized { vectors, probs }
    }
}

/// Standard Gumbel noise `-log(-log(u))` of `shape`, `u` uniform in
/// `[1e-10, 1 - 1e-7]`, drawn and computed in float32 (finite everywhere).
pub fn gumbel_noise(shape: &[i64], device: tch::Device) -> Tensor {
    selfsup_core::autocast::full_precision(|| {
        let u = Tensor::rand(shape, (Kind::Float, device)).clamp(1e-10, 1.0 - 1e-7);
        -(-u.log()).log()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Wav2Vec2Config;
    use selfsup_core::autocast::{with_autocast, AutocastDevice, AutocastDtype};
    use tch::Device;

    fn bf16<T>(f: impl FnOnce() -> T) -> T {
        with_autocast(AutocastDevice::Cpu, AutocastDtype::BFloat16, f).unwrap()
    }

    /// The clamp's upper end survives in float32 (it is 1 in bfloat16, where
    /// the noise would be +inf): the noise is finite and in float32 even
    /// under bfloat16 autocast.
    #[test]
    fn gumbel_noise_is_float32_and_finite_under_autocast() {
        let upper = Tensor::from(1.0f32 - 1e-7);
        assert!(upper.double_value(&[]) < 1.0);
        assert_eq!(upper.to_kind(Kind::BFloat16).double_value(&[]), 1.0);
        let noise = bf16(|| gumbel_noise(&[4096, 8], Device::Cpu));
        assert_eq!(noise.kind(), Kind::Float);
        assert!(bool::try_from(noise.isfinite().all()).unwrap());
        // -log(-log(1 - 1e-7)) ~ 16.1 bounds it above.
        assert!(noise.max().double_value(&[]) < 16.2);
    }

    /// Training-mode codes under bfloat16 autocast are the float32 ones
    /// (same noise). Before the quantizer ran in float32 its
    /// logits came out of autocast in bfloat16: off by ~1e-2.
    #[test]
    fn autocast_does_not_change_the_quantizer() {
        let cfg = Wav2Vec2Config::default();
        let vs = nn::VarStore::new(Device::Cpu);
        let q = Quantizer::new(&(vs.root() / "quantizer"), &cfg);
        let c = *cfg.conv_dim.last().unwrap_or(&1);
        tch::manual_seed(1);
        let feats = Tensor::randn([2, 16, c], (Kind::Float, Device::Cpu));
        // The noise is given: the global generator is shared by parallel tests.
        let noise = gumbel_noise(&[2 * 16 * q.groups, q.entries], Device::Cpu);
        let run = || q.quantize(&feats, Some(&noise), 2.0);
        let exact = run();
        let under = bf16(run);
        assert_eq!(under.vectors.kind(), Kind::Float);
        let gap = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(gap(&exact.vectors, &under.vectors) < 1e-5);
        assert!(gap(&exact.probs, &under.probs) < 1e-6);
        let naive = bf16(|| q.weight_proj.forward(&feats));
        assert_eq!(naive.kind(), Kind::BFloat16);
        let want = q.weight_proj.forward(&feats);
        assert!(gap(&naive.to_kind(Kind::Float), &want) > 1e-3);
    }
}
