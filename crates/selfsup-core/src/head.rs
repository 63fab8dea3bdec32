//! Projection and prediction heads: small MLPs put on top of an encoder.
use crate::batch_norm::{batch_norm1d, BatchNorm};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Tensor};

/// Shape of an MLP head. The defaults are SimCLR's 2-layer projection head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Hidden width of every layer but the last.
    pub hidden_dim: i64,
    /// Output width.
    pub out_dim: i64,
    /// Number of linear layers (>= 1).
    pub layers: usize,
    /// Batch norm after each hidden linear layer.
    pub batch_norm: bool,
    /// Batch norm without affine parameters after the output layer too
    /// (SimSiam's and MoCo v3's projectors).
    pub last_batch_norm: bool,
}

impl HeadConfig {
    /// Refuses zero layers or widths; `key` is the config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        if self.layers == 0 {
            return Err(format!("{key}.layers = 0: a head has at least 1 layer"));
        }
        if self.out_dim < 1 || (self.layers > 1 && self.hidden_dim < 1) {
            return Err(format!(
                "{key}: out_dim = {} and hidden_dim = {} must be at least 1",
                self.out_dim, self.hidden_dim
            ));
        }
        Ok(())
    }
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden_dim: 512,
            out_dim: 128,
            layers: 2,
            batch_norm: true,
            last_batch_norm: false,
        }
    }
}

/// `Linear -> [BN] -> ReLU` repeated, then a final `Linear`.
#[derive(Debug)]
pub struct MlpHead {
    hidden: Vec<(nn::Linear, Option<BatchNorm>)>,
    last: nn::Linear,
    last_bn: Option<BatchNorm>,
}

impl MlpHead {
    /// Builds the head under `p` (variables `layers.{i}.weight`, ...).
    pub fn new(p: &nn::Path, in_dim: i64, cfg: &HeadConfig) -> Self {
        let mut hidden = Vec::new();
        let mut dim = in_dim;
        for i in 0..cfg.layers.saturating_sub(1) {
            let lp = p / "layers" / i;
            let lin = nn::linear(&lp / "linear", dim, cfg.hidden_dim, Default::default());
            let bn = cfg
                .batch_norm
                .then(|| batch_norm1d(&lp / "bn", cfg.hidden_dim, Default::default()));
            hidden.push((lin, bn));
            dim = cfg.hidden_dim;
        }
        let last = nn::linear(p / "out", dim, cfg.out_dim, Default::default());
        let last_bn = cfg.last_batch_norm.then(|| {
            let bn = nn::BatchNormConfig {
                affine: false,
                ..Default::default()
            };
            batch_norm1d(p / "out_bn", cfg.out_dim, bn)
        });
        Self {
            hidden,
            last,
            last_bn,
        }
    }
}

impl ModuleT for MlpHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for (lin, bn) in &self.hidden {
            h = h.apply(lin);
            if let Some(bn) = bn {
                h = h.apply_t(bn, train);
            }
            h = h.relu();
        }
        let out = h.apply(&self.last);
        match &self.last_bn {
            Some(bn) => out.apply_t(bn, train),
            None => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_shapes() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let head = MlpHead::new(
            &vs.root(),
            16,
            &HeadConfig {
                hidden_dim: 32,
                out_dim: 8,
                layers: 3,
                batch_norm: true,
                last_batch_norm: true,
            },
        );
        let out = head.forward_t(
            &Tensor::randn([4, 16], (tch::Kind::Float, tch::Device::Cpu)),
            true,
        );
        assert_eq!(out.size(), vec![4, 8]);
    }
}
