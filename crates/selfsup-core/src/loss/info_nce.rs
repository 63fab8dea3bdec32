//! InfoNCE (van den Oord et al. 2018, arXiv:1807.03748) and its NT-Xent form
//! (SimCLR, Chen et al. 2020, arXiv:2002.05709).
//!
//! Embeddings are l2-normalised, compared by cosine similarity divided by a
//! temperature, and each anchor's positive is classified against negatives
//! with softmax cross-entropy.
//!
//! Across processes each rank computes the loss for its own anchors against
//! the keys of the *global* batch, gathered with gradient through the
//! [`Collective`] ("local loss + gather with grad"): with one process this is
//! exactly the textbook loss.
//!
//! The logits are computed in float32 with autocast off ([`full_precision`]):
//! cosine similarities rounded to bfloat16 and divided by 0.1 are off by ~0.02.
//!
//! ```
//! use selfsup_core::{distributed::SingleProcess, loss::{InfoNce, InfoNceConfig}};
//! let loss = InfoNce::new(InfoNceConfig { temperature: 0.5 });
//! let z1 = tch::Tensor::randn([8, 16], (tch::Kind::Float, tch::Device::Cpu));
//! let z2 = &z1 + 0.01;
//! let l = loss.nt_xent(&z1, &z2, &SingleProcess);
//! assert!(l.double_value(&[]) < 2.0);
//! ```
use super::pair::PairLoss;
pub use super::scores::normalize;
use super::scores::scores_f32;
use crate::autocast::full_precision;
use crate::distributed::Collective;
use crate::method::LossOut;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// InfoNCE settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfoNceConfig {
    /// Softmax temperature (SimCLR: 0.5 for small batches, 0.1 for large ones).
    pub temperature: f64,
}

impl InfoNceConfig {
    /// Refuses a temperature that is not positive (a negative one maximises
    /// the loss); `key` is the config table holding it.
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        crate::trainer::positive(&format!("{key}.temperature"), self.temperature)
    }
}

impl Default for InfoNceConfig {
    fn default() -> Self {
        Self { temperature: 0.5 }
    }
}

/// The InfoNCE loss.
#[derive(Debug, Clone)]
pub struct InfoNce {
    cfg: InfoNceConfig,
}

impl InfoNce {
    /// A loss with the given settings.
    pub fn new(cfg: InfoNceConfig) -> Self {
        Self { cfg }
    }

    /// The settings.
    pub fn config(&self) -> &InfoNceConfig {
        &self.cfg
    }

    /// NT-Xent: `z1[i]` and `z2[i]` are two views of sample `i`; every other
    /// embedding of both views in the global batch is a negative (2B - 2 per
    /// anchor). Averaged over the 2n local anchors; symmetric by construction.
    pub fn nt_xent(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> Tensor {
        full_precision(|| {
            let n = z1.size()[0];
            let a = normalize(z1);
            let b = normalize(z2);
            let ga = comm.all_gather_with_grad(&a);
            let gb = comm.all_gather_with_grad(&b);
            let global = ga.size()[0];
            let keys = Tensor::cat(&[&ga, &gb], 0);
            let anchors = Tensor::cat(&[&a, &b], 0);
            let logits = scores_f32(&anchors, &keys) / self.cfg.temperature;
            let idx = Tensor::arange(n, (Kind::Int64, z1.device())) + (comm.rank() as i64 * n);
            let self_idx = Tensor::cat(&[&idx, &(&idx + global)], 0);
            let pos_idx = Tensor::cat(&[&(&idx + global), &idx], 0);
            let self_mask = self_idx.one_hot(2 * global).to_kind(Kind::Bool);
            let logits = logits.masked_fill(&self_mask, f64::from(f32::MIN) / 2.0);
            logits.cross_entropy_for_logits(&pos_idx)
        })
    }

    /// Cross-view InfoNCE: the positive of `a[i]` is `b[i]`, its negatives the
    /// other rows of `b` in the global batch (MoCo v3, CLIP, GRACE's inter-view
    /// term). With `symmetric`, the `b -> a` direction is averaged in (CLIP).
    pub fn cross_view(
        &self,
        a: &Tensor,
        b: &Tensor,
        symmetric: bool,
        comm: &dyn Collective,
    ) -> Tensor {
        full_precision(|| {
            let n = a.size()[0];
            let a = normalize(a);
            let b = normalize(b);
            let labels = Tensor::arange(n, (Kind::Int64, a.device())) + (comm.rank() as i64 * n);
            let gb = comm.all_gather_with_grad(&b);
            let ab = (scores_f32(&a, &gb) / self.cfg.temperature).cross_entropy_for_logits(&labels);
            if !symmetric {
                return ab;
            }
            let ga = comm.all_gather_with_grad(&a);
            let ba = (scores_f32(&b, &ga) / self.cfg.temperature).cross_entropy_for_logits(&labels);
            (ab + ba) / 2.0
        })
    }

    /// CLIP's symmetric cross-modal InfoNCE (Radford et al. 2021,
    /// arXiv:2103.00020): the positive of image `a[i]` is text `b[i]` and
    /// vice versa, logits `exp(logit_scale) * cos(a_i, b_j)` where
    /// `logit_scale` is a learnable scalar tensor (the log of the inverse
    /// temperature; the configured temperature is not used). The two
    /// directions (image -> text over the global texts, text -> image over
    /// the global images) are averaged. Clamping the scale is the caller's
    /// business (CLIP clamps `exp(logit_scale)` at 100).
    pub fn cross_modal(
        &self,
        a: &Tensor,
        b: &Tensor,
        logit_scale: &Tensor,
        comm: &dyn Collective,
    ) -> Tensor {
        full_precision(|| {
            let n = a.size()[0];
            let a = normalize(a);
            let b = normalize(b);
            let scale = logit_scale.to_kind(Kind::Float).exp();
            let labels = Tensor::arange(n, (Kind::Int64, a.device())) + (comm.rank() as i64 * n);
            let gb = comm.all_gather_with_grad(&b);
            let ga = comm.all_gather_with_grad(&a);
            let ab = (scores_f32(&a, &gb) * &scale).cross_entropy_for_logits(&labels);
            let ba = (scores_f32(&b, &ga) * &scale).cross_entropy_for_logits(&labels);
            (ab + ba) / 2.0
        })
    }

    /// InfoNCE against a queue of negatives (MoCo, He et al. 2019,
    /// arXiv:1911.05722): the positive of `q[i]` is `k[i]` (the momentum
    /// encoder's key, no gradient), its negatives every row of `queue`
    /// (`[K, d]`, keys of earlier batches). Logits `[n, 1 + K]`, label 0.
    pub fn with_queue(&self, q: &Tensor, k: &Tensor, queue: &Tensor) -> Tensor {
        full_precision(|| {
            let q = normalize(q);
            let k = normalize(&k.detach());
            let queue = normalize(&queue.detach());
            let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
            let neg = scores_f32(&q, &queue);
            let logits = Tensor::cat(&[pos, neg], 1) / self.cfg.temperature;
            let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
            logits.cross_entropy_for_logits(&labels)
        })
    }
}

/// SimCLR's two-view form: [`InfoNce::nt_xent`], logged with the mean cosine
/// similarity of the positive pairs (`positive_cosine`).
impl PairLoss for InfoNce {
    fn name(&self) -> &'static str {
        "nt_xent"
    }
    fn pair(&self, z1: &Tensor, z2: &Tensor, comm: &dyn Collective) -> LossOut {
        let loss = self.nt_xent(z1, z2, comm);
        let pos_cos = tch::no_grad(|| {
            Tensor::cosine_similarity(z1, z2, 1, 1e-8)
                .mean(Kind::Float)
                .double_value(&[])
        });
        LossOut {
            loss,
            terms: vec![("positive_cosine", pos_cos)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;

    // Reference numbers from PyTorch 2.11.0:
    //   z = F.normalize(torch.cat([z1, z2]), dim=1); sim = z @ z.T / t
    //   sim.fill_diagonal_(float('-inf'))
    //   target = torch.cat([torch.arange(n, 2*n), torch.arange(0, n)])
    //   F.cross_entropy(sim, target)            -> nt_xent
    //   a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1); l = a @ b.T / t
    //   F.cross_entropy(l, y); (F.cross_entropy(l, y) + F.cross_entropy(l.T, y)) / 2
    fn fixture() -> (Tensor, Tensor) {
        let z1 = Tensor::from_slice(&[
            1.0f32, 0.0, 0.5, 0.2, 1.0, -0.3, -0.5, 0.3, 1.0, 0.4, -0.8, 0.1,
        ])
        .reshape([4, 3]);
        let z2 = Tensor::from_slice(&[
            0.9f32, 0.1, 0.4, 0.0, 1.2, -0.1, -0.3, 0.5, 0.8, 0.5, -0.6, -0.2,
        ])
        .reshape([4, 3]);
        (z1, z2)
    }

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn nt_xent_matches_pytorch() {
        let (z1, z2) = fixture();
        let l05 =
            InfoNce::new(InfoNceConfig { temperature: 0.5 }).nt_xent(&z1, &z2, &SingleProcess);
        let l01 =
            InfoNce::new(InfoNceConfig { temperature: 0.1 }).nt_xent(&z1, &z2, &SingleProcess);
        assert!(
            (value(&l05) - 0.675_144_433_975_219_7).abs() < 1e-5,
            "{}",
            value(&l05)
        );
        assert!(
            (value(&l01) - 0.006_899_291_183_799_505).abs() < 1e-6,
            "{}",
            value(&l01)
        );
    }

    #[test]
    fn nt_xent_is_symmetric_in_the_views() {
        let (z1, z2) = fixture();
        let loss = InfoNce::new(InfoNceConfig::default());
        let d = value(&loss.nt_xent(&z1, &z2, &SingleProcess))
            - value(&loss.nt_xent(&z2, &z1, &SingleProcess));
        assert!(d.abs() < 1e-6);
    }

    #[test]
    fn cross_view_matches_pytorch() {
        let (z1, z2) = fixture();
        let loss = InfoNce::new(InfoNceConfig { temperature: 0.5 });
        let one = value(&loss.cross_view(&z1, &z2, false, &SingleProcess));
        let sym = value(&loss.cross_view(&z1, &z2, true, &SingleProcess));
        assert!((one - 0.387_130_081_653_594_97).abs() < 1e-5, "{one}");
        assert!((sym - 0.388_019_233_942_031_86).abs() < 1e-5, "{sym}");
    }

    // PyTorch 2.11.0 (z1, z2 above), CLIP's loss with a learnable scale:
    //   ls = torch.tensor(s, requires_grad=True); p = row order of z2
    //   a, b = F.normalize(z1, dim=1), F.normalize(z2[p], dim=1)
    //   l = ls.exp() * a @ b.T; y = torch.arange(4)
    //   loss = (F.cross_entropy(l, y) + F.cross_entropy(l.T, y)) / 2; loss.backward()
    //   s = log(2),      p = [0,1,2,3] -> 0.38801923394203186, ls.grad -0.5218252539634705
    //   s = log(1/0.07), p = [1,0,2,3] -> 6.5712199211120605,  ls.grad  6.568852424621582
    #[test]
    fn cross_modal_matches_pytorch_with_its_scale_gradient() {
        let (z1, z2) = fixture();
        let loss = InfoNce::new(InfoNceConfig::default());
        for (s, perm, want, want_grad) in [
            (
                2f64.ln(),
                [0i64, 1, 2, 3],
                0.388_019_233_942_031_86,
                -0.521_825_253_963_470_5,
            ),
            (
                (1.0f64 / 0.07).ln(),
                [1, 0, 2, 3],
                6.571_219_921_112_060_5,
                6.568_852_424_621_582,
            ),
        ] {
            let ls = Tensor::from(s as f32).set_requires_grad(true);
            let b = z2.index_select(0, &Tensor::from_slice(&perm));
            let l = loss.cross_modal(&z1, &b, &ls, &SingleProcess);
            l.backward();
            assert!((value(&l) - want).abs() < 1e-4, "{}", value(&l));
            let g = ls.grad().double_value(&[]);
            assert!((g - want_grad).abs() < 1e-4, "{g}");
        }
        // With exp(scale) = 1 / T it is the symmetric cross-view loss.
        let t = 0.5;
        let fixed = loss.cross_view(&z1, &z2, true, &SingleProcess);
        let learnable = loss.cross_modal(
            &z1,
            &z2,
            &Tensor::from((1.0 / t as f32).ln()),
            &SingleProcess,
        );
        assert!((value(&fixed) - value(&learnable)).abs() < 1e-6);
    }

    // PyTorch 2.11.0 (z1, z2 above; T = 0.2):
    //   queue = torch.tensor([0.3,-0.2,0.9, -1.0,0.4,0.1, 0.2,0.2,-0.7]).reshape(3,3)
    //   q, k, qu = F.normalize(z1, dim=1), F.normalize(z2, dim=1), F.normalize(queue, dim=1)
    //   logits = torch.cat([(q*k).sum(1, keepdim=True), q @ qu.T], 1) / 0.2
    //   F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))  -> 0.17841827869415283
    #[test]
    fn queue_matches_pytorch() {
        let (z1, z2) = fixture();
        let queue = Tensor::from_slice(&[0.3f32, -0.2, 0.9, -1.0, 0.4, 0.1, 0.2, 0.2, -0.7])
            .reshape([3, 3]);
        let l = InfoNce::new(InfoNceConfig { temperature: 0.2 }).with_queue(&z1, &z2, &queue);
        assert!(
            (value(&l) - 0.178_418_278_694_152_83).abs() < 1e-5,
            "{}",
            value(&l)
        );
    }

    /// Under bfloat16 autocast every form gives its float32 value (to float32
    /// rounding, < 1e-6). The logits left to autocast give a loss off by 3e-5
    /// here (and logits off by up to 0.02).
    #[test]
    fn autocast_does_not_change_the_loss() {
        use crate::loss::test_fixture::{bf16, gap};
        tch::manual_seed(7);
        let z1 = Tensor::randn([64, 128], (Kind::Float, tch::Device::Cpu));
        let z2 = &z1 + Tensor::randn([64, 128], (Kind::Float, tch::Device::Cpu)) * 0.5;
        let queue = Tensor::randn([256, 128], (Kind::Float, tch::Device::Cpu));
        let scale = Tensor::from((1.0f32 / 0.07).ln());
        let loss = InfoNce::new(InfoNceConfig { temperature: 0.1 });
        let all = || {
            [
                loss.nt_xent(&z1, &z2, &SingleProcess),
                loss.cross_view(&z1, &z2, true, &SingleProcess),
                loss.cross_modal(&z1, &z2, &scale, &SingleProcess),
                loss.with_queue(&z1, &z2, &queue),
            ]
        };
        let exact = all();
        let under = bf16(all);
        for (e, u) in exact.iter().zip(&under) {
            assert_eq!(u.kind(), Kind::Float);
            assert!(gap(e, u) < 1e-6, "{} vs {}", value(e), value(u));
        }
        // What autocast alone makes of the logits is far outside that bound.
        let naive = bf16(|| {
            let l = normalize(&z1).matmul(&normalize(&z2).tr()) / 0.1;
            l.cross_entropy_for_logits(&Tensor::arange(64, (Kind::Int64, tch::Device::Cpu)))
        });
        let want = loss.cross_view(&z1, &z2, false, &SingleProcess);
        assert!(gap(&naive, &want) > 1e-5, "{}", gap(&naive, &want));
    }

    /// The trait form is `nt_xent` itself, plus the mean cosine of the
    /// positive pairs (here computed row by row from the numbers).
    #[test]
    fn pair_form_is_nt_xent_with_the_positive_cosine() {
        let (z1, z2) = fixture();
        let loss = InfoNce::new(InfoNceConfig { temperature: 0.1 });
        let direct = value(&loss.nt_xent(&z1, &z2, &SingleProcess));
        let out = PairLoss::pair(&loss, &z1, &z2, &SingleProcess);
        assert_eq!(value(&out.loss).to_bits(), direct.to_bits());
        assert_eq!(loss.name(), "nt_xent");
        let flat = |t: &Tensor| Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap();
        let (a, b) = (flat(&z1), flat(&z2));
        let norm = |v: &[f32]| f64::from(v.iter().map(|x| x * x).sum::<f32>()).sqrt();
        let cos: f64 = a
            .chunks(3)
            .zip(b.chunks(3))
            .map(|(a, b)| {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                f64::from(dot) / (norm(a) * norm(b))
            })
            .sum::<f64>()
            / 4.0;
        assert_eq!(out.terms.len(), 1);
        assert_eq!(out.terms[0].0, "positive_cosine");
        assert!(
            (out.terms[0].1 - cos).abs() < 1e-6,
            "{:?} vs {cos}",
            out.terms
        );
        // Identity for the monitors.
        assert!(loss.monitored(z1.shallow_clone()).equal(&z1));
    }

    #[test]
    fn gradients_flow_and_pull_positives_together() {
        let (z1, z2) = fixture();
        let z1 = z1.set_requires_grad(true);
        let loss = InfoNce::new(InfoNceConfig::default()).nt_xent(&z1, &z2, &SingleProcess);
        loss.backward();
        let g = z1.grad();
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // A step against the gradient lowers the loss.
        let z1b = (&z1 - g * 0.5).detach();
        let after = InfoNce::new(InfoNceConfig::default()).nt_xent(&z1b, &z2, &SingleProcess);
        assert!(value(&after) < value(&loss));
    }
}
