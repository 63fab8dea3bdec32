//! Exponential moving average of weights (BYOL, MoCo, DINO, I-JEPA teachers).
use crate::schedule::cosine;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// EMA momentum schedule: `base` at step 0 rising along a cosine to `end` (BYOL: 0.996 -> 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    pub base: f64,
    pub end: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            base: 0.996,
            end: 1.0,
        }
    }
}

impl EmaConfig {
    /// Momentum at `step` of `total`.
    pub fn momentum(&self, step: u64, total: u64) -> f64 {
        cosine(step, total, self.base, self.end)
    }
}

/// `teacher <- m * teacher + (1 - m) * student`, pairwise, without gradient.
pub fn ema_update(teacher: &[Tensor], student: &[Tensor], m: f64) {
    assert_eq!(
        teacher.len(),
        student.len(),
        "EMA pairs must match one to one"
    );
    tch::no_grad(|| {
        for (t, s) in teacher.iter().zip(student) {
            let mut t = t.shallow_clone();
            let _ = t.f_mul_scalar_(m);
            let _ = t.f_add_(&(s.detach() * (1.0 - m)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_moves_teacher_towards_student() {
        let t = Tensor::from_slice(&[0.0f32, 10.0]);
        let s = Tensor::from_slice(&[1.0f32, 0.0]);
        ema_update(&[t.shallow_clone()], &[s], 0.9);
        let got: Vec<f32> = Vec::try_from(&t).unwrap();
        assert!((got[0] - 0.1).abs() < 1e-6 && (got[1] - 9.0).abs() < 1e-6);
    }

    #[test]
    fn momentum_schedule() {
        let c = EmaConfig::default();
        assert_eq!(c.momentum(0, 100), 0.996);
        assert!((c.momentum(100, 100) - 1.0).abs() < 1e-12);
    }
}
