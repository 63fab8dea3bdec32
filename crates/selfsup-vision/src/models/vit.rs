//! Vision Transformer (Dosovitskiy et al. 2020, arXiv:2010.11929) whose
//! variables carry exactly the names of timm's `VisionTransformer`
//! (`cls_token`, `pos_embed`, `patch_embed.proj.weight`,
//! `blocks.{i}.attn.qkv.weight`, `blocks.{i}.mlp.fc1.bias`, `norm.weight`,
//! ...), so an exported encoder loads into
//! `timm.create_model('vit_tiny_patch16_224', img_size=.., patch_size=..,
//! in_chans=.., num_classes=0, ...)` with `strict=True` (see [`crate::export`]).
//!
//! The architecture is timm's default: a `patch x patch` stride-`patch`
//! convolution embeds the patches, a class token is prepended, a position
//! embedding `[1, 1 + N, D]` (class token included) is added, then `depth`
//! pre-norm blocks (`x + attn(norm1(x))`, `x + mlp(norm2(x))`, multi-head
//! self-attention with a biased `qkv` projection, MLP ratio 4 with exact
//! GELU), and a final LayerNorm. Every LayerNorm has eps 1e-6. No dropout,
//! no drop-path: `train` changes nothing.
//!
//! As an [`Encoder`], `forward_t` returns the final-normed class token
//! (timm's `global_pool='token'` with `num_classes=0`), `[batch, D]`.
//!
//! `pos_embed` is built for `image_size`; an input of another size gets the
//! patch part of `pos_embed` resampled bicubically to its grid (with
//! anti-aliasing, as timm's `resample_abs_pos_embed` does for
//! `dynamic_img_size=True`; DINO does the same for its small crops), so
//! multi-crop works. The class-token position is never resampled.
//!
//! Masked methods (MAE, I-JEPA) use the token-level API instead of
//! `forward_t`: [`Vit::patch_tokens`] (patches + position, no class token),
//! [`gather_tokens`] to keep a subset, [`Vit::prepend_cls`],
//! [`Vit::run_blocks`], [`Vit::final_norm`].
use selfsup_core::encoder::Encoder;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, ModuleT};
use tch::{Kind, Tensor};

/// LayerNorm epsilon of every norm (timm's `partial(nn.LayerNorm, eps=1e-6)`).
pub const VIT_LN_EPS: f64 = 1e-6;
/// Hidden width of the MLP relative to the embedding width (timm's default).
pub const MLP_RATIO: i64 = 4;
/// Standard deviation of timm's `trunc_normal_(std=.02)` init of linear
/// layers and of a learned `pos_embed` (truncated at +-2, i.e. 100 sigma: a
/// plain normal).
pub const INIT_STD: f64 = 0.02;

fn default_patch_size() -> i64 {
    16
}
fn default_image_size() -> i64 {
    224
}

/// Settings shared by `arch = "vit_tiny"` and `arch = "vit_small"`:
/// patch and image size, and optional overrides of the size preset.
///
/// ```toml
/// [model]
/// arch = "vit_tiny"
/// patch_size = 4      # 28x28 images -> 7x7 grid
/// image_size = 28     # the size pos_embed is built for
/// embed_dim = 128     # overrides of the preset (192 / 12 / 3 for tiny)
/// depth = 4
/// heads = 4
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitOptions {
    /// Side of the square patches (default 16).
    #[serde(default = "default_patch_size")]
    pub patch_size: i64,
    /// Side of the square images `pos_embed` is built for (default 224);
    /// other sizes resample it.
    #[serde(default = "default_image_size")]
    pub image_size: i64,
    /// Embedding width `D`, instead of the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<i64>,
    /// Number of blocks, instead of the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
    /// Attention heads, instead of the preset's (must divide `D`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<i64>,
}

impl Default for VitOptions {
    fn default() -> Self {
        Self {
            patch_size: default_patch_size(),
            image_size: default_image_size(),
            embed_dim: None,
            depth: None,
            heads: None,
        }
    }
}

/// The resolved shape of a ViT: every number the network is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitSpec {
    pub patch_size: i64,
    pub image_size: i64,
    pub embed_dim: i64,
    pub depth: i64,
    pub heads: i64,
}

impl VitSpec {
    /// The preset `(embed_dim, depth, heads)` of timm's `vit_tiny` (192, 12, 3)
    /// and `vit_small` (384, 12, 6) with `opts`' overrides applied.
    pub fn resolve(preset: (i64, i64, i64), opts: &VitOptions) -> Self {
        Self {
            patch_size: opts.patch_size,
            image_size: opts.image_size,
            embed_dim: opts.embed_dim.unwrap_or(preset.0),
            depth: opts.depth.unwrap_or(preset.1),
            heads: opts.heads.unwrap_or(preset.2),
        }
    }

    /// Side of the patch grid at `image_size`.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size
    }

    /// Patches per image at `image_size`.
    pub fn num_patches(&self) -> i64 {
        self.grid() * self.grid()
    }

    /// Positive sizes, `image_size` divisible by `patch_size`, `heads`
    /// dividing `embed_dim`; errors name the `model.*` key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("heads", self.heads),
        ] {
            if v < 1 {
                return Err(Error::Config(format!(
                    "model.{key} must be at least 1, got {v}"
                )));
            }
        }
        if self.image_size % self.patch_size != 0 {
            return Err(Error::Config(format!(
                "model.image_size ({}) must be divisible by model.patch_size ({})",
                self.image_size, self.patch_size
            )));
        }
        if self.embed_dim % self.heads != 0 {
            return Err(Error::Config(format!(
                "model.embed_dim ({}) must be divisible by model.heads ({})",
                self.embed_dim, self.heads
            )));
        }
        Ok(())
    }
}

/// How `pos_embed` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosEmbedInit {
    /// Learned, normal with std 0.02 (timm's default).
    Learned,
    /// Fixed 2D sine-cosine ([`sincos_2d`], zeros for the class token) that
    /// never trains (MAE, I-JEPA). It is still a variable, so it is
    /// checkpointed and exported like a learned one.
    FixedSinCos,
}

/// A linear layer with timm's init: weight normal(0, 0.02), bias 0.
pub fn vit_linear(p: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
    nn::linear(
        p,
        d_in,
        d_out,
        nn::LinearConfig {
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

/// `nn.LayerNorm(d, eps=1e-6)`: weight 1, bias 0.
pub fn vit_layer_norm(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps: VIT_LN_EPS,
            ..Default::default()
        },
    )
}

/// Multi-head self-attention (`qkv`, `proj`).
#[derive(Debug)]
pub struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, heads: i64) -> Self {
        Self {
            qkv: vit_linear(&p / "qkv", dim, 3 * dim),
            proj: vit_linear(&p / "proj", dim, dim),
            heads,
        }
    }

    /// `[B, N, D] -> [B, N, D]`, softmax(q k^T / sqrt(D / heads)) v per head.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (b, n, d) = xs.size3().expect("attention input must be [B, N, D]");
        let qkv = xs
            .apply(&self.qkv)
            .reshape([b, n, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false)
            .transpose(1, 2)
            .reshape([b, n, d])
            .apply(&self.proj)
    }
}

/// One pre-norm transformer block with timm's names (`norm1`, `attn.qkv`,
/// `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`). MAE's decoder and I-JEPA's
/// predictor are stacks of the same block.
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Block {
    /// A block of width `dim` with `heads` heads and an MLP of width `4 * dim`.
    pub fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        let mlp = p / "mlp";
        Self {
            norm1: vit_layer_norm(p / "norm1", dim),
            attn: Attention::new(p / "attn", dim, heads),
            norm2: vit_layer_norm(p / "norm2", dim),
            fc1: vit_linear(&mlp / "fc1", dim, MLP_RATIO * dim),
            fc2: vit_linear(&mlp / "fc2", MLP_RATIO * dim, dim),
        }
    }

    /// `x + attn(norm1(x))`, then `x + fc2(gelu(fc1(norm2(x))))`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let xs = xs + self.attn.forward(&xs.apply(&self.norm1));
        let h = xs
            .apply(&self.norm2)
            .apply(&self.fc1)
            .gelu("none")
            .apply(&self.fc2);
        xs + h
    }
}

/// A stack of [`Block`]s under `p / i`.
pub fn blocks(p: &nn::Path, dim: i64, depth: i64, heads: i64) -> Vec<Block> {
    (0..depth)
        .map(|i| Block::new(&(p / i), dim, heads))
        .collect()
}

/// Runs `xs` through every block in turn.
pub fn run_blocks(blocks: &[Block], xs: &Tensor) -> Tensor {
    blocks
        .iter()
        .fold(xs.shallow_clone(), |h, block| block.forward(&h))
}

/// 2D sine-cosine position embedding `[gh * gw, dim]` (row-major grid), as
/// MAE's and I-JEPA's `get_2d_sincos_pos_embed`: the first `dim / 2`
/// channels encode the column, the last `dim / 2` the row, each as
/// `[sin(pos * w_k), cos(pos * w_k)]` with `w_k = 10000^(-k / (dim / 4))`.
/// With `cls`, a row of zeros is put first (`[1 + gh * gw, dim]`).
///
/// # Panics
/// If `dim` is not a multiple of 4.
pub fn sincos_2d(dim: i64, gh: i64, gw: i64, cls: bool) -> Tensor {
    assert!(
        dim % 4 == 0,
        "2D sin-cos position embedding needs a width divisible by 4, got {dim}"
    );
    let quarter = (dim / 4) as usize;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut out = Vec::with_capacity(((gh * gw + cls as i64) * dim) as usize);
    if cls {
        out.extend(std::iter::repeat_n(0f32, dim as usize));
    }
    for row in 0..gh {
        for col in 0..gw {
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Tensor::from_slice(&out).reshape([-1, dim])
}

/// `xs[b, idx[b, k], :]`: the tokens `idx` (`[B, K]`, int64) of each sample
/// of `xs` (`[B, N, D]`), in the order of `idx`.
pub fn gather_tokens(xs: &Tensor, idx: &Tensor) -> Tensor {
    let d = xs.size()[2];
    let (b, k) = idx.size2().expect("token indices must be [B, K]");
    xs.gather(1, &idx.unsqueeze(-1).expand([b, k, d], false), false)
}

/// The Vision Transformer (see the module documentation).
#[derive(Debug)]
pub struct Vit {
    proj: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    spec: VitSpec,
}

impl Vit {
    /// Builds the ViT `spec` describes under `p` for `in_channels`-channel
    /// images, initialised as timm does (linear layers normal(0, 0.02) with
    /// zero bias, class token normal(0, 1e-6), the patch convolution with
    /// PyTorch's default) and `pos_embed` as `pos` says.
    ///
    /// # Panics
    /// If `spec` fails [`VitSpec::validate`], or `pos` is
    /// [`PosEmbedInit::FixedSinCos`] and `embed_dim` is not a multiple of 4.
    pub fn new(p: &nn::Path, spec: VitSpec, in_channels: i64, pos: PosEmbedInit) -> Self {
        if let Err(e) = spec.validate() {
            panic!("Vit::new: {e}");
        }
        let d = spec.embed_dim;
        let fan_in = (in_channels * spec.patch_size * spec.patch_size) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let proj = nn::conv2d(
            p / "patch_embed" / "proj",
            in_channels,
            d,
            spec.patch_size,
            nn::ConvConfig {
                stride: spec.patch_size,
                ws_init: uniform,
                bs_init: uniform,
                ..Default::default()
            },
        );
        let cls_token = p.var(
            "cls_token",
            &[1, 1, d],
            Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            },
        );
        let n = 1 + spec.num_patches();
        let pos_embed = match pos {
            PosEmbedInit::Learned => p.var(
                "pos_embed",
                &[1, n, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            ),
            PosEmbedInit::FixedSinCos => {
                let table = sincos_2d(d, spec.grid(), spec.grid(), true).unsqueeze(0);
                p.var_copy("pos_embed", &table).set_requires_grad(false)
            }
        };
        Self {
            proj,
            cls_token,
            pos_embed,
            blocks: blocks(&(p / "blocks"), d, spec.depth, spec.heads),
            norm: vit_layer_norm(p / "norm", d),
            spec,
        }
    }

    /// The resolved shape.
    pub fn spec(&self) -> VitSpec {
        self.spec
    }

    /// Embedding width `D`.
    pub fn embed_dim(&self) -> i64 {
        self.spec.embed_dim
    }

    /// The patch part of `pos_embed` for a `gh x gw` grid, `[1, gh * gw, D]`:
    /// as built when the grid is the native one, else resampled bicubically
    /// with anti-aliasing (timm's `resample_abs_pos_embed`).
    pub fn patch_pos_embed(&self, gh: i64, gw: i64) -> Tensor {
        let g = self.spec.grid();
        let d = self.spec.embed_dim;
        let pos = self.pos_embed.narrow(1, 1, g * g);
        if (gh, gw) == (g, g) {
            return pos;
        }
        pos.reshape([1, g, g, d])
            .permute([0, 3, 1, 2])
            .internal_upsample_bicubic2d_aa([gh, gw], false, None, None)
            .permute([0, 2, 3, 1])
            .reshape([1, gh * gw, d])
    }

    /// The patch grid `(rows, columns)` of `[B, C, H, W]` images.
    pub fn grid_of(&self, xs: &Tensor) -> (i64, i64) {
        let s = xs.size();
        let p = self.spec.patch_size;
        (s[2] / p, s[3] / p)
    }

    /// Patch embeddings plus position embeddings, without the class token:
    /// `[B, C, H, W] -> [B, (H / p) * (W / p), D]`, patches in row-major order.
    pub fn patch_tokens(&self, xs: &Tensor) -> Tensor {
        let (gh, gw) = self.grid_of(xs);
        let tokens = xs.apply(&self.proj).flatten(2, 3).transpose(1, 2);
        tokens + self.patch_pos_embed(gh, gw)
    }

    /// Prepends the class token (plus its position embedding):
    /// `[B, K, D] -> [B, 1 + K, D]`.
    pub fn prepend_cls(&self, tokens: &Tensor) -> Tensor {
        let b = tokens.size()[0];
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1))
            .expand([b, 1, self.spec.embed_dim], false);
        Tensor::cat(&[cls, tokens.shallow_clone()], 1)
    }

    /// Every block, no final norm: `[B, K, D] -> [B, K, D]`, for any subset
    /// of tokens.
    pub fn run_blocks(&self, tokens: &Tensor) -> Tensor {
        run_blocks(&self.blocks, tokens)
    }

    /// The final LayerNorm.
    pub fn final_norm(&self, tokens: &Tensor) -> Tensor {
        tokens.apply(&self.norm)
    }

    /// timm's `forward_features`: every token, final-normed, class token
    /// first: `[B, 1 + N, D]`.
    pub fn forward_features(&self, xs: &Tensor) -> Tensor {
        let tokens = self.prepend_cls(&self.patch_tokens(xs));
        self.final_norm(&self.run_blocks(&tokens))
    }

    /// The final-normed patch tokens (class token dropped), averaged: `[B, D]`.
    pub fn mean_patch_features(&self, xs: &Tensor) -> Tensor {
        self.forward_features(xs)
            .narrow(1, 1, self.grid_of(xs).0 * self.grid_of(xs).1)
            .mean_dim(1, false, Kind::Float)
    }
}

impl ModuleT for Vit {
    /// The final-normed class token, `[B, D]` (`train` changes nothing).
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.forward_features(xs).select(1, 0)
    }
}

impl Encoder for Vit {
    fn out_dim(&self) -> i64 {
        self.spec.embed_dim
    }
}

#[cfg(test)]
mod tests;
