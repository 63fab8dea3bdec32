//! The log-mel audio tower: selfsup-audio's log-mel filterbank
//! ([`selfsup_audio::logmel::filterbank`]: 40 HTK mel bands, 0-8 kHz, on a
//! 512-point power spectrum) over 25 ms Hann windows every 10 ms,
//! `log(energy + 1e-6)`, normalised per clip over its valid frames and all
//! bands (one mean and one variance per clip: loudness drops out, the
//! spectral shape stays; a per-band normalisation would erase the vowel of
//! a one-syllable clip),
//! then a stack of 1-D convolutions over time (`[model.audio] channels`,
//! `kernels` (odd), `strides`; each conv -> LayerNorm over channels -> GELU
//! -> dropout), pooled by the mean and the standard deviation of the last
//! layer over the valid frames (`2 * channels[-1]` features).
//!
//! Frames past a clip's end are zeroed after every layer, so a clip padded
//! in a batch gives exactly what it gives alone (the convs' own zero padding
//! sees the same zeros). Variables under `audio_model.`:
//! `layers.N.conv.{weight,bias}`, `layers.N.layer_norm.{weight,bias}`
//! (`benchmarks/check_hf_speech_text_export.py` holds the PyTorch module).
//! Training may mask one random band range and one random frame range per
//! clip (SpecAugment, `freq_mask` / `time_mask`: the widest range; 0 = off).
use crate::model::AUDIO_PREFIX;
use crate::tower::Tower;
use selfsup_audio::batch::attention_mask;
use selfsup_audio::logmel::{filterbank, log_mel_frames};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Analysis window and hop, samples (selfsup-audio's log-mel frames).
pub use selfsup_audio::logmel::{HOP, WIN as WINDOW};
/// Variance floor of the per-clip normalisation and of the std pooling.
pub const EPS: f64 = 1e-5;
/// Most conv layers.
pub const MAX_LAYERS: usize = 16;

/// `[model.audio]` with `kind = "log_mel"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMelConfig {
    /// Output channels of each conv layer.
    pub channels: Vec<i64>,
    /// Kernel width (frames, odd) of each layer.
    pub kernels: Vec<i64>,
    /// Stride (frames) of each layer.
    pub strides: Vec<i64>,
    /// Dropout after each layer (training only).
    pub dropout: f64,
    /// Widest band range masked per training clip (0: none).
    pub freq_mask: i64,
    /// Widest frame range masked per training clip (0: none).
    pub time_mask: i64,
}

impl Default for LogMelConfig {
    fn default() -> Self {
        Self {
            channels: vec![128, 128, 128, 128],
            kernels: vec![5, 5, 5, 5],
            strides: vec![1, 2, 2, 1],
            dropout: 0.1,
            freq_mask: 0,
            time_mask: 0,
        }
    }
}

impl LogMelConfig {
    /// Refuses sizes the tower cannot be built from, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.channels.len();
        if n == 0 || n > MAX_LAYERS {
            return Err(format!(
                "[model.audio] channels: give 1 to {MAX_LAYERS} layers, got {n}"
            ));
        }
        if self.kernels.len() != n || self.strides.len() != n {
            return Err(format!(
                "[model.audio] channels, kernels and strides need one entry per layer, got {}, {} and {}",
                n,
                self.kernels.len(),
                self.strides.len()
            ));
        }
        for (key, list, lo, hi) in [
            ("channels", &self.channels, 1, 4096),
            ("kernels", &self.kernels, 1, 63),
            ("strides", &self.strides, 1, 8),
        ] {
            if let Some(v) = list.iter().find(|&&v| v < lo || v > hi) {
                return Err(format!(
                    "[model.audio] {key} = {v}: each must be in [{lo}, {hi}]"
                ));
            }
        }
        if let Some(k) = self.kernels.iter().find(|&&k| k % 2 == 0) {
            return Err(format!(
                "[model.audio] kernels = {k}: must be odd (the padding is k / 2 on each side)"
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(format!(
                "[model.audio] dropout = {}: must be in [0, 1)",
                self.dropout
            ));
        }
        let bands = filterbank().size().get(1).copied().unwrap_or(0);
        if !(0..=bands).contains(&self.freq_mask) || !(0..=1000).contains(&self.time_mask) {
            return Err(format!(
                "[model.audio] freq_mask = {} must be in [0, {bands}] and time_mask = {} in [0, 1000]",
                self.freq_mask, self.time_mask
            ));
        }
        Ok(())
    }

    /// Samples a clip needs for one frame.
    pub fn receptive_field(&self) -> i64 {
        WINDOW
    }

    /// Log-mel frames of `samples` samples.
    pub fn frames(samples: i64) -> i64 {
        if samples < WINDOW {
            0
        } else {
            1 + (samples - WINDOW) / HOP
        }
    }

    /// Width of the pooled features.
    pub fn out_dim(&self) -> i64 {
        2 * self.channels.last().copied().unwrap_or(0)
    }
}

/// Frames out of a layer of stride `s` (odd kernel, padding `k / 2`).
fn layer_frames(t: i64, s: i64) -> i64 {
    if t <= 0 {
        0
    } else {
        (t - 1) / s + 1
    }
}

struct Layer {
    conv: nn::Conv1D,
    norm: nn::LayerNorm,
    stride: i64,
}

/// Log-mel frames -> conv stack -> mean and std pooling.
pub struct LogMelTower {
    cfg: LogMelConfig,
    layers: Vec<Layer>,
    /// `[NFFT / 2 + 1, bands]`, on the tower's device (not a variable).
    fbank: Tensor,
    window: Tensor,
}

impl LogMelTower {
    /// Builds the tower `cfg` describes under `root / audio_model`.
    pub fn new(root: &nn::Path, cfg: &LogMelConfig) -> selfsup_core::Result<Self> {
        cfg.validate().map_err(selfsup_core::Error::Config)?;
        let p = root / AUDIO_PREFIX / "layers";
        let device = root.device();
        let fbank = filterbank().to_device(device);
        let bands = match fbank.size().as_slice() {
            [_, m] => *m,
            other => {
                return Err(selfsup_core::Error::Config(format!(
                    "selfsup-audio's filterbank has shape {other:?}, not [bins, bands]"
                )))
            }
        };
        let mut inp = bands;
        let mut layers = Vec::with_capacity(cfg.channels.len());
        for (i, ((&c, &k), &s)) in cfg
            .channels
            .iter()
            .zip(&cfg.kernels)
            .zip(&cfg.strides)
            .enumerate()
        {
            let lp = &p / i;
            let conv = nn::conv1d(
                &lp / "conv",
                inp,
                c,
                k,
                nn::ConvConfig {
                    stride: s,
                    padding: k / 2,
                    ..Default::default()
                },
            );
            let norm = nn::layer_norm(&lp / "layer_norm", vec![c], Default::default());
            layers.push(Layer {
                conv,
                norm,
                stride: s,
            });
            inp = c;
        }
        Ok(Self {
            cfg: cfg.clone(),
            layers,
            fbank,
            window: Tensor::hann_window(WINDOW, (Kind::Float, device)),
        })
    }

    /// Per-clip normalised log-mel energies `[B, T, bands]` (zero past each
    /// clip's end) and the valid frames of each clip.
    pub fn features(&self, wave: &Tensor, lengths: &[i64]) -> (Tensor, Vec<i64>) {
        let (b, l) = match wave.size().as_slice() {
            [b, l] => (*b, *l),
            _ => (0, 0),
        };
        let wave = if l < WINDOW {
            wave.constant_pad_nd([0, WINDOW - l])
        } else {
            wave.shallow_clone()
        };
        let logmel = log_mel_frames(&wave, &self.window, &self.fbank);
        let t = logmel.size().get(1).copied().unwrap_or(0);
        let valid: Vec<i64> = (0..b as usize)
            .map(|i| LogMelConfig::frames(lengths.get(i).copied().unwrap_or(l).min(l)).min(t))
            .collect();
        let bands = logmel.size().get(2).copied().unwrap_or(1) as f64;
        let m = self.mask(&valid, t, wave.device()).unsqueeze(-1);
        let count = (m.sum_dim_intlist(1, true, Kind::Float) * bands).clamp_min(1.0);
        let mean = (&logmel * &m).sum_dim_intlist([1i64, 2].as_slice(), true, Kind::Float) / &count;
        let centred = (&logmel - mean) * &m;
        let var = centred
            .square()
            .sum_dim_intlist([1i64, 2].as_slice(), true, Kind::Float)
            / &count;
        (centred / (var + EPS).sqrt(), valid)
    }

    fn mask(&self, valid: &[i64], t: i64, device: Device) -> Tensor {
        attention_mask(&Tensor::from_slice(valid).to_device(device), t).to_kind(Kind::Float)
    }

    /// One random band range and one random frame range per clip set to 0
    /// (the normalised mean), as `[model.audio]` freq_mask / time_mask say.
    fn spec_augment(&self, x: &Tensor, valid: &[i64]) -> Tensor {
        let (b, t, f) = match x.size().as_slice() {
            [b, t, f] => (*b, *t, *f),
            _ => return x.shallow_clone(),
        };
        let dev = x.device();
        let range = |width_max: i64, dim: &Tensor, n: i64| -> Tensor {
            let width = Tensor::randint(width_max + 1, [b], (Kind::Int64, dev));
            let room = (dim - &width + 1).clamp_min(1).to_kind(Kind::Float);
            let start = (Tensor::rand([b], (Kind::Float, dev)) * room)
                .floor()
                .to_kind(Kind::Int64);
            let pos = Tensor::arange(n, (Kind::Int64, dev)).unsqueeze(0);
            let lo = start.unsqueeze(1);
            let hi = (&start + &width).unsqueeze(1);
            pos.ge_tensor(&lo).logical_and(&pos.lt_tensor(&hi))
        };
        let mut keep = Tensor::ones([b, t, f], (Kind::Float, dev));
        if self.cfg.freq_mask > 0 {
            let bands = Tensor::full([b], f, (Kind::Int64, dev));
            let hit = range(self.cfg.freq_mask, &bands, f).unsqueeze(1);
            keep *= hit.logical_not().to_kind(Kind::Float);
        }
        if self.cfg.time_mask > 0 {
            let frames = Tensor::from_slice(valid).to_device(dev);
            let hit = range(self.cfg.time_mask, &frames, t).unsqueeze(2);
            keep *= hit.logical_not().to_kind(Kind::Float);
        }
        x * keep
    }

    /// Mean and std pooled features `[B, 2 C]` of `[B, L]` waveforms with
    /// `lengths` valid samples each.
    pub fn pooled(&self, wave: &Tensor, lengths: &[i64], train: bool) -> Tensor {
        let (x, mut valid) = self.features(wave, lengths);
        let x = if train && (self.cfg.freq_mask > 0 || self.cfg.time_mask > 0) {
            self.spec_augment(&x, &valid)
        } else {
            x
        };
        let mut h = x.transpose(1, 2);
        let mut last = x;
        let mut m = Tensor::zeros([0], (Kind::Float, wave.device()));
        for layer in &self.layers {
            let y = layer.conv.forward(&h);
            let t = y.size().get(2).copied().unwrap_or(0);
            valid = valid
                .iter()
                .map(|&v| layer_frames(v, layer.stride))
                .collect();
            m = self.mask(&valid, t, wave.device()).unsqueeze(-1);
            let y = layer.norm.forward(&y.transpose(1, 2)).gelu("none") * &m;
            let y = y.dropout(self.cfg.dropout, train);
            h = y.transpose(1, 2);
            last = y;
        }
        let count = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        let mean = last.sum_dim_intlist(1, false, Kind::Float) / &count;
        let centred = (&last - mean.unsqueeze(1)) * &m;
        let var = centred.square().sum_dim_intlist(1, false, Kind::Float) / &count;
        Tensor::cat(&[mean, (var + EPS).sqrt()], 1)
    }
}

impl Tower for LogMelTower {
    const INPUTS: usize = 2;
    const PROJECTION: &'static str = "audio_projection";

    fn out_dim(&self) -> i64 {
        self.cfg.out_dim()
    }

    /// Waveforms `[B, L]` and their lengths `[B]` (waveforms alone: every
    /// sample valid).
    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        let Some(wave) = inputs.first() else {
            return Tensor::zeros([0, self.cfg.out_dim()], (Kind::Float, Device::Cpu));
        };
        let l = wave.size().get(1).copied().unwrap_or(0);
        let lengths: Vec<i64> = match inputs.get(1) {
            Some(len) => Vec::<i64>::try_from(len.to_device(Device::Cpu).to_kind(Kind::Int64))
                .unwrap_or_default(),
            None => vec![l; wave.size().first().copied().unwrap_or(0).max(0) as usize],
        };
        self.pooled(wave, &lengths, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LogMelConfig {
        LogMelConfig {
            channels: vec![8, 12],
            kernels: vec![3, 5],
            strides: vec![1, 2],
            dropout: 0.0,
            freq_mask: 0,
            time_mask: 0,
        }
    }

    /// A padded clip pools exactly as it does alone; padding a clip further
    /// with its lengths kept changes nothing, reading the padding does.
    #[test]
    fn padding_never_reaches_the_pool() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let tower = LogMelTower::new(&vs.root(), &small()).unwrap();
        assert_eq!(tower.out_dim(), 24);
        let short = (Tensor::arange(3000, (Kind::Float, Device::Cpu)) * 0.05).sin();
        let long = Tensor::randn([5000], (Kind::Float, Device::Cpu));
        let alone = tower.forward(&[short.view([1, -1])], false);
        let batch = Tensor::stack(&[short.constant_pad_nd([0, 2000]), long.shallow_clone()], 0);
        let both = tower.forward(
            &[batch.shallow_clone(), Tensor::from_slice(&[3000i64, 5000])],
            false,
        );
        assert_eq!(both.size(), [2, 24]);
        let diff = (both.get(0) - alone.get(0)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        let long_alone = tower.forward(&[long.view([1, -1])], false);
        let diff = (both.get(1) - long_alone.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        let read_all = tower.forward(&[batch, Tensor::from_slice(&[5000i64, 5000])], false);
        let diff = (read_all.get(0) - alone.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff > 1e-3, "the padding must leave the pool: {diff}");
        // Loudness is normalised away (where no band is at the 1e-6 floor).
        let loud = tower.forward(&[long.view([1, -1]) * 8.0], false);
        let diff = (loud - &long_alone).abs().max().double_value(&[]);
        assert!(diff < 1e-3, "{diff}");
    }

    /// Frames: 25 ms windows every 10 ms; strided layers halve them.
    #[test]
    fn frame_counts_follow_window_hop_and_strides() {
        assert_eq!(LogMelConfig::frames(399), 0);
        assert_eq!(LogMelConfig::frames(400), 1);
        assert_eq!(LogMelConfig::frames(16_000), 98);
        assert_eq!(layer_frames(98, 2), 49);
        assert_eq!(layer_frames(97, 2), 49);
        assert_eq!(layer_frames(1, 2), 1);
        let vs = nn::VarStore::new(Device::Cpu);
        let tower = LogMelTower::new(&vs.root(), &small()).unwrap();
        let (x, valid) = tower.features(
            &Tensor::zeros([2, 16_000], (Kind::Float, Device::Cpu)),
            &[16_000, 560],
        );
        assert_eq!(x.size(), [2, 98, 40]);
        assert_eq!(valid, [98, 2]);
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(
            names.contains(&"audio_model.layers.1.layer_norm.weight".to_string()),
            "{names:?}"
        );
        assert_eq!(names.len(), 8);
    }

    /// SpecAugment zeroes whole band and frame ranges in training only.
    #[test]
    fn spec_augment_masks_ranges_in_training_only() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(9);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LogMelConfig {
            freq_mask: 10,
            time_mask: 20,
            ..small()
        };
        let tower = LogMelTower::new(&vs.root(), &cfg).unwrap();
        let x = Tensor::ones([4, 50, 40], (Kind::Float, Device::Cpu));
        let y = tower.spec_augment(&x, &[50, 50, 30, 50]);
        let zero_bands = y
            .eq(0.0)
            .all_dim(1, false)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert!(zero_bands > 0 && zero_bands <= 4 * 10, "{zero_bands}");
        let wave = Tensor::randn([2, 8000], (Kind::Float, Device::Cpu));
        let a = tower.forward(&[wave.shallow_clone()], false);
        let b = tower.forward(&[wave], false);
        assert!(a.equal(&b));
    }

    #[test]
    fn bad_sizes_are_refused_naming_the_key() {
        for (cfg, want) in [
            (
                LogMelConfig {
                    kernels: vec![4, 5],
                    ..small()
                },
                "must be odd",
            ),
            (
                LogMelConfig {
                    strides: vec![1],
                    ..small()
                },
                "one entry per layer",
            ),
            (
                LogMelConfig {
                    channels: vec![],
                    kernels: vec![],
                    strides: vec![],
                    ..small()
                },
                "channels",
            ),
            (
                LogMelConfig {
                    dropout: 1.0,
                    ..small()
                },
                "dropout",
            ),
            (
                LogMelConfig {
                    freq_mask: 41,
                    ..small()
                },
                "freq_mask",
            ),
        ] {
            let err = cfg.validate().unwrap_err();
            assert!(
                err.contains("[model.audio]") && err.contains(want),
                "{want}: {err}"
            );
        }
    }
}
