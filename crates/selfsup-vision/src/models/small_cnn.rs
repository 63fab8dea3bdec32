//! A small CNN for quick runs on the CPU.
//!
//! Block `i` (variables `blocks.{i}.conv.weight`, `blocks.{i}.bn.*`) is a 3x3
//! convolution (padding 1, no bias), batch norm and ReLU; a 2x2 max-pool
//! follows every block but the last, and a global average pool ends the
//! network. In PyTorch: `Conv2d(c_in, c, 3, padding=1, bias=False)`,
//! `BatchNorm2d(c)`, `ReLU()`, `MaxPool2d(2)` per block (modules named `conv`
//! and `bn` inside `blocks[i]`), then `AdaptiveAvgPool2d(1)` and `flatten(1)`.
use super::{batch_norm, conv, global_avg_pool};
use selfsup_core::batch_norm::BatchNorm;
use selfsup_core::encoder::Encoder;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Conv-BN-ReLU blocks with max-pools between them and a global average pool.
#[derive(Debug)]
pub struct SmallCnn {
    blocks: Vec<(nn::Conv2D, BatchNorm)>,
    out_dim: i64,
}

/// Builds a [`SmallCnn`] under `p` with one block per entry of `channels`.
///
/// # Panics
/// If `channels` is empty.
pub fn small_cnn(p: &nn::Path, channels: &[i64], in_channels: i64) -> SmallCnn {
    assert!(
        !channels.is_empty(),
        "small_cnn: at least one block is needed"
    );
    let blocks_path = p / "blocks";
    let mut c_in = in_channels;
    let blocks = channels
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let b = &blocks_path / i;
            let layer = (
                conv(&b / "conv", c_in, c, 3, 1, 1),
                batch_norm(&b / "bn", c),
            );
            c_in = c;
            layer
        })
        .collect();
    SmallCnn {
        blocks,
        out_dim: c_in,
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.blocks.len() - 1;
        let mut ys = xs.shallow_clone();
        for (i, (c, bn)) in self.blocks.iter().enumerate() {
            ys = ys.apply(c).apply_t(bn, train).relu();
            if i < last {
                ys = ys.max_pool2d_default(2);
            }
        }
        global_avg_pool(&ys)
    }
}

impl Encoder for SmallCnn {
    fn out_dim(&self) -> i64 {
        self.out_dim
    }
}
