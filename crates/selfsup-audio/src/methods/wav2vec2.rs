//! wav2vec 2.0 (Baevski et al. 2020, arXiv:2006.11477) on the core design:
//! the view is the waveform with spans of latent frames masked
//! (`masking.rs`), the target each masked frame's quantized latent
//! (`TargetKind::MaskedContent`), the loss the contrastive task against K
//! distractors of the same utterance, plus `diversity_loss_weight` times the
//! codebook diversity loss and `feature_penalty_weight` times the mean
//! squared conv feature (fairseq's L2 penalty). The Gumbel temperature is a
//! pure function of the step: `max(max * decay^step, min)`. Masks and
//! distractors are drawn from `(seed, step)`.
use crate::loss::{codebook_perplexity, diversity_loss, ContrastiveLoss};
use crate::masking::{sample_negatives, span_mask, SpanMasking};
use crate::model::{Wav2Vec2, Wav2Vec2Config};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// The `[method] name = "wav2vec2"` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wav2Vec2MethodConfig {
    pub max_gumbel_temperature: f64,
    pub min_gumbel_temperature: f64,
    /// Per-step decay of the Gumbel temperature (the paper: 0.999995).
    pub gumbel_temperature_decay: f64,
    /// Weight of the L2 penalty on the conv features (fairseq: 10).
    pub feature_penalty_weight: f64,
}

impl Default for Wav2Vec2MethodConfig {
    fn default() -> Self {
        Self {
            max_gumbel_temperature: 2.0,
            min_gumbel_temperature: 0.5,
            gumbel_temperature_decay: 0.999_995,
            feature_penalty_weight: 10.0,
        }
    }
}

impl Wav2Vec2MethodConfig {
    /// Refuses impossible temperatures and weights, naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use selfsup_core::trainer::{non_negative, positive};
        positive(
            "[method] min_gumbel_temperature",
            self.min_gumbel_temperature,
        )?;
        positive(
            "[method] max_gumbel_temperature",
            self.max_gumbel_temperature,
        )?;
        if self.max_gumbel_temperature < self.min_gumbel_temperature {
            return Err(format!(
                "[method] max_gumbel_temperature = {} is below min_gumbel_temperature = {}: the temperature anneals from max down to min",
                self.max_gumbel_temperature, self.min_gumbel_temperature
            ));
        }
        let d = self.gumbel_temperature_decay;
        if !(d.is_finite() && d > 0.0 && d <= 1.0) {
            return Err(format!(
                "[method] gumbel_temperature_decay = {d}: must be in (0, 1] (per-step factor; the paper: 0.999995)"
            ));
        }
        non_negative(
            "[method] feature_penalty_weight",
            self.feature_penalty_weight,
        )
    }

    /// The Gumbel temperature at `step`.
    pub fn temperature(&self, step: u64) -> f64 {
        (self.max_gumbel_temperature * self.gumbel_temperature_decay.powf(step as f64))
            .max(self.min_gumbel_temperature)
    }
}

/// Names of the per-codebook perplexity terms in the logs (the first eight codebooks).
const PPL_TERMS: [&str; 8] = [
    "codebook_perplexity_g0",
    "codebook_perplexity_g1",
    "codebook_perplexity_g2",
    "codebook_perplexity_g3",
    "codebook_perplexity_g4",
    "codebook_perplexity_g5",
    "codebook_perplexity_g6",
    "codebook_perplexity_g7",
];

/// wav2vec 2.0 pre-training.
pub struct Wav2Vec2Method {
    vs: nn::VarStore,
    pub model: Wav2Vec2,
    pub cfg: Wav2Vec2MethodConfig,
    seed: u64,
}

impl Wav2Vec2Method {
    /// A freshly initialised model on `device` (weights from libtorch's generator).
    pub fn new(
        model: &Wav2Vec2Config,
        cfg: &Wav2Vec2MethodConfig,
        seed: u64,
        device: Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let model = Wav2Vec2::new(&vs.root(), model);
        Self {
            vs,
            model,
            cfg: cfg.clone(),
            seed,
        }
    }

    /// The var store, mutable (loading weights).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn masking(&self) -> SpanMasking {
        SpanMasking {
            mask_prob: self.model.cfg.mask_time_prob,
            span: self.model.cfg.mask_time_length as usize,
            min_masks: self.model.cfg.mask_time_min_masks as usize,
        }
    }

    /// Mean-pooled hidden states of every layer for `[B, L]` waveforms.
    pub fn pooled_layers(&self, wave: &Tensor, lengths: &Tensor) -> Vec<Tensor> {
        tch::no_grad(|| self.model.pooled_layers(wave, lengths))
    }
}

impl Method for Wav2Vec2Method {
    fn name(&self) -> &'static str {
        "wav2vec2"
    }

    fn target(&self) -> TargetKind {
        TargetKind::MaskedContent
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        if batch.views.len() != 2 {
            return Err(Error::Config(format!(
                "wav2vec2 expects (waveforms, lengths) batches, got {} tensors",
                batch.views.len()
            )));
        }
        let (wave, lengths) = (&batch.views[0], &batch.views[1]);
        let cfg = &self.model.cfg;
        let (b, l) = (wave.size()[0], wave.size()[1]);
        let t = cfg.frames(l);
        if t < 2 {
            return Err(Error::Config(format!(
                "wav2vec2: batches of {l} samples give {t} latent frame(s); crops need at least {} samples",
                cfg.receptive_field() + 320
            )));
        }
        let lens = Vec::<i64>::try_from(lengths.to_device(Device::Cpu))?;
        let frame_lens: Vec<usize> = lens.iter().map(|&n| cfg.frames(n) as usize).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ ctx.step.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x3A5,
        );
        let mask = span_mask(&frame_lens, t as usize, self.masking(), &mut rng);
        let (anchors, negs) =
            sample_negatives(&mask, t as usize, cfg.num_negatives as usize, &mut rng);
        let device = wave.device();
        let mask_t = Tensor::from_slice(&mask).view([b, t]).to_device(device);
        let out = self.model.forward_t(wave, lengths, Some(&mask_t), true);
        let temperature = self.cfg.temperature(ctx.step);
        let feats = out
            .extract_features
            .dropout(cfg.feat_quantizer_dropout, true);
        let q = self.model.quantizer.forward_t(&feats, temperature, true);
        let (groups, entries) = self.model.quantizer.shape();
        let used = mask_t.logical_and(&out.valid).view([-1]);
        let ppl = codebook_perplexity(&q.probs, Some(&used));
        let diversity = diversity_loss(&ppl, groups, entries);
        let penalty = out
            .conv_features
            .to_kind(Kind::Float)
            .square()
            .mean(Kind::Float);
        let m = anchors.len() as i64;
        let (contrastive, acc) = if m == 0 {
            (q.vectors.sum(Kind::Float) * 0.0, 0.0)
        } else {
            let last = out
                .hidden_states
                .last()
                .expect("at least the embedding output");
            let k = cfg.num_negatives;
            let pred = self.model.project_hidden(last).view([b * t, -1]);
            let qp = self.model.project_quantized(&q.vectors).view([b * t, -1]);
            let a = Tensor::from_slice(&anchors).to_device(device);
            let n = Tensor::from_slice(&negs).to_device(device);
            let loss = ContrastiveLoss {
                temperature: cfg.contrastive_logits_temperature,
            };
            let logits = loss.logits(
                &pred.index_select(0, &a),
                &qp.index_select(0, &a),
                &qp.index_select(0, &n).view([m, k, -1]),
            );
            (loss.loss(&logits), loss.accuracy(&logits))
        };
        let total = &contrastive
            + &diversity * cfg.diversity_loss_weight
            + &penalty * self.cfg.feature_penalty_weight;
        let ppl_values = Vec::<f64>::try_from(ppl.to_kind(Kind::Double).to_device(Device::Cpu))?;
        let masked = m as f64 / (frame_lens.iter().sum::<usize>().max(1)) as f64;
        let mut terms = vec![
            ("contrastive", contrastive.double_value(&[])),
            ("diversity", diversity.double_value(&[])),
            ("feature_penalty", penalty.double_value(&[])),
            ("codebook_perplexity", ppl_values.iter().sum()),
            ("gumbel_temperature", temperature),
            ("contrastive_acc", acc),
            ("masked_fraction", masked),
        ];
        for (name, v) in PPL_TERMS.iter().zip(&ppl_values) {
            terms.push((name, *v));
        }
        Ok(LossOut { loss: total, terms })
    }

    fn embed(&self, xs: &Tensor) -> Tensor {
        let lengths = Tensor::full([xs.size()[0]], xs.size()[1], (Kind::Int64, xs.device()));
        self.pooled_layers(xs, &lengths)
            .pop()
            .expect("the last layer")
    }

    fn project(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let lengths = Tensor::full([xs.size()[0]], xs.size()[1], (Kind::Int64, xs.device()));
            let out = self.model.forward_t(xs, &lengths, None, false);
            let last = out.hidden_states.last().expect("the last layer");
            self.model
                .project_hidden(last)
                .mean_dim(1, false, Kind::Float)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::CropBatches;
    use crate::eval::AudioEpochEval;
    use selfsup_core::optim::{OptimConfig, OptimKind};
    use selfsup_core::trainer::{Silent, Trainer, TrainerConfig};

    #[test]
    fn impossible_gumbel_temperatures_name_the_key() {
        let ok = Wav2Vec2MethodConfig::default();
        assert!(ok.validate().is_ok());
        let cases = [
            (
                Wav2Vec2MethodConfig {
                    min_gumbel_temperature: 0.0,
                    ..ok.clone()
                },
                "min_gumbel_temperature = 0",
            ),
            (
                Wav2Vec2MethodConfig {
                    max_gumbel_temperature: -1.0,
                    ..ok.clone()
                },
                "max_gumbel_temperature = -1",
            ),
            (
                Wav2Vec2MethodConfig {
                    max_gumbel_temperature: 0.1,
                    ..ok.clone()
                },
                "below min_gumbel_temperature",
            ),
            (
                Wav2Vec2MethodConfig {
                    gumbel_temperature_decay: 0.0,
                    ..ok.clone()
                },
                "gumbel_temperature_decay = 0",
            ),
            (
                Wav2Vec2MethodConfig {
                    gumbel_temperature_decay: 1.5,
                    ..ok.clone()
                },
                "gumbel_temperature_decay = 1.5",
            ),
            (
                Wav2Vec2MethodConfig {
                    feature_penalty_weight: f64::NAN,
                    ..ok.clone()
                },
                "feature_penalty_weight = NaN",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
    use std::sync::Arc;

    fn small() -> Wav2Vec2Config {
        Wav2Vec2Config {
            conv_dim: vec![32; 7],
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 64,
            num_conv_pos_embeddings: 8,
            num_conv_pos_embedding_groups: 2,
            num_codevectors_per_group: 16,
            codevector_dim: 32,
            proj_codevector_dim: 32,
            num_negatives: 10,
            ..Wav2Vec2Config::default()
        }
    }

    /// Clips of chirps and tone pairs at varied pitch: structure to learn.
    fn clips(n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| {
                let f0 = 150.0 + 40.0 * (i % 9) as f32;
                (0..8000 + 400 * (i % 5))
                    .map(|t| {
                        let s = t as f32 / 16_000.0;
                        let f = f0 * (1.0 + s * (i % 3) as f32);
                        (2.0 * std::f32::consts::PI * f * s).sin()
                            + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * f * s).sin()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn training_lowers_the_loss_without_collapse() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(0);
        let mut method =
            Wav2Vec2Method::new(&small(), &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
        let data = CropBatches::new(Arc::new(clips(32)), 8000, 8, 0);
        let cfg = TrainerConfig {
            // 12 epochs: the loss falls ~0.35 here (0.25 after 6); with lr 0
            // it moves 0.01 (0.09 after 6, the Gumbel temperature annealing
            // alone), so the 0.2 below separates learning from not.
            epochs: 12,
            optimizer: OptimConfig {
                kind: OptimKind::AdamW,
                lr: 0.1,
                weight_decay: 0.0,
                ..OptimConfig::default()
            },
            mixed_precision: false,
            ..TrainerConfig::default()
        };
        let mut eval = AudioEpochEval {
            clips: clips(16),
            crop: 8000,
            batch: 8,
            device: Device::Cpu,
            perplexity_history: Vec::new(),
        };
        let summary = Trainer::new(cfg, dir.path(), Device::Cpu)
            .fit(&mut method, &data, &mut eval, &mut Silent, false)
            .unwrap();
        let first = summary.epochs[0].mean_loss;
        let last = summary.epochs.last().unwrap().mean_loss;
        assert!(last < first - 0.2, "loss {first} -> {last}");
        let c = summary.epochs.last().unwrap().collapse.clone().unwrap();
        assert!(c.std_ratio > 0.1 && c.rankme > 1.5, "{c:?}");
        assert_eq!(eval.perplexity_history.len(), 12);
        let ppl = eval.perplexity_history.last().unwrap();
        assert!(ppl.iter().all(|p| (1.0..=16.0).contains(p)), "{ppl:?}");
        // The logged terms include the monitoring figures.
        let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        for key in [
            "contrastive",
            "diversity",
            "codebook_perplexity_g1",
            "grad_norm",
            "gumbel_temperature",
        ] {
            assert!(log.contains(key), "{key} missing from metrics.jsonl");
        }
    }

    #[test]
    fn export_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(1);
        let a = Wav2Vec2Method::new(&small(), &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
        crate::export::export_wav2vec2(&a, dir.path()).unwrap();
        tch::manual_seed(2);
        let mut b = Wav2Vec2Method::new(&small(), &Wav2Vec2MethodConfig::default(), 0, Device::Cpu);
        let wave = Tensor::from_slice(&clips(1)[0]).view([1, -1]);
        assert!(!a.embed(&wave).allclose(&b.embed(&wave), 1e-5, 1e-6, false));
        crate::export::load_export(&mut b, dir.path()).unwrap();
        assert!(a.embed(&wave).allclose(&b.embed(&wave), 1e-5, 1e-6, false));
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model_type"], "wav2vec2");
        assert_eq!(cfg["hidden_size"], 32);
        let names = selfsup_core::tensor_io::load(&dir.path().join("model.safetensors")).unwrap();
        for key in [
            "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
            "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight",
            "quantizer.codevectors",
            "project_q.weight",
        ] {
            assert!(names.tensors.contains_key(key), "{key}");
        }
    }

    #[test]
    fn the_gumbel_temperature_anneals_to_its_floor() {
        let c = Wav2Vec2MethodConfig::default();
        assert_eq!(c.temperature(0), 2.0);
        assert!((c.temperature(100_000) - 2.0 * 0.999_995f64.powi(100_000)).abs() < 1e-12);
        assert_eq!(c.temperature(10_000_000), 0.5);
    }
}
