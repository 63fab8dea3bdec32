//! The DINO loss (Caron et al. 2021, arXiv:2104.14294): cross-entropy between
//! the teacher's centred, sharpened distribution over `K` dimensions on each
//! global view and the student's distribution on every *other* view.
//!
//! `loss = mean_{(t, s), s != t} mean_i -softmax((T_t - c) / tau_t)_i . log_softmax(S_s / tau_s)_i`
//!
//! The center `c` is hidden state: the method keeps it and moves it with
//! [`DinoLoss::updated_center`] in its after-step hook. The teacher
//! temperature warms up linearly ([`DinoLossConfig::teacher_temp_at`]).
//! DINOv2 replaces the centring by Sinkhorn-Knopp on the teacher's logits
//! (`centering = "sinkhorn_knopp"`, [`DinoLoss::teacher_targets`]).
//!
//! The loss runs in float32 with autocast off; the head that makes its
//! inputs should take its cosine logits from [`crate::loss::cosine_f32`]:
//! at `tau_t = 0.04` a bfloat16 cosine is a logit off by up to 0.1.
use crate::distributed::Collective;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// DINO loss settings (the paper's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoLossConfig {
    /// Student softmax temperature.
    pub student_temp: f64,
    /// Teacher temperature after the warm-up (sharpening).
    pub teacher_temp: f64,
    /// Teacher temperature at the start of the warm-up.
    pub warmup_teacher_temp: f64,
    /// Epochs of the linear teacher-temperature warm-up (fractional allowed).
    pub warmup_teacher_temp_epochs: f64,
    /// Momentum of the center's moving average.
    pub center_momentum: f64,
    /// How the teacher's logits become targets: `"center"` (DINO: minus the
    /// moving center, then a sharpened softmax) or `"sinkhorn_knopp"`
    /// (DINOv2: Sinkhorn-Knopp over the global batch at the teacher
    /// temperature; the center is then unused).
    pub centering: Centering,
    /// Sinkhorn-Knopp iterations (DINOv2: 3).
    pub sinkhorn_iterations: usize,
}

/// [`DinoLossConfig::centering`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Centering {
    /// Minus a moving average of the teacher's outputs (DINO, iBOT).
    #[default]
    Center,
    /// Sinkhorn-Knopp normalisation (DINOv2).
    SinkhornKnopp,
}

impl DinoLossConfig {
    /// Refuses temperatures that are not positive and a centre momentum
    /// outside [0, 1); `key` is the config table holding them.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        crate::trainer::positive(&format!("{key}.student_temp"), self.student_temp)?;
        crate::trainer::positive(&format!("{key}.teacher_temp"), self.teacher_temp)?;
        crate::trainer::positive(
            &format!("{key}.warmup_teacher_temp"),
            self.warmup_teacher_temp,
        )?;
        crate::trainer::non_negative(
            &format!("{key}.warmup_teacher_temp_epochs"),
            self.warmup_teacher_temp_epochs,
        )?;
        crate::trainer::unit_interval(&format!("{key}.center_momentum"), self.center_momentum)?;
        if self.centering == Centering::SinkhornKnopp && self.sinkhorn_iterations == 0 {
            return Err(format!(
                "{key}.sinkhorn_iterations = 0: Sinkhorn-Knopp centring needs at least 1 (DINOv2: 3)"
            ));
        }
        Ok(())
    }
}

impl Default for DinoLossConfig {
    fn default() -> Self {
        Self {
            student_temp: 0.1,
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0.0,
            center_momentum: 0.9,
            centering: Centering::Center,
            sinkhorn_iterations: 3,
        }
    }
}

impl DinoLossConfig {
    /// The teacher temperature at (fractional) epoch `epoch`.
    pub fn teacher_temp_at(&self, epoch: f64) -> f64 {
        if self.warmup_teacher_temp_epochs <= 0.0 || epoch >= self.warmup_teacher_temp_epochs {
            return self.teacher_temp;
        }
        let f = epoch / self.warmup_teacher_temp_epochs;
        self.warmup_teacher_temp + f * (self.teacher_temp - self.warmup_teacher_temp)
    }
}

/// `softmax((t - center) / temp)` in float32, no gradient.
fn centered_softmax(t: &Tensor, center: &Tensor, temp: f64) -> Tensor {
    crate::autocast::full_precision(|| {
        ((t.to_kind(Kind::Float).detach() - center) / temp).softmax(-1, Kind::Float)
    })
}

/// The DINO loss.
#[derive(Debug, Clone)]
pub struct DinoLoss {
    cfg: DinoLossConfig,
}

impl DinoLoss {
    /// A loss with the given settings.
    pub fn new(cfg: DinoLossConfig) -> Self {
        Self { cfg }
    }

    /// The settings.
    pub fn config(&self) -> &DinoLossConfig {
        &self.cfg
    }

    /// The loss of the student's outputs on every view (`[n, K]` each, global
    /// views first) against the teacher's outputs on the global views
    /// (no gradient), with the current `center` (`[1, K]`).
    pub fn loss(
        &self,
        student: &[Tensor],
        teacher: &[Tensor],
        center: &Tensor,
        teacher_temp: f64,
    ) -> Tensor {
        let targets: Vec<Tensor> = teacher
            .iter()
            .map(|t| centered_softmax(t, center, teacher_temp))
            .collect();
        self.loss_to_targets(student, &targets)
    }

    /// The teacher's distributions `[n, K]` for its logits `[n, K]` as
    /// `centering` says: `softmax((t - center) / teacher_temp)`, or
    /// Sinkhorn-Knopp over the global batch at `teacher_temp` (every row of
    /// the process's `n` is a sample of it; `center` is then unused).
    pub fn teacher_targets(
        &self,
        teacher: &Tensor,
        center: &Tensor,
        teacher_temp: f64,
        comm: &dyn Collective,
    ) -> Tensor {
        match self.cfg.centering {
            Centering::Center => centered_softmax(teacher, center, teacher_temp),
            Centering::SinkhornKnopp => crate::loss::swav::sinkhorn_knopp(
                teacher,
                teacher_temp,
                self.cfg.sinkhorn_iterations,
                comm,
            ),
        }
    }

    /// The loss of the student's outputs on every view (`[n, K]` each, global
    /// views first) against the teacher's distributions on the global views
    /// (`targets`, no gradient): the mean over view pairs that differ.
    pub fn loss_to_targets(&self, student: &[Tensor], targets: &[Tensor]) -> Tensor {
        crate::autocast::full_precision(|| {
            let logps: Vec<Tensor> = student
                .iter()
                .map(|s| {
                    (s.to_kind(Kind::Float) / self.cfg.student_temp).log_softmax(-1, Kind::Float)
                })
                .collect();
            let mut total: Option<Tensor> = None;
            let mut pairs = 0;
            for (it, q) in targets.iter().enumerate() {
                for (is, lp) in logps.iter().enumerate() {
                    if is == it {
                        continue;
                    }
                    let ce = (-(q * lp).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float))
                        .mean(Kind::Float);
                    total = Some(match total {
                        Some(t) => t + ce,
                        None => ce,
                    });
                    pairs += 1;
                }
            }
            match total {
                Some(t) => t / pairs as f64,
                // One view: no pair to compare (the methods refuse it first).
                None => match student.first() {
                    Some(s) => s.sum(Kind::Float) * 0.0,
                    None => Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                },
            }
        })
    }

    /// `c <- m c + (1 - m) mean(teacher outputs over the global batch)`.
    pub fn updated_center(
        &self,
        center: &Tensor,
        teacher: &[Tensor],
        comm: &dyn Collective,
    ) -> Tensor {
        tch::no_grad(|| {
            let all = Tensor::cat(teacher, 0).to_kind(Kind::Float);
            let mut sum = all.sum_dim_intlist([0i64].as_slice(), true, Kind::Float);
            let mut count = Tensor::from(all.size()[0] as f32).to_device(all.device());
            let mut pair = [sum.shallow_clone(), count.shallow_clone()];
            comm.all_reduce_mean_(&mut pair);
            [sum, count] = pair;
            let mean = sum / count;
            center * self.cfg.center_momentum + mean * (1.0 - self.cfg.center_momentum)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::loss::test_fixture::{table, CENTER, STUDENT, TEACHER};

    // PyTorch 2.11.0 (tensors in test_fixture.rs; 2 teacher global views, 3 student views):
    //   total = sum over iq, v != iq of
    //     torch.sum(-F.softmax((t[iq] - center) / 0.04, -1) * F.log_softmax(s[v] / 0.1, -1), -1).mean()
    //   total / 4                                            -> 7.701250076293945
    //   center * 0.9 + torch.cat(t).mean(0, keepdim=True) * 0.1
    //     -> [-0.18606942892074585, 0.04074537754058838, 0.05734827369451523, 0.05438336730003357, 0.03949378430843353]
    #[test]
    fn matches_pytorch() {
        let teacher: Vec<Tensor> = (0..2).map(|i| table(&TEACHER, i)).collect();
        let student: Vec<Tensor> = (0..3).map(|i| table(&STUDENT, i)).collect();
        let center = Tensor::from_slice(&CENTER).reshape([1, 5]);
        let loss = DinoLoss::new(DinoLossConfig::default());
        let l = loss
            .loss(&student, &teacher, &center, 0.04)
            .double_value(&[]);
        assert!((l - 7.701_250_076_293_945).abs() < 1e-4, "{l}");
        let c = loss.updated_center(&center, &teacher, &SingleProcess);
        let want = [
            -0.186_069_43f32,
            0.040_745_377,
            0.057_348_274,
            0.054_383_367,
            0.039_493_784,
        ];
        let got: Vec<f32> = Vec::try_from(c.flatten(0, -1)).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    // PyTorch 2.11.0 (benchmarks/reference_dinov2_losses.py, DINOv2's
    // Sinkhorn-Knopp written out: Q = exp(t / 0.1).T, Q /= Q.sum(), then 3 x
    // {Q /= Q.sum(1, keepdim) * K; Q /= Q.sum(0, keepdim) * B}, Q *= B; Q.T):
    //   sk(t0)[0]  -> SK_ROW0
    //   mean over pairs v != iq of CE(sk(t[iq]), log_softmax(s[v] / 0.1))
    //     -> 6.2820916175842285
    const SK_ROW0: [f32; 5] = [
        1.146_166_2e-9,
        2.148_958_5e-7,
        4.397_066_5e-8,
        6.069_538_6e-9,
        0.999_999_8,
    ];

    #[test]
    fn sinkhorn_knopp_targets_match_pytorch() {
        let teacher: Vec<Tensor> = (0..2).map(|i| table(&TEACHER, i)).collect();
        let student: Vec<Tensor> = (0..3).map(|i| table(&STUDENT, i)).collect();
        let center = Tensor::from_slice(&CENTER).reshape([1, 5]);
        let loss = DinoLoss::new(DinoLossConfig {
            centering: Centering::SinkhornKnopp,
            ..DinoLossConfig::default()
        });
        let targets: Vec<Tensor> = teacher
            .iter()
            .map(|t| loss.teacher_targets(t, &center, 0.1, &SingleProcess))
            .collect();
        let row: Vec<f32> = Vec::try_from(targets[0].get(0)).unwrap();
        for (g, w) in row.iter().zip(SK_ROW0) {
            assert!((g - w).abs() < 1e-5, "{row:?}");
        }
        // Every row a distribution (the last normalisation).
        let rows: Vec<f32> =
            Vec::try_from(targets[1].sum_dim_intlist([1i64].as_slice(), false, Kind::Float))
                .unwrap();
        assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-5), "{rows:?}");
        let l = loss.loss_to_targets(&student, &targets).double_value(&[]);
        assert!((l - 6.282_091_617_584_228_5).abs() < 1e-4, "{l}");
        let bad = DinoLossConfig {
            centering: Centering::SinkhornKnopp,
            sinkhorn_iterations: 0,
            ..DinoLossConfig::default()
        };
        assert!(bad
            .validate("[method] loss")
            .unwrap_err()
            .contains("sinkhorn_iterations"));
    }

    /// Logits made by `cosine_f32` (the head's last layer) and the loss give
    /// the same value under bfloat16 autocast as in float32 (< 1e-5); the
    /// head's product left to autocast moves it by 3e-4 (30x the bound).
    #[test]
    fn autocast_does_not_change_the_loss_of_cosine_logits() {
        use crate::loss::cosine_f32;
        use crate::loss::info_nce::normalize;
        use crate::loss::test_fixture::{bf16, gap};
        tch::manual_seed(11);
        let opts = (Kind::Float, tch::Device::Cpu);
        let w = Tensor::randn([512, 64], opts);
        let feats: Vec<Tensor> = (0..3).map(|_| Tensor::randn([32, 64], opts)).collect();
        let center = Tensor::randn([1, 512], opts) * 0.01;
        let loss = DinoLoss::new(DinoLossConfig::default());
        let run = |head: &dyn Fn(&Tensor) -> Tensor| {
            let s: Vec<Tensor> = feats.iter().map(head).collect();
            let t: Vec<Tensor> = feats[..2].iter().map(head).collect();
            loss.loss(&s, &t, &center, 0.04)
        };
        let exact = run(&|x| cosine_f32(x, &w));
        let under = bf16(|| run(&|x| cosine_f32(x, &w)));
        assert!(gap(&exact, &under) < 1e-5, "{}", gap(&exact, &under));
        let naive = bf16(|| run(&|x| normalize(x).matmul(&normalize(&w).tr())));
        assert!(gap(&exact, &naive) > 1e-4, "{}", gap(&exact, &naive));
    }

    #[test]
    fn teacher_temperature_warms_up_linearly() {
        let cfg = DinoLossConfig {
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.07,
            warmup_teacher_temp_epochs: 30.0,
            ..Default::default()
        };
        assert!((cfg.teacher_temp_at(0.0) - 0.04).abs() < 1e-12);
        assert!((cfg.teacher_temp_at(15.0) - 0.055).abs() < 1e-12);
        assert!((cfg.teacher_temp_at(40.0) - 0.07).abs() < 1e-12);
    }
}
