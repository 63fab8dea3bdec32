//! The SwAV loss (Caron et al. 2020, arXiv:2006.09882): swapped prediction.
//! Codes `q` of a view, computed from its prototype scores by Sinkhorn-Knopp
//! (an equipartition of the batch over the prototypes), are predicted from
//! the scores of every other view:
//! `loss = mean_{a in assign} mean_{v != a} mean_i -sum_k q_a[i,k] log softmax(s_v[i] / tau)_k`.
//!
//! Sinkhorn-Knopp normalises over the *global* batch: the column sums are
//! all-reduced through the [`Collective`].
//!
//! Everything runs in float32 with autocast off, and the prototype scores
//! should come from [`crate::loss::scores_f32`]: `exp(s / 0.05)` of a score
//! rounded to bfloat16 is off by up to 8 %, and so are the codes.
use crate::distributed::Collective;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// SwAV loss settings (the paper's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavLossConfig {
    /// Softmax temperature of the predictions.
    pub temperature: f64,
    /// Entropic regularisation of Sinkhorn-Knopp.
    pub epsilon: f64,
    /// Sinkhorn-Knopp iterations.
    pub sinkhorn_iterations: usize,
}

impl SwavLossConfig {
    /// Refuses a temperature or epsilon that is not positive and zero
    /// Sinkhorn-Knopp iterations; `key` is the config table holding them.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        crate::trainer::positive(&format!("{key}.temperature"), self.temperature)?;
        crate::trainer::positive(&format!("{key}.epsilon"), self.epsilon)?;
        if self.sinkhorn_iterations == 0 {
            return Err(format!("{key}.sinkhorn_iterations = 0: give at least 1"));
        }
        Ok(())
    }
}

impl Default for SwavLossConfig {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            epsilon: 0.05,
            sinkhorn_iterations: 3,
        }
    }
}

/// The SwAV loss.
#[derive(Debug, Clone)]
pub struct SwavLoss {
    cfg: SwavLossConfig,
}

impl SwavLoss {
    /// A loss with the given settings.
    pub fn new(cfg: SwavLossConfig) -> Self {
        Self { cfg }
    }

    /// Soft codes `[n, K]` for the prototype scores `[n, K]` of one view
    /// (no gradient): each row sums to 1 and, over the global batch, every
    /// prototype receives the same mass.
    pub fn sinkhorn(&self, scores: &Tensor, comm: &dyn Collective) -> Tensor {
        sinkhorn_knopp(scores, self.cfg.epsilon, self.cfg.sinkhorn_iterations, comm)
    }

    /// The swapped-prediction loss. `scores[v]` are view `v`'s prototype
    /// scores (`[n, K]`, with gradient); codes are computed for the views
    /// listed in `assign` (SwAV: the two global views).
    pub fn loss(&self, scores: &[Tensor], assign: &[usize], comm: &dyn Collective) -> Tensor {
        crate::autocast::full_precision(|| {
            assert!(scores.len() >= 2, "SwAV needs at least two views");
            let mut total: Option<Tensor> = None;
            for &a in assign {
                let q = self.sinkhorn(&scores[a], comm);
                let mut sub: Option<Tensor> = None;
                for (v, s) in scores.iter().enumerate() {
                    if v == a {
                        continue;
                    }
                    let logp =
                        (s.to_kind(Kind::Float) / self.cfg.temperature).log_softmax(1, Kind::Float);
                    let ce = -(&q * logp)
                        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                        .mean(Kind::Float);
                    sub = Some(match sub {
                        Some(t) => t + ce,
                        None => ce,
                    });
                }
                let sub = sub.expect("two views at least") / (scores.len() - 1) as f64;
                total = Some(match total {
                    Some(t) => t + sub,
                    None => sub,
                });
            }
            total.expect("SwAV needs at least one view to assign codes from") / assign.len() as f64
        })
    }
}

/// Sinkhorn-Knopp on `exp(scores / epsilon)` (`[n, K]`, no gradient):
/// `iterations` alternating normalisations so that every row sums to 1
/// and, over the global batch of `n * world` rows, every column receives
/// the same mass. SwAV's codes; DINOv2's centring of the teacher
/// (`epsilon` its temperature).
pub fn sinkhorn_knopp(
    scores: &Tensor,
    epsilon: f64,
    iterations: usize,
    comm: &dyn Collective,
) -> Tensor {
    crate::autocast::full_precision(|| {
        tch::no_grad(|| {
            let scores = scores.to_kind(Kind::Float);
            let k = scores.size()[1] as f64;
            let world = comm.world_size() as f64;
            let b = scores.size()[0] as f64 * world;
            // Subtracting the max keeps exp() finite; the normalisations undo it.
            let shifted = &scores - scores.max();
            let mut q = (shifted / epsilon).exp().tr(); // [K, n]
            let mut total = [q.sum(Kind::Float).reshape([1])];
            comm.all_reduce_mean_(&mut total);
            q /= &total[0] * world;
            for _ in 0..iterations {
                let mut rows = [q.sum_dim_intlist([1i64].as_slice(), true, Kind::Float)];
                comm.all_reduce_mean_(&mut rows);
                q = q / (&rows[0] * world) / k;
                q = &q / q.sum_dim_intlist([0i64].as_slice(), true, Kind::Float) / b;
            }
            (q * b).tr()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::loss::test_fixture::{table, STUDENT};

    // PyTorch 2.11.0, SwAV's reference code (eps 0.05, 3 iterations, temperature 0.1):
    //   @torch.no_grad()
    //   def sinkhorn(out):
    //       Q = torch.exp(out / 0.05).t(); B = Q.shape[1]; K = Q.shape[0]; Q /= torch.sum(Q)
    //       for _ in range(3):
    //           Q /= torch.sum(Q, dim=1, keepdim=True); Q /= K
    //           Q /= torch.sum(Q, dim=0, keepdim=True); Q /= B
    //       Q *= B; return Q.t()
    //   sc = [torch.tanh(x) for x in s]          # s: the three student tables of test_fixture.rs
    //   loss = sum over i in (0, 1) of (sum over v != i of
    //            -torch.mean(torch.sum(sinkhorn(sc[i]) * F.log_softmax(sc[v] / 0.1, dim=1), dim=1))) / 2
    //   loss / 2                                   -> 5.314506530761719
    //   sinkhorn(sc[0])[0]  -> [0.07801340520381927, 0.06682072579860687, 0.6189841032028198, 0.04157231003046036, 0.19460934400558472]
    #[test]
    fn matches_pytorch() {
        let scores: Vec<Tensor> = (0..3).map(|i| table(&STUDENT, i).tanh()).collect();
        let swav = SwavLoss::new(SwavLossConfig::default());
        let q = swav.sinkhorn(&scores[0], &SingleProcess);
        let row: Vec<f32> = Vec::try_from(q.get(0)).unwrap();
        let want = [
            0.078_013_405f32,
            0.066_820_726,
            0.618_984_1,
            0.041_572_31,
            0.194_609_34,
        ];
        for (g, w) in row.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{row:?}");
        }
        // Every sample's code is a distribution; every prototype gets n/K of the mass.
        let rows: Vec<f32> =
            Vec::try_from(q.sum_dim_intlist([1i64].as_slice(), false, Kind::Float)).unwrap();
        assert!(rows.iter().all(|r| (r - 1.0).abs() < 1e-4), "{rows:?}");
        let l = swav
            .loss(&scores, &[0, 1], &SingleProcess)
            .double_value(&[]);
        assert!((l - 5.314_506_530_761_719).abs() < 1e-4, "{l}");
    }

    /// Codes and loss from `scores_f32` prototype scores are the float32
    /// ones under bfloat16 autocast; the scores left to autocast move the
    /// codes by several percent (measured here: 3.5 %; 0 with `scores_f32`).
    #[test]
    fn autocast_does_not_change_the_codes() {
        use crate::loss::info_nce::normalize;
        use crate::loss::scores_f32;
        use crate::loss::test_fixture::{bf16, gap};
        tch::manual_seed(5);
        let opts = (Kind::Float, tch::Device::Cpu);
        let protos = normalize(&Tensor::randn([30, 64], opts));
        let feats: Vec<Tensor> = (0..2).map(|_| Tensor::randn([64, 64], opts)).collect();
        let swav = SwavLoss::new(SwavLossConfig::default());
        let scores = || -> Vec<Tensor> {
            feats
                .iter()
                .map(|f| scores_f32(&normalize(f), &protos))
                .collect()
        };
        let exact_s = scores();
        let exact_q = swav.sinkhorn(&exact_s[0], &SingleProcess);
        let exact_l = swav.loss(&exact_s, &[0, 1], &SingleProcess);
        let (q, l) = bf16(|| {
            let s = scores();
            (
                swav.sinkhorn(&s[0], &SingleProcess),
                swav.loss(&s, &[0, 1], &SingleProcess),
            )
        });
        let rel = |q: &Tensor| {
            ((q - &exact_q).abs() / exact_q.clamp_min(1e-6))
                .max()
                .double_value(&[])
        };
        assert!(rel(&q) < 1e-4, "{}", rel(&q));
        assert!(gap(&l, &exact_l) < 1e-5, "{}", gap(&l, &exact_l));
        let naive =
            bf16(|| swav.sinkhorn(&normalize(&feats[0]).matmul(&protos.tr()), &SingleProcess));
        assert!(rel(&naive) > 1e-2, "{}", rel(&naive));
    }
}
