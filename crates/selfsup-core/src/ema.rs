//! Exponential moving average of weights (BYOL, MoCo, DINO, I-JEPA teachers).
use crate::schedule::cosine;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// EMA momentum schedule: `base` at step 0 rising along a cosine to `end` (BYOL: 0.996 -> 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    pub base: f64,
    pub end: f64,
}

impl EmaConfig {
    /// Refuses momenta outside [0, 1]; `key` is the config table.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        for (name, v) in [("base", self.base), ("end", self.end)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!(
                    "{key}.{name} = {v}: an EMA momentum is between 0 and 1"
                ));
            }
        }
        Ok(())
    }
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

/// A teacher network that follows a student by EMA: every variable under
/// `teacher_prefix` of a var store paired, by name, with the variable under
/// `student_prefix`.
///
/// Build the teacher with the same constructor as the student under its own
/// prefix (`teacher.encoder`, `teacher.head`, ...), then [`EmaTeacher::new`]
/// copies the student into it and turns its gradients off, so the optimiser
/// never sees it; the method calls [`EmaTeacher::update`] from its
/// [`crate::method::Method::after_step`] hook. Running statistics of batch
/// norm are averaged like weights. The teacher is part of the var store, so
/// checkpoints carry it and resume restores it.
#[derive(Debug)]
pub struct EmaTeacher {
    /// `(teacher, student)` pairs, by sorted name.
    pairs: Vec<(Tensor, Tensor)>,
    cfg: EmaConfig,
    last_momentum: f64,
}

impl EmaTeacher {
    /// Pairs `teacher_prefix.*` with `student_prefix.*` in `vs`, copies the
    /// student's values into the teacher and freezes the teacher.
    ///
    /// Errors when a name exists on one side only or shapes differ (the two
    /// networks were not built alike).
    pub fn new(
        vs: &nn::VarStore,
        student_prefix: &str,
        teacher_prefix: &str,
        cfg: EmaConfig,
    ) -> Result<Self> {
        Self::with_prefixes(vs, &[(student_prefix, teacher_prefix)], cfg)
    }

    /// Like [`EmaTeacher::new`] for several `(student, teacher)` prefix pairs
    /// (an encoder and its projector, say), followed with one momentum.
    pub fn with_prefixes(
        vs: &nn::VarStore,
        prefixes: &[(&str, &str)],
        cfg: EmaConfig,
    ) -> Result<Self> {
        let mut pairs = Vec::new();
        for (s, t) in prefixes {
            pairs.extend(Self::pair(vs, s, t)?);
        }
        Ok(Self {
            pairs,
            cfg,
            last_momentum: f64::NAN,
        })
    }

    fn pair(
        vs: &nn::VarStore,
        student_prefix: &str,
        teacher_prefix: &str,
    ) -> Result<Vec<(Tensor, Tensor)>> {
        let vars = vs.variables();
        let under = |prefix: &str| -> BTreeMap<String, Tensor> {
            let p = format!("{prefix}.");
            vars.iter()
                .filter_map(|(k, t)| {
                    k.strip_prefix(&p)
                        .map(|r| (r.to_string(), t.shallow_clone()))
                })
                .collect()
        };
        let student = under(student_prefix);
        let mut teacher = under(teacher_prefix);
        if student.is_empty() {
            return Err(Error::Config(format!(
                "EMA teacher: no variable under '{student_prefix}.'"
            )));
        }
        let mut pairs = Vec::with_capacity(student.len());
        for (name, s) in student {
            let t = teacher.remove(&name).ok_or_else(|| {
                Error::Config(format!(
                    "EMA teacher: '{student_prefix}.{name}' has no '{teacher_prefix}.{name}'"
                ))
            })?;
            if t.size() != s.size() {
                return Err(Error::Config(format!(
                    "EMA teacher: '{name}' is {:?} in the student and {:?} in the teacher",
                    s.size(),
                    t.size()
                )));
            }
            pairs.push((t.set_requires_grad(false), s));
        }
        if let Some(extra) = teacher.keys().next() {
            return Err(Error::Config(format!(
                "EMA teacher: '{teacher_prefix}.{extra}' has no counterpart under '{student_prefix}.'"
            )));
        }
        tch::no_grad(|| {
            for (t, s) in &pairs {
                t.shallow_clone().copy_(s);
            }
        });
        Ok(pairs)
    }

    /// `teacher <- m * teacher + (1 - m) * student` with the momentum of the
    /// schedule at `step` of `total`; returns that momentum.
    pub fn update(&mut self, step: u64, total: u64) -> f64 {
        let m = self.cfg.momentum(step, total);
        let (t, s): (Vec<Tensor>, Vec<Tensor>) = self
            .pairs
            .iter()
            .map(|(t, s)| (t.shallow_clone(), s.shallow_clone()))
            .unzip();
        ema_update(&t, &s, m);
        self.last_momentum = m;
        m
    }

    /// The momentum of the last update (NaN before the first).
    pub fn last_momentum(&self) -> f64 {
        self.last_momentum
    }

    /// Number of paired variables.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no variable is paired (never true for a built teacher).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_copies_freezes_and_follows() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let s = nn::linear(vs.root() / "student", 3, 2, Default::default());
        let _t = nn::linear(vs.root() / "teacher", 3, 2, Default::default());
        let mut ema = EmaTeacher::new(
            &vs,
            "student",
            "teacher",
            EmaConfig {
                base: 0.5,
                end: 0.5,
            },
        )
        .unwrap();
        assert_eq!(ema.len(), 2);
        let vars = vs.variables();
        let tw = &vars["teacher.weight"];
        assert!(!tw.requires_grad());
        assert!(vars["student.weight"].requires_grad());
        assert!(
            tw.allclose(&s.ws, 0.0, 0.0, false),
            "teacher starts as a copy"
        );
        let before = tw.copy();
        tch::no_grad(|| {
            let _ = s.ws.shallow_clone().fill_(1.0);
        });
        assert_eq!(ema.update(0, 10), 0.5);
        let want = before * 0.5 + 0.5;
        assert!(tw.allclose(&want, 1e-6, 1e-6, false));
        // Only the student is trainable.
        let names = crate::optim::Params::of(&vs).names;
        assert!(names.iter().all(|n| n.starts_with("student.")), "{names:?}");
    }

    #[test]
    fn mismatched_networks_are_refused() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _s = nn::linear(vs.root() / "student", 3, 2, Default::default());
        let _t = nn::linear(vs.root() / "teacher", 4, 2, Default::default());
        let e = EmaTeacher::new(&vs, "student", "teacher", EmaConfig::default()).unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
        let e = EmaTeacher::new(&vs, "nothing", "teacher", EmaConfig::default()).unwrap_err();
        assert!(e.to_string().contains("nothing"), "{e}");
    }

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
