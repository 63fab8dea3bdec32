//! ResNet encoders with torchvision's layout and variable names.
//!
//! Under the path given to [`ResNet::new`]: `conv1`, `bn1`, then
//! `layer{1..4}.{i}` blocks with `conv{j}`/`bn{j}` and, on the first block of
//! a stage whose shape changes, `downsample.0` (1x1 conv) and `downsample.1`
//! (batch norm). There is no `fc`: the forward pass ends at the global average
//! pool.
use super::{batch_norm, conv, global_avg_pool, Stem};
use selfsup_core::batch_norm::BatchNorm;
use selfsup_core::encoder::Encoder;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// The residual block of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1, 3x3 (carrying the stride, torchvision's "v1.5"), 1x1 with
    /// expansion 4 (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block relative to its stage width.
    pub fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One residual block: a chain of conv-BN(-ReLU) pairs plus the shortcut.
#[derive(Debug)]
struct Block {
    /// `(conv{j}, bn{j})`; ReLU after every pair but the last.
    layers: Vec<(nn::Conv2D, BatchNorm)>,
    downsample: Option<(nn::Conv2D, BatchNorm)>,
}

impl Block {
    fn new(p: nn::Path, kind: BlockKind, c_in: i64, width: i64, stride: i64) -> Self {
        let c_out = width * kind.expansion();
        // (in, out, kernel, stride, padding) of conv1, conv2, ...
        let shapes: Vec<(i64, i64, i64, i64, i64)> = match kind {
            BlockKind::Basic => vec![(c_in, width, 3, stride, 1), (width, width, 3, 1, 1)],
            BlockKind::Bottleneck => vec![
                (c_in, width, 1, 1, 0),
                (width, width, 3, stride, 1),
                (width, c_out, 1, 1, 0),
            ],
        };
        let layers = shapes
            .into_iter()
            .enumerate()
            .map(|(j, (i, o, k, s, pad))| {
                let n = j + 1;
                (
                    conv(&p / format!("conv{n}"), i, o, k, s, pad),
                    batch_norm(&p / format!("bn{n}"), o),
                )
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = &p / "downsample";
            (
                conv(&d / 0, c_in, c_out, 1, stride, 0),
                batch_norm(&d / 1, c_out),
            )
        });
        Block { layers, downsample }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.layers.len() - 1;
        let mut ys = xs.shallow_clone();
        for (j, (c, bn)) in self.layers.iter().enumerate() {
            ys = ys.apply(c).apply_t(bn, train);
            if j < last {
                ys = ys.relu();
            }
        }
        let shortcut = match &self.downsample {
            Some((c, bn)) => xs.apply(c).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// A ResNet trunk (no classifier) returning `[batch, 512 * expansion]` features.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm,
    stem: Stem,
    layers: Vec<Vec<Block>>,
    out_dim: i64,
}

impl ResNet {
    /// Builds a ResNet with `blocks[s]` blocks of `kind` in stage `s + 1`
    /// (widths 64, 128, 256, 512; stride 2 at the start of stages 2-4) under
    /// `p`, for `in_channels`-channel images.
    pub fn new(
        p: &nn::Path,
        kind: BlockKind,
        blocks: [usize; 4],
        stem: Stem,
        in_channels: i64,
    ) -> Self {
        let conv1 = match stem {
            Stem::Imagenet => conv(p / "conv1", in_channels, 64, 7, 2, 3),
            Stem::Cifar => conv(p / "conv1", in_channels, 64, 3, 1, 1),
        };
        let bn1 = batch_norm(p / "bn1", 64);
        let mut c_in = 64;
        let mut layers = Vec::with_capacity(4);
        for (s, &n) in blocks.iter().enumerate() {
            let width = 64 << s;
            let stage = p / format!("layer{}", s + 1);
            let stage_blocks = (0..n)
                .map(|i| {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    let b = Block::new(&stage / i, kind, c_in, width, stride);
                    c_in = width * kind.expansion();
                    b
                })
                .collect();
            layers.push(stage_blocks);
        }
        ResNet {
            conv1,
            bn1,
            stem,
            layers,
            out_dim: c_in,
        }
    }

    /// The stem this network was built with.
    pub fn stem(&self) -> Stem {
        self.stem
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        if self.stem == Stem::Imagenet {
            ys = ys.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for stage in &self.layers {
            for block in stage {
                ys = block.forward_t(&ys, train);
            }
        }
        global_avg_pool(&ys)
    }
}

impl Encoder for ResNet {
    fn out_dim(&self) -> i64 {
        self.out_dim
    }
}

/// torchvision's `resnet18` trunk (BasicBlock, [2, 2, 2, 2], 512 features).
pub fn resnet18(p: &nn::Path, stem: Stem, in_channels: i64) -> ResNet {
    ResNet::new(p, BlockKind::Basic, [2, 2, 2, 2], stem, in_channels)
}

/// torchvision's `resnet50` trunk (Bottleneck, [3, 4, 6, 3], 2048 features).
pub fn resnet50(p: &nn::Path, stem: Stem, in_channels: i64) -> ResNet {
    ResNet::new(p, BlockKind::Bottleneck, [3, 4, 6, 3], stem, in_channels)
}
