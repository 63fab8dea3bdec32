//! The trainer tests' fixtures: toy data, a toy method that can be made
//! to fail, and evaluators whose monitor views are fixed.
use super::super::*;
use crate::checkpoint::CheckpointMeta;
use crate::head::{HeadConfig, MlpHead};
use crate::loss::{InfoNce, InfoNceConfig};
use crate::method::{Batch, LossOut, StepCtx};
use crate::optim::OptimConfig;
use crate::target::TargetKind;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tch::{nn, Kind};

pub(super) fn ckpt(step: u64, spe: u64, sps: u64) -> CheckpointMeta {
    CheckpointMeta {
        step,
        steps_per_epoch: spe,
        seed: 0,
        method: "m".into(),
        config: String::new(),
        git_commit: None,
        loss: 0.0,
        samples_per_step: sps,
    }
}

/// 64 distinct random points; views add seeded noise.
pub(super) struct Toy {
    points: Vec<f32>,
    dim: usize,
    batch: usize,
    seed: u64,
}

impl Toy {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let dim = 16;
        let points = (0..64 * dim).map(|_| rng.gen_range(-3.0..3.0)).collect();
        Self {
            points,
            dim,
            batch: 16,
            seed,
        }
    }
}

impl BatchSource for Toy {
    fn batches_per_epoch(&self) -> usize {
        64 / self.batch
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let mut order: Vec<usize> = (0..64).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed + epoch as u64));
        Box::new((start..self.batches_per_epoch()).map(move |b| {
            let mut views = Vec::new();
            for v in 0..2u64 {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(self.seed ^ ((epoch * 1000 + b) as u64 * 10 + v));
                let data: Vec<f32> = order[b * self.batch..(b + 1) * self.batch]
                    .iter()
                    .flat_map(|&i| self.points[i * self.dim..(i + 1) * self.dim].to_vec())
                    .map(|x| x + rng.gen_range(-0.5..0.5))
                    .collect();
                views.push(Tensor::from_slice(&data).reshape([self.batch as i64, self.dim as i64]));
            }
            Ok(Batch { views })
        }))
    }
}

pub(super) struct ToyMethod {
    vs: nn::VarStore,
    enc: nn::Linear,
    head: MlpHead,
    loss: InfoNce,
    pub(super) poison_at: Option<u64>,
    /// Panic at this step as tch does when the GPU runs out of memory.
    pub(super) oom_at: Option<u64>,
    /// What [`Method::target`] answers.
    pub(super) target: TargetKind,
}

impl ToyMethod {
    /// Weights from our own seeded generator: libtorch's global one is
    /// shared by concurrently running tests.
    pub(super) fn new(seed: u64) -> Self {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let enc = nn::linear(vs.root() / "enc", 16, 8, Default::default());
        let head = MlpHead::new(
            &(vs.root() / "head"),
            8,
            &HeadConfig {
                hidden_dim: 16,
                out_dim: 8,
                layers: 2,
                batch_norm: true,
                last_batch_norm: false,
            },
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (name, mut v) in vars {
                if name.contains("running") {
                    continue;
                }
                let vals: Vec<f32> = (0..v.numel()).map(|_| rng.gen_range(-0.4..0.4)).collect();
                v.copy_(&Tensor::from_slice(&vals).reshape(v.size()));
            }
        });
        Self {
            vs,
            enc,
            head,
            loss: InfoNce::new(InfoNceConfig { temperature: 0.5 }),
            poison_at: None,
            oom_at: None,
            target: TargetKind::OtherView,
        }
    }
}

impl Method for ToyMethod {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn target(&self) -> TargetKind {
        self.target
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let z1 = batch.views[0].apply(&self.enc).apply_t(&self.head, true);
        let z2 = batch.views[1].apply(&self.enc).apply_t(&self.head, true);
        let mut loss = self.loss.nt_xent(&z1, &z2, ctx.comm);
        if self.oom_at == Some(ctx.step) {
            panic!(
                "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. \
                 Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.80 GiB\n\
                 Exception raised from malloc at c10/cuda/CUDACachingAllocator.cpp\")"
            );
        }
        if self.poison_at == Some(ctx.step) {
            loss *= f64::NAN;
        }
        Ok(LossOut {
            loss,
            terms: vec![],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.enc)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs).apply_t(&self.head, false)
    }
}

pub(super) fn config(epochs: usize) -> TrainerConfig {
    TrainerConfig {
        epochs,
        seed: 3,
        optimizer: OptimConfig {
            lr: 0.5,
            ..Default::default()
        },
        checkpoint_every: 3,
        ..Default::default()
    }
}

pub(super) fn step_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Monitor views that are one point: every epoch is flagged.
pub(super) struct Collapsed;

impl Collapsed {
    pub(super) fn views() -> (Tensor, Tensor) {
        let z = Tensor::ones([64, 8], (Kind::Float, tch::Device::Cpu));
        (z.shallow_clone(), z)
    }
}

impl EpochEvaluator<ToyMethod> for Collapsed {
    fn evaluate(&mut self, _: &ToyMethod, _: usize) -> Result<EpochEval> {
        Ok(EpochEval {
            metrics: vec![],
            views: Some(Self::views()),
        })
    }
}

/// Monitor views of rank `init_rank` before training and `rank` after
/// every epoch (64 x 32, fixed by a seed).
pub(super) struct Ranked {
    pub(super) init_rank: i64,
    pub(super) rank: i64,
    pub(super) init_calls: usize,
}

impl Ranked {
    pub(super) fn views(rank: i64) -> (Tensor, Tensor) {
        let mut g = crate::monitor::testing::TestRng::new(rank as u64);
        let z = g.randn(&[64, rank]).matmul(&g.randn(&[rank, 32]));
        (z.shallow_clone(), z)
    }
}

impl EpochEvaluator<ToyMethod> for Ranked {
    fn evaluate(&mut self, _: &ToyMethod, _: usize) -> Result<EpochEval> {
        Ok(EpochEval {
            metrics: vec![],
            views: Some(Self::views(self.rank)),
        })
    }
    fn monitor_views(&mut self, _: &ToyMethod) -> Result<Option<(Tensor, Tensor)>> {
        self.init_calls += 1;
        Ok(Some(Self::views(self.init_rank)))
    }
}
