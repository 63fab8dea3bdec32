//! A small spatio-temporal ViT on tubelets (Arnab et al. 2021's tubelet
//! embedding, as in VideoMAE and V-JEPA): a clip `[B, C, T, H, W]` is cut
//! into `tubelet x patch x patch` blocks, each embedded by one Conv3d
//! (`patch_embed.proj`), plus fixed 3-D sin-cos position embeddings
//! (`pos_embed`, no gradient), then pre-norm transformer blocks
//! (`blocks.{i}.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2`,
//! timm's names) and a final `norm`. Tokens are ordered time-major: token
//! `(t, r, c)` is `t * rows * cols + r * cols + c`.
//!
//! [`TubeletVit::tokens`] runs on a subset of the tokens (a masked
//! method's context); [`TubeletVit::pooled`] is the mean final token, the
//! representation probes read.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// How the probes pool a clip's final tokens (`[eval] pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The mean over every token: `D` features (where and when are mixed).
    #[default]
    Mean,
    /// The mean over each time step's cells, the time steps concatenated:
    /// `T' * D` features that keep the order of time.
    Time,
    /// The mean and the standard deviation over every token: `2 * D`.
    MeanStd,
}

impl Pooling {
    /// Features per clip for an encoder of `cfg`.
    pub fn dims(self, cfg: &VitConfig) -> i64 {
        match self {
            Self::Mean => cfg.embed_dim,
            Self::Time => cfg.grid().0 * cfg.embed_dim,
            Self::MeanStd => 2 * cfg.embed_dim,
        }
    }
}

/// The `[model]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VitConfig {
    /// Frame side (square frames).
    pub image_size: i64,
    /// Frames per clip the model sees.
    pub frames: i64,
    /// Grey (1) frames.
    pub in_channels: i64,
    /// Spatial side of a tubelet.
    pub patch_size: i64,
    /// Frames per tubelet.
    pub tubelet: i64,
    pub embed_dim: i64,
    pub depth: i64,
    pub heads: i64,
    /// Hidden width of the MLP over `embed_dim`.
    pub mlp_ratio: f64,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            frames: 16,
            in_channels: 1,
            patch_size: 16,
            tubelet: 2,
            embed_dim: 96,
            depth: 4,
            heads: 4,
            mlp_ratio: 2.0,
        }
    }
}

impl VitConfig {
    /// The ranges, as a message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, v, max) in [
            ("image_size", self.image_size, 1024),
            ("frames", self.frames, 1024),
            ("patch_size", self.patch_size, 1024),
            ("tubelet", self.tubelet, 1024),
            ("embed_dim", self.embed_dim, 8192),
            ("depth", self.depth, 256),
            ("heads", self.heads, 256),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("[model] {key} = {v}: give 1 to {max}"));
            }
        }
        if self.in_channels != 1 {
            return Err(format!(
                "[model] in_channels = {}: clips are read grey, give 1",
                self.in_channels
            ));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(format!(
                "[model] image_size = {} is not a multiple of patch_size = {}: change either",
                self.image_size, self.patch_size
            ));
        }
        if self.frames % self.tubelet != 0 {
            return Err(format!(
                "[model] frames = {} is not a multiple of tubelet = {}: change either",
                self.frames, self.tubelet
            ));
        }
        if self.embed_dim % self.heads != 0 {
            return Err(format!(
                "[model] embed_dim = {} is not a multiple of heads = {}",
                self.embed_dim, self.heads
            ));
        }
        if self.embed_dim % 16 != 0 {
            return Err(format!(
                "[model] embed_dim = {}: the 3-D sin-cos position embedding needs a multiple of 16",
                self.embed_dim
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 16.0) {
            return Err(format!(
                "[model] mlp_ratio = {}: give a ratio in (0, 16]",
                self.mlp_ratio
            ));
        }
        if self.tokens() > 16_384 {
            return Err(format!(
                "[model]: {} tokens per clip; give larger patch_size / tubelet (at most 16384)",
                self.tokens()
            ));
        }
        Ok(())
    }

    /// The token grid `(time, rows, cols)`.
    pub fn grid(&self) -> (i64, i64, i64) {
        let g = self.image_size / self.patch_size.max(1);
        (self.frames / self.tubelet.max(1), g, g)
    }

    /// Tokens per clip.
    pub fn tokens(&self) -> i64 {
        let (t, h, w) = self.grid();
        t * h * w
    }
}

/// Standard deviation of the truncated-normal-like init of linear weights.
pub const INIT_STD: f64 = 0.02;

/// A linear layer with timm's init (weights N(0, 0.02), bias 0).
pub fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

/// Layer norm with eps 1e-6 (timm's ViT).
pub fn layer_norm(p: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        },
    )
}

/// 1-D sin-cos embedding `[len, dim]` (`dim` even): the first half sines,
/// the second half cosines, frequencies `1 / 10000^(2i / dim)`.
fn sincos_1d(dim: i64, len: i64) -> Vec<Vec<f32>> {
    let half = dim / 2;
    (0..len)
        .map(|pos| {
            let mut row = Vec::with_capacity(dim as usize);
            let omega = |i: i64| 1.0 / 10000f64.powf(i as f64 / half as f64);
            row.extend((0..half).map(|i| (pos as f64 * omega(i)).sin() as f32));
            row.extend((0..half).map(|i| (pos as f64 * omega(i)).cos() as f32));
            row
        })
        .collect()
}

/// Fixed 3-D sin-cos position embedding `[t * h * w, dim]`, time-major:
/// a quarter of the width for time, the rest split between rows and
/// columns (`dim` a multiple of 16).
pub fn sincos_3d(dim: i64, (t, h, w): (i64, i64, i64)) -> Tensor {
    let dt = dim / 4;
    let ds = (dim - dt) / 2;
    let (et, eh, ew) = (sincos_1d(dt, t), sincos_1d(ds, h), sincos_1d(ds, w));
    let mut data = Vec::with_capacity((t * h * w * dim) as usize);
    for a in &et {
        for b in &eh {
            for c in &ew {
                data.extend_from_slice(a);
                data.extend_from_slice(b);
                data.extend_from_slice(c);
            }
        }
    }
    Tensor::from_slice(&data).view([t * h * w, dim])
}

/// One pre-norm transformer block.
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

impl Block {
    /// A block of width `dim` under `p`.
    pub fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: f64) -> Self {
        let hidden = ((dim as f64 * mlp_ratio).round() as i64).max(1);
        Self {
            norm1: layer_norm(p / "norm1", dim),
            qkv: linear(p / "attn" / "qkv", dim, 3 * dim),
            proj: linear(p / "attn" / "proj", dim, dim),
            norm2: layer_norm(p / "norm2", dim),
            fc1: linear(p / "mlp" / "fc1", dim, hidden),
            fc2: linear(p / "mlp" / "fc2", hidden, dim),
            heads,
        }
    }

    /// `[B, N, D] -> [B, N, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().unwrap_or((0, 0, 0));
        let hd = d / self.heads;
        let qkv = x
            .apply(&self.norm1)
            .apply(&self.qkv)
            .view([b, n, 3, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let att = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        let x = x + att.transpose(1, 2).reshape([b, n, d]).apply(&self.proj);
        let h = x
            .apply(&self.norm2)
            .apply(&self.fc1)
            .gelu("none")
            .apply(&self.fc2);
        x + h
    }
}

/// Blocks `0..depth` under `p`.
pub fn blocks(p: &nn::Path, dim: i64, depth: i64, heads: i64, mlp_ratio: f64) -> Vec<Block> {
    (0..depth)
        .map(|i| Block::new(&(p / i), dim, heads, mlp_ratio))
        .collect()
}

/// `x` `[B, N, D]` at `idx` `[B, K]` -> `[B, K, D]`.
pub fn gather_tokens(x: &Tensor, idx: &Tensor) -> Tensor {
    let d = x.size().last().copied().unwrap_or(0);
    let (b, k) = idx.size2().unwrap_or((0, 0));
    x.gather(1, &idx.unsqueeze(-1).expand([b, k, d], false), false)
}

/// The tubelet ViT (see the module documentation).
#[derive(Debug)]
pub struct TubeletVit {
    cfg: VitConfig,
    patch_embed: nn::Conv<[i64; 3]>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
}

impl TubeletVit {
    /// Builds the ViT under `p` (the caller has validated `cfg`).
    pub fn new(p: &nn::Path, cfg: &VitConfig) -> Self {
        let (t, s) = (cfg.tubelet, cfg.patch_size);
        let patch_embed = nn::conv(
            p / "patch_embed" / "proj",
            cfg.in_channels,
            cfg.embed_dim,
            [t, s, s],
            nn::ConvConfigND {
                stride: [t, s, s],
                padding: [0, 0, 0],
                dilation: [1, 1, 1],
                groups: 1,
                bias: true,
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
                bs_init: nn::Init::Const(0.0),
                padding_mode: nn::PaddingMode::Zeros,
            },
        );
        let pos_embed = p
            .var_copy(
                "pos_embed",
                &sincos_3d(cfg.embed_dim, cfg.grid()).unsqueeze(0),
            )
            .set_requires_grad(false);
        Self {
            cfg: cfg.clone(),
            patch_embed,
            pos_embed,
            blocks: blocks(
                &(p / "blocks"),
                cfg.embed_dim,
                cfg.depth,
                cfg.heads,
                cfg.mlp_ratio,
            ),
            norm: layer_norm(p / "norm", cfg.embed_dim),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Clips `[B, C, T, H, W]` -> embedded tokens with positions `[B, N, D]`.
    pub fn embed(&self, clips: &Tensor) -> Tensor {
        let x = self
            .patch_embed
            .forward(clips)
            .flatten(2, 4)
            .transpose(1, 2);
        x + &self.pos_embed
    }

    /// Final-normed tokens `[B, K, D]` of the tokens `keep` (`[B, K]`
    /// indices; `None`: every token).
    pub fn tokens(&self, clips: &Tensor, keep: Option<&Tensor>) -> Tensor {
        let mut x = self.embed(clips);
        if let Some(idx) = keep {
            x = gather_tokens(&x, idx);
        }
        for b in &self.blocks {
            x = b.forward(&x);
        }
        x.apply(&self.norm)
    }

    /// The mean final token `[B, D]`.
    pub fn pooled(&self, clips: &Tensor) -> Tensor {
        self.tokens(clips, None).mean_dim(1, false, Kind::Float)
    }

    /// The final tokens pooled as `pooling` says: `[B, D]` (mean),
    /// `[B, T' * D]` (time: the mean over each time step's cells,
    /// time-major) or `[B, 2 * D]` (mean and standard deviation).
    pub fn pooled_by(&self, clips: &Tensor, pooling: Pooling) -> Tensor {
        let x = self.tokens(clips, None);
        match pooling {
            Pooling::Mean => x.mean_dim(1, false, Kind::Float),
            Pooling::Time => {
                let (t, h, w) = self.cfg.grid();
                let (b, _, d) = x.size3().unwrap_or((0, 0, 0));
                x.view([b, t, h * w, d])
                    .mean_dim(2, false, Kind::Float)
                    .flatten(1, 2)
            }
            Pooling::MeanStd => Tensor::cat(
                &[
                    x.mean_dim(1, false, Kind::Float),
                    x.std_dim(1, false, false),
                ],
                1,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VitConfig {
        VitConfig {
            image_size: 8,
            frames: 4,
            patch_size: 4,
            tubelet: 2,
            embed_dim: 16,
            depth: 1,
            heads: 2,
            ..VitConfig::default()
        }
    }

    #[test]
    fn tokens_are_time_major_tubelets_and_a_subset_matches_its_rows() {
        let cfg = tiny();
        cfg.validate().unwrap();
        assert_eq!((cfg.grid(), cfg.tokens()), ((2, 2, 2), 8));
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let vit = TubeletVit::new(&vs.root(), &cfg);
        let names: Vec<String> = vs.variables().into_keys().collect();
        for n in [
            "patch_embed.proj.weight",
            "blocks.0.attn.qkv.weight",
            "norm.bias",
            "pos_embed",
        ] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        // Only tubelet (t=1, r=0, c=1) = token 5 differs between two clips.
        let a = Tensor::zeros([1, 1, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
        let b = a.copy();
        let _ = b.narrow(2, 2, 2).narrow(3, 0, 4).narrow(4, 4, 4).fill_(1.0);
        let (ea, eb) = (vit.embed(&a), vit.embed(&b));
        let diff: Vec<f64> = (0..8)
            .map(|k| {
                (ea.get(0).get(k) - eb.get(0).get(k))
                    .abs()
                    .sum(Kind::Float)
                    .double_value(&[])
            })
            .collect();
        assert!(
            diff.iter().enumerate().all(|(k, &d)| (d > 0.0) == (k == 5)),
            "{diff:?}"
        );
        // Position embeddings differ from token to token.
        let pe = sincos_3d(16, (2, 2, 2));
        assert_eq!(pe.size(), vec![8, 16]);
        assert!(pe.get(1).ne_tensor(&pe.get(2)).any().int64_value(&[]) == 1);
        // Kept tokens alone with an attention over all of them: a subset of
        // every index equals the whole.
        let all = Tensor::arange(8, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0);
        let whole = vit.tokens(&b, None);
        let same = vit.tokens(&b, Some(&all));
        assert!(whole.allclose(&same, 1e-5, 1e-6, false));
        assert_eq!(vit.pooled(&b).size(), vec![1, 16]);
    }

    #[test]
    fn time_pooling_keeps_each_time_step_and_mean_std_the_spread() {
        let cfg = tiny();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let vit = TubeletVit::new(&vs.root(), &cfg);
        let clips = Tensor::randn([3, 1, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
        let tokens = vit.tokens(&clips, None);
        let time = vit.pooled_by(&clips, Pooling::Time);
        assert_eq!(time.size(), vec![3, Pooling::Time.dims(&cfg)]);
        assert_eq!(Pooling::Time.dims(&cfg), 32);
        // Features d of time step t: the mean of tokens 4t..4t+3 (2x2 cells).
        for b in 0..3 {
            for t in 0..2 {
                for d in 0..16 {
                    let want: f64 = (0..4)
                        .map(|k| tokens.double_value(&[b, 4 * t + k, d]))
                        .sum::<f64>()
                        / 4.0;
                    let got = time.double_value(&[b, 16 * t + d]);
                    assert!((got - want).abs() < 1e-5, "{b} {t} {d}: {got} vs {want}");
                }
            }
        }
        // The mean of the time steps is the plain mean.
        let mean = vit.pooled_by(&clips, Pooling::Mean);
        assert!(mean.allclose(&vit.pooled(&clips), 1e-6, 1e-6, false));
        let halves = (time.narrow(1, 0, 16) + time.narrow(1, 16, 16)) / 2.0;
        assert!(halves.allclose(&mean, 1e-5, 1e-5, false));
        // mean-std: the mean, then the (population) standard deviation.
        let ms = vit.pooled_by(&clips, Pooling::MeanStd);
        assert_eq!(ms.size(), vec![3, 32]);
        assert!(ms.narrow(1, 0, 16).allclose(&mean, 1e-6, 1e-6, false));
        let h: Vec<f64> = (0..8).map(|k| tokens.double_value(&[1, k, 5])).collect();
        let m = h.iter().sum::<f64>() / 8.0;
        let sd = (h.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 8.0).sqrt();
        assert!((ms.double_value(&[1, 21]) - sd).abs() < 1e-5);
    }

    #[test]
    fn impossible_models_are_refused_naming_the_key() {
        let bad = VitConfig {
            patch_size: 5,
            ..tiny()
        };
        assert!(bad.validate().unwrap_err().contains("patch_size = 5"));
        let bad = VitConfig {
            frames: 5,
            ..tiny()
        };
        assert!(bad.validate().unwrap_err().contains("tubelet = 2"));
        let bad = VitConfig {
            embed_dim: 24,
            heads: 2,
            ..tiny()
        };
        assert!(bad.validate().unwrap_err().contains("multiple of 16"));
    }
}
