//! The image tower: any selfsup-vision encoder under `vision_model.`, its
//! variables named as in torchvision / timm below that prefix, optionally
//! initialised from a selfsup vision export (`model.safetensors`).
//!
//! On the CPU the small CNN reads its images in channels-last memory order (`[B, C, H, W]` with NHWC strides,
//! PyTorch's `memory_format=torch.channels_last`): oneDNN's convolutions
//! then need no layout reorders, and batch norm, ReLU and max-pool run their
//! vectorised channels-last kernels instead of the scalar NCHW max-pool
//! (about a fifth of a CLIP CPU step in the profile). Only the memory
//! order changes: the same function of the same weights, equal to the NCHW
//! result up to float rounding (a test checks it against float64).
use crate::tower::Tower;
use selfsup_core::encoder::Encoder;
use selfsup_core::Result;
use selfsup_vision::export::load_encoder_weights;
use selfsup_vision::models::{build_encoder, EncoderConfig};
use std::path::Path;
use tch::{nn, Device, Tensor};

/// Var-store prefix of the image tower (HF `CLIPModel`'s name).
pub const VISION_PREFIX: &str = "vision_model";

/// A selfsup vision encoder on RGB images.
pub struct ImageTower {
    encoder: Box<dyn Encoder>,
    /// Whether CPU images go in channels-last ([`channels_last_arch`]).
    channels_last: bool,
}

/// Whether the tower runs channels-last on the CPU: the small CNN (3x3
/// stride-1 convolutions, batch norm, ReLU, max-pool). Not the ResNets: in
/// libtorch 2.11 the channels-last backward through their stride-2 blocks
/// gave gradients 1.5e-3 (relative) away from a float64 computation where
/// NCHW stays within 1e-5; not a ViT, whose patch embedding is followed by
/// views that need NCHW.
fn channels_last_arch(cfg: &EncoderConfig) -> bool {
    matches!(cfg, EncoderConfig::SmallCnn { .. })
}

/// `xs` `[B, C, H, W]` with channels-last strides (the same values and
/// shape; PyTorch's `xs.contiguous(memory_format=torch.channels_last)`).
pub fn to_channels_last(xs: &Tensor) -> Tensor {
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

impl ImageTower {
    /// Builds the encoder `cfg` describes under `root / vision_model`.
    pub fn new(root: &nn::Path, cfg: &EncoderConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            encoder: build_encoder(&(root / VISION_PREFIX), cfg, 3),
            channels_last: channels_last_arch(cfg),
        })
    }

    /// The encoder on `xs`, channels-last where that is faster (the small
    /// CNN on the CPU, images `[B, C, H, W]`).
    fn encode(&self, xs: &Tensor, train: bool) -> Tensor {
        if self.channels_last && xs.device() == Device::Cpu && xs.dim() == 4 {
            self.encoder.forward_t(&to_channels_last(xs), train)
        } else {
            self.encoder.forward_t(xs, train)
        }
    }

    /// Width of the features.
    pub fn out_dim(&self) -> i64 {
        self.encoder.out_dim()
    }

    /// Features `[B, out_dim]` of normalised images `[B, 3, S, S]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.encode(xs, train)
    }
}

impl Tower for ImageTower {
    const INPUTS: usize = 1;
    const PROJECTION: &'static str = "visual_projection";

    fn out_dim(&self) -> i64 {
        self.encoder.out_dim()
    }

    fn forward(&self, inputs: &[Tensor], train: bool) -> Tensor {
        match inputs.first() {
            Some(xs) => self.encode(xs, train),
            None => Tensor::zeros(
                [0, self.encoder.out_dim()],
                (tch::Kind::Float, tch::Device::Cpu),
            ),
        }
    }
}

/// Loads a selfsup vision export (an RGB encoder of the same architecture)
/// into the image tower of `vs`; the error lists what does not fit.
pub fn load_pretrained(vs: &mut nn::VarStore, file: &Path) -> Result<()> {
    load_encoder_weights(vs, VISION_PREFIX, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_vision::models::{Stem, VitOptions};
    use tch::Kind;

    fn tower(cfg: &EncoderConfig) -> (nn::VarStore, ImageTower) {
        let vs = nn::VarStore::new(Device::Cpu);
        let t = ImageTower::new(&vs.root(), cfg).unwrap();
        (vs, t)
    }

    /// Features and the gradient of every weight (sorted by name): through
    /// the tower (channels-last) or the encoder called directly (NCHW).
    fn run(vs: &nn::VarStore, t: &ImageTower, xs: &Tensor, tower: bool) -> (Tensor, Vec<Tensor>) {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, v) in &vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let y = if tower {
            Tower::forward(t, std::slice::from_ref(xs), true)
        } else {
            t.encoder.forward_t(xs, true)
        };
        (y.square().sum(Kind::Float) * 0.5).backward();
        let grads = vars
            .iter()
            .map(|(_, v)| v.grad().to_kind(Kind::Double))
            .collect();
        (y.detach().to_kind(Kind::Double), grads)
    }

    fn rel(a: &Tensor, reference: &Tensor) -> f64 {
        (a - reference).norm().double_value(&[]) / reference.norm().double_value(&[]).max(1e-12)
    }

    #[test]
    fn channels_last_keeps_shape_and_values_with_nhwc_strides() {
        let xs = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        let cl = to_channels_last(&xs);
        assert_eq!(cl.size(), vec![2, 3, 4, 5]);
        assert_eq!(cl.stride(), vec![60, 1, 15, 3]);
        assert_eq!((&cl - &xs).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn the_small_cnn_channels_last_matches_float64_like_nchw() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        // The preset's tower (32-64-128-256 on 32 px), a small batch.
        let cfg = EncoderConfig::SmallCnn {
            channels: vec![32, 64, 128, 256],
        };
        let xs = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (vs, t) = tower(&cfg);
        assert!(t.channels_last);
        let (y_nchw, g_nchw) = run(&vs, &t, &xs, false);
        let (y_cl, g_cl) = run(&vs, &t, &xs, true);
        // The reference: the same weights and images in float64.
        let mut vs64 = nn::VarStore::new(Device::Cpu);
        let t64 = ImageTower::new(&vs64.root(), &cfg).unwrap();
        vs64.copy(&vs).unwrap();
        vs64.double();
        let (y64, g64) = run(&vs64, &t64, &xs.to_kind(Kind::Double), false);
        assert_eq!(y_cl.size(), vec![8, 256]);
        assert!(rel(&y_nchw, &y64) < 1e-5, "{}", rel(&y_nchw, &y64));
        assert!(rel(&y_cl, &y64) < 1e-5, "{}", rel(&y_cl, &y64));
        assert_eq!((g_nchw.len(), g_cl.len(), g64.len()), (12, 12, 12));
        for ((a, b), r) in g_nchw.iter().zip(&g_cl).zip(&g64) {
            assert!(rel(a, r) < 1e-4, "NCHW gradient {}", rel(a, r));
            assert!(rel(b, r) < 1e-4, "channels-last gradient {}", rel(b, r));
        }
        // Evaluation mode (running statistics): the same function.
        let e_nchw = tch::no_grad(|| t.encoder.forward_t(&xs, false));
        let e_cl = tch::no_grad(|| t.forward(&xs, false));
        assert!(rel(&e_cl, &e_nchw) < 1e-5);
    }

    #[test]
    fn resnets_and_vits_stay_nchw() {
        let vit = EncoderConfig::VitTiny(VitOptions {
            patch_size: 8,
            image_size: 16,
            embed_dim: Some(32),
            depth: Some(1),
            heads: Some(2),
        });
        let (_vs, t) = tower(&vit);
        assert!(!t.channels_last);
        let xs = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
        assert_eq!(t.forward(&xs, false).size(), vec![2, 32]);
        let resnet = EncoderConfig::Resnet18 { stem: Stem::Cifar };
        assert!(!channels_last_arch(&resnet));
    }
}
