//! The convolutional feature encoder (raw waveform -> one latent frame per
//! 20 ms) and the feature projection into the transformer's width, under
//! transformers' names: `feature_extractor.conv_layers.{i}.conv.weight`
//! (and `.conv.bias` with `conv_bias`), `conv_layers.0.layer_norm` (`feat_extract_norm = "group"`: a
//! GroupNorm with one group per channel) or `conv_layers.{i}.layer_norm`
//! (`"layer"`: a LayerNorm over each frame's channels after every conv),
//! `feature_projection.{layer_norm, projection}`.
use super::{FeatExtractNorm, Wav2Vec2Config};
use tch::nn::{self, Module};
use tch::Tensor;

/// The normalisation layers of a [`FeatureEncoder`].
#[derive(Debug)]
enum ConvNorm {
    /// After the first conv, over time, per channel.
    Group(nn::GroupNorm),
    /// After every conv, over channels, per frame.
    Layer(Vec<nn::LayerNorm>),
}

/// Seven (by default) 1-D convolutions with GELU.
#[derive(Debug)]
pub struct FeatureEncoder {
    convs: Vec<nn::Conv1D>,
    norm: ConvNorm,
}

impl FeatureEncoder {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let layers = p / "conv_layers";
        let mut convs = Vec::new();
        let mut in_dim = 1;
        for (i, ((&d, &k), &s)) in cfg
            .conv_dim
            .iter()
            .zip(&cfg.conv_kernel)
            .zip(&cfg.conv_stride)
            .enumerate()
        {
            // transformers' init of a conv bias: U(-b, b), b = 1 / sqrt(fan_in)
            let bound = 1.0 / ((in_dim * k) as f64).sqrt();
            let conv_cfg = nn::ConvConfig {
                stride: s,
                bias: cfg.conv_bias,
                ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
                bs_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                ..Default::default()
            };
            convs.push(nn::conv1d(&layers / i / "conv", in_dim, d, k, conv_cfg));
            in_dim = d;
        }
        let norm = match cfg.feat_extract_norm {
            FeatExtractNorm::Group => {
                let d0 = cfg.conv_dim.first().copied().unwrap_or(1);
                ConvNorm::Group(nn::group_norm(
                    &layers / 0 / "layer_norm",
                    d0,
                    d0,
                    Default::default(),
                ))
            }
            FeatExtractNorm::Layer => ConvNorm::Layer(
                cfg.conv_dim
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        nn::layer_norm(&layers / i / "layer_norm", vec![d], Default::default())
                    })
                    .collect(),
            ),
        };
        Self { convs, norm }
    }

    /// Whether a frame depends on samples outside its receptive field (the
    /// group norm's statistics run over the whole clip, padding included).
    pub fn mixes_time(&self) -> bool {
        matches!(self.norm, ConvNorm::Group(_))
    }

    /// `[B, L]` waveforms -> `[B, C, T]` features.
    pub fn forward(&self, wave: &Tensor) -> Tensor {
        let mut x = wave.unsqueeze(1);
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x);
            match &self.norm {
                ConvNorm::Group(g) if i == 0 => x = g.forward(&x),
                ConvNorm::Layer(norms) => {
                    if let Some(ln) = norms.get(i) {
                        x = ln.forward(&x.transpose(1, 2)).transpose(1, 2);
                    }
                }
                ConvNorm::Group(_) => {}
            }
            x = x.gelu("none");
        }
        x
    }
}

/// Layer norm, linear projection to `hidden_size`, dropout.
#[derive(Debug)]
pub struct FeatureProjection {
    layer_norm: nn::LayerNorm,
    projection: nn::Linear,
    dropout: f64,
}

impl FeatureProjection {
    pub fn new(p: &nn::Path, cfg: &Wav2Vec2Config) -> Self {
        let c = *cfg.conv_dim.last().unwrap_or(&1);
        let ln = nn::LayerNormConfig {
            eps: cfg.layer_norm_eps,
            ..Default::default()
        };
        let bound = 1.0 / (c as f64).sqrt();
        let lin = nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias: true,
        };
        Self {
            layer_norm: nn::layer_norm(p / "layer_norm", vec![c], ln),
            projection: nn::linear(p / "projection", c, cfg.hidden_size, lin),
            dropout: cfg.feat_proj_dropout,
        }
    }

    /// `[B, T, C]` features -> (`[B, T, H]` hidden states, the normalised
    /// features the quantizer reads).
    pub fn forward_t(&self, feats: &Tensor, train: bool) -> (Tensor, Tensor) {
        let normed = self.layer_norm.forward(feats);
        let hidden = self
            .projection
            .forward(&normed)
            .dropout(self.dropout, train);
        (hidden, normed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The first frames of two clips that share their first half but not
    /// their second: their largest difference.
    fn first_half_difference(norm: FeatExtractNorm) -> f64 {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Wav2Vec2Config {
            feat_extract_norm: norm,
            ..Wav2Vec2Config::default()
        };
        let enc = FeatureEncoder::new(&vs.root(), &cfg);
        let t = Tensor::arange(8000, (Kind::Float, Device::Cpu));
        let head = (&t * 0.05).sin();
        let quiet = (&t * 0.31).sin() * 0.1;
        let loud = (&t * 0.11).sin() * 5.0;
        let a = Tensor::cat(&[&head, &quiet], 0).view([1, -1]);
        let b = Tensor::cat(&[&head, &loud], 0).view([1, -1]);
        // frames whose 400-sample receptive field (stride 320) ends in the head
        let n = cfg.frames(8000);
        let (fa, fb) = tch::no_grad(|| (enc.forward(&a), enc.forward(&b)));
        (fa.narrow(2, 0, n) - fb.narrow(2, 0, n))
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn a_layer_norm_frame_depends_on_its_receptive_field_only() {
        assert!(first_half_difference(FeatExtractNorm::Layer) < 1e-5);
        // the group norm's statistics run over the whole clip
        assert!(first_half_difference(FeatExtractNorm::Group) > 1e-2);
    }

    #[test]
    fn the_layer_norm_encoder_names_a_norm_after_every_conv() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Wav2Vec2Config {
            feat_extract_norm: FeatExtractNorm::Layer,
            ..Wav2Vec2Config::default()
        };
        let _enc = FeatureEncoder::new(&(vs.root() / "feature_extractor"), &cfg);
        let names = vs.variables();
        for i in 0..7 {
            for w in ["weight", "bias"] {
                let key = format!("feature_extractor.conv_layers.{i}.layer_norm.{w}");
                assert!(names.contains_key(&key), "{key}");
            }
        }
        assert!(mixes_time_is(&cfg, false));
        assert!(mixes_time_is(&Wav2Vec2Config::default(), true));
    }

    fn mixes_time_is(cfg: &Wav2Vec2Config, want: bool) -> bool {
        let vs = nn::VarStore::new(Device::Cpu);
        FeatureEncoder::new(&vs.root(), cfg).mixes_time() == want
    }
}
