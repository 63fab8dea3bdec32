//! Schedules as pure functions of the step.
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// How the learning rate falls after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// Half a cosine (SimCLR, BYOL, DINO, ...).
    #[default]
    Cosine,
    /// A straight line (BERT).
    Linear,
}

/// Learning-rate schedule: linear warm-up, then cosine or linear decay to
/// `final_lr_ratio * peak`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrSchedule {
    /// Warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Final learning rate as a fraction of the peak.
    pub final_lr_ratio: f64,
    /// Shape of the decay after warm-up.
    pub decay: Decay,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            warmup_epochs: 1.0,
            final_lr_ratio: 0.0,
            decay: Decay::Cosine,
        }
    }
}

impl LrSchedule {
    /// The learning rate at `step` of `total` steps, with `warmup` warm-up steps.
    pub fn lr(&self, peak: f64, step: u64, total: u64, warmup: u64) -> f64 {
        if step < warmup {
            return peak * (step + 1) as f64 / warmup as f64;
        }
        let (step, total, end) = (
            step - warmup,
            total.saturating_sub(warmup),
            peak * self.final_lr_ratio,
        );
        match self.decay {
            Decay::Cosine => cosine(step, total, peak, end),
            Decay::Linear if total == 0 => end,
            Decay::Linear => peak + (end - peak) * (step.min(total) as f64 / total as f64),
        }
    }
}

/// Cosine interpolation from `start` (step 0) to `end` (step `total`).
pub fn cosine(step: u64, total: u64, start: f64, end: f64) -> f64 {
    if total == 0 {
        return end;
    }
    let t = (step.min(total) as f64) / total as f64;
    end + (start - end) * 0.5 * (1.0 + (PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear() {
        let s = LrSchedule {
            warmup_epochs: 1.0,
            final_lr_ratio: 0.0,
            decay: Decay::Linear,
        };
        assert!((s.lr(1.0, 9, 110, 10) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 60, 110, 10) - 0.5).abs() < 1e-12);
        assert!((s.lr(1.0, 110, 110, 10) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            warmup_epochs: 1.0,
            final_lr_ratio: 0.1,
            decay: Decay::Cosine,
        };
        assert!((s.lr(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!((s.lr(1.0, 55, 100, 10) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 100, 100, 10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn cosine_endpoints_and_midpoint() {
        assert_eq!(cosine(0, 10, 0.996, 1.0), 0.996);
        assert!((cosine(10, 10, 0.996, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine(5, 10, 0.0, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(cosine(3, 0, 0.0, 1.0), 1.0);
    }
}
