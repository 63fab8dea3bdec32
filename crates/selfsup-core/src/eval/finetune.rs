//! Label efficiency, whatever the modality: for each fraction of the
//! labels and each seed, a class-stratified labelled subset is drawn
//! ([`stratified`]); the modality trains two models on it with the same
//! subset, batches, steps, optimiser and schedule ([`FinetuneConfig`]): the
//! checkpoint's encoder plus a linear head (the pre-trained [`Arm`]) and
//! the same network freshly initialised (the scratch arm), and scores each
//! on its test samples. [`finetune`] runs the loop over fractions x seeds x
//! arms through the modality's [`FineTune`] and returns one [`Row`] per
//! fraction (mean +- sample std over seeds: [`mean_std`]).
use crate::optim::{OptimConfig, OptimKind};
use crate::schedule::LrSchedule;
use crate::trainer::{non_negative, positive, unit_interval};
use crate::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;

/// `[eval.finetune]`: label efficiency. For every fraction and seed, a
/// labelled subset is drawn stratified by class from the samples the
/// modality offers for training (vision: the whole training split, not
/// `[data] train_images`; graphs: the training nodes); the checkpoint's
/// encoder plus a linear head, and the same network freshly initialised,
/// are each trained end to end on it with the same steps, batches,
/// optimiser, schedule and augmentation, then scored on the test samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Fractions of the training samples' labels, each in (0, 1] (default
    /// 0.01, 0.1, 1.0). A fraction f draws round(f x N) samples, at most
    /// `max_images`: on Fashion-MNIST's 60 000, 1 % is 600 images and 100 %
    /// is the cap (10 000 images, 1 000 per class).
    pub fractions: Vec<f64>,
    /// Seeds per fraction (default 3): each draws its own subset, head and
    /// batch order, shared by the two arms; reported as mean +- std.
    pub seeds: usize,
    /// Optimisation steps of every model, whatever the fraction (default
    /// 100): the subset is cycled, reshuffled every pass.
    pub steps: usize,
    /// Labelled samples per step (default 128; the subset's size when smaller).
    pub batch_size: usize,
    /// The most labelled samples one fraction uses (default 10 000; the key
    /// keeps its first modality's name, it counts nodes on a graph).
    pub max_images: usize,
    /// Optimiser (default SGD, lr 0.1 for a batch of 256, scaled linearly,
    /// momentum 0.9, weight decay 5e-4 off biases and norms; on graphs `lr`
    /// is the learning rate of one step, not scaled by the batch).
    pub optimizer: OptimConfig,
    /// Learning-rate schedule; `warmup_epochs` counts passes over the
    /// labelled subset (default: no warm-up, cosine to 0).
    pub schedule: LrSchedule,
    /// The modality's light augmentation of the training samples (default
    /// true). Images: a random resized crop of 64-100 % of the area, aspect
    /// 3/4-4/3, and a horizontal flip with probability 0.5. Graphs: every
    /// step sees the graph with 20 % of its edges dropped and 20 % of its
    /// feature columns masked. false: the samples as they are.
    pub augment: bool,
    /// Which samples score every model (default `"test"`). `"validation"`
    /// holds the modality's validation part out of the training samples
    /// (vision: `[eval] validation_fraction` of the training split, drawn
    /// with `[eval] split_seed`; graphs: the validation nodes), draws the
    /// labelled subsets from the rest and scores on it: the setting for
    /// choosing steps, learning rate or schedule without reading the test
    /// split. A modality without a validation part refuses it.
    pub scored_on: ScoredOn,
}

/// `[eval.finetune] scored_on`: the samples fine-tuned models are scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoredOn {
    /// The test split, once the settings are chosen.
    #[default]
    Test,
    /// A validation part of the training samples, for choosing the settings.
    Validation,
}

impl ScoredOn {
    /// `"test"` or `"validation"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Validation => "validation",
        }
    }
}

/// `[eval.finetune]` as given over a modality's own `defaults`: a key left
/// out keeps the default's value (inside `optimizer` and `schedule` too,
/// table by table), so `steps = 20` alone does not switch a modality's
/// AdamW to core's SGD. Unknown keys and wrong types are refused by name.
pub fn settings_over(
    defaults: &FinetuneConfig,
    given: toml::Table,
) -> std::result::Result<FinetuneConfig, String> {
    fn overlay(base: &mut toml::Table, given: toml::Table) {
        for (key, value) in given {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(b)), toml::Value::Table(g)) => overlay(b, g),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    let mut base = match toml::Value::try_from(defaults) {
        Ok(toml::Value::Table(t)) => t,
        Ok(_) => toml::Table::new(),
        Err(e) => return Err(format!("[eval.finetune]: the defaults: {e}")),
    };
    overlay(&mut base, given);
    toml::Value::Table(base)
        .try_into()
        .map_err(|e| format!("[eval.finetune]: {e}"))
}

/// The most seeds per fraction.
pub const MAX_FINETUNE_SEEDS: usize = 100;

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            fractions: vec![0.01, 0.1, 1.0],
            seeds: 3,
            steps: 100,
            batch_size: 128,
            max_images: 10_000,
            optimizer: OptimConfig {
                kind: OptimKind::Sgd,
                lr: 0.1,
                weight_decay: 5e-4,
                momentum: 0.9,
                ..OptimConfig::default()
            },
            schedule: LrSchedule {
                warmup_epochs: 0.0,
                ..LrSchedule::default()
            },
            augment: true,
            scored_on: ScoredOn::Test,
        }
    }
}

impl FinetuneConfig {
    /// Whether every setting is the default (then stored configs leave the
    /// table out, so configs written before it existed compare equal).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The ranges, as a message naming `[eval.finetune]` and the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        const T: &str = "[eval.finetune]";
        if self.fractions.is_empty() {
            return Err(format!(
                "{T} fractions = []: give at least one fraction in (0, 1]"
            ));
        }
        if let Some(f) = self
            .fractions
            .iter()
            .find(|f| !(f.is_finite() && **f > 0.0 && **f <= 1.0))
        {
            return Err(format!(
                "{T} fractions: {f} is not a fraction of the labels in (0, 1] (0.01 is 1 %)"
            ));
        }
        if !(1..=MAX_FINETUNE_SEEDS).contains(&self.seeds) {
            return Err(format!(
                "{T} seeds = {}: give 1 to {MAX_FINETUNE_SEEDS}",
                self.seeds
            ));
        }
        if self.steps == 0 {
            return Err(format!("{T} steps = 0 trains nothing: give at least 1"));
        }
        if self.batch_size < 2 {
            return Err(format!(
                "{T} batch_size = {}: give at least 2 labelled samples per step (batch norm in \
                 training mode needs 2)",
                self.batch_size
            ));
        }
        if self.max_images < 2 {
            return Err(format!(
                "{T} max_images = {}: give at least 2 labelled samples",
                self.max_images
            ));
        }
        let (o, s) = (&self.optimizer, &self.schedule);
        positive(&format!("{T} optimizer.lr"), o.lr)?;
        non_negative(&format!("{T} optimizer.weight_decay"), o.weight_decay)?;
        unit_interval(&format!("{T} optimizer.momentum"), o.momentum)?;
        unit_interval(&format!("{T} optimizer.betas[0]"), o.betas.0)?;
        unit_interval(&format!("{T} optimizer.betas[1]"), o.betas.1)?;
        positive(&format!("{T} optimizer.eps"), o.eps)?;
        positive(
            &format!("{T} optimizer.trust_coefficient"),
            o.trust_coefficient,
        )?;
        non_negative(&format!("{T} schedule.warmup_epochs"), s.warmup_epochs)?;
        non_negative(&format!("{T} schedule.final_lr_ratio"), s.final_lr_ratio)
    }
}

/// `fraction` of the samples of `labels`, stratified: `total = round(fraction
/// x N)` capped at `cap`, each class (in increasing label order) its share
/// `round(total x n_c / N)` (at least 1, at most n_c), drawn by `seed`;
/// sorted indices. With one seed, a smaller fraction's subset lies inside a
/// larger one's (every class is shuffled the same way whatever the fraction).
pub fn stratified(labels: &[i64], fraction: f64, cap: usize, seed: u64) -> Vec<usize> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l.max(0)).or_default().push(i);
    }
    let n = labels.len().max(1) as f64;
    let total = ((fraction * n).round() as usize).min(cap) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = Vec::new();
    for members in by_class.values_mut() {
        let share = (total * members.len() as f64 / n).round() as usize;
        members.shuffle(&mut rng);
        picked.extend(members.iter().take(share.clamp(1, members.len())));
    }
    picked.sort_unstable();
    picked
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = match xs.len() {
        0 | 1 => 0.0,
        k => xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64,
    };
    (mean, var.sqrt())
}

/// What every arm's training loop records of its losses: the mean of the
/// first and of the last tenth of the steps (at least one step each), and a
/// non-finite loss stopped as divergence, naming the key to lower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTrace {
    steps: usize,
    tenth: usize,
    /// Mean loss of the first tenth of the steps.
    pub first: f64,
    /// Mean loss of the last tenth of the steps.
    pub last: f64,
}

impl LossTrace {
    /// A trace of a loop of `steps` steps.
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            tenth: (steps / 10).max(1),
            first: 0.0,
            last: 0.0,
        }
    }

    /// Records step `step`'s loss; a NaN or infinite loss is an error.
    pub fn record(&mut self, step: usize, loss: f64) -> Result<()> {
        if !loss.is_finite() {
            return Err(crate::Error::Config(format!(
                "fine-tuning diverged at step {step} (loss {loss}): lower [eval.finetune] optimizer.lr"
            )));
        }
        let share = loss / self.tenth as f64;
        if step < self.tenth {
            self.first += share;
        }
        if step + self.tenth >= self.steps {
            self.last += share;
        }
        Ok(())
    }
}

/// The order one arm draws its labelled samples in: the subset cycled,
/// reshuffled at the start of every pass by a generator seeded with `seed`
/// (which the modality may also draw its augmentation from, [`SubsetOrder::rng`]).
/// It keeps an FNV-1a digest of everything drawn (both arms of a seed must
/// end with the same one) and which samples were drawn.
pub struct SubsetOrder {
    order: Vec<usize>,
    pos: usize,
    rng: ChaCha8Rng,
    digest: u64,
    drawn: Vec<bool>,
}

impl SubsetOrder {
    /// `subset`'s indices into `samples` samples (an index beyond is drawn
    /// but not counted by [`SubsetOrder::distinct`]).
    pub fn new(subset: &[usize], samples: usize, seed: u64) -> Self {
        Self {
            order: subset.to_vec(),
            pos: subset.len(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            digest: 0xcbf2_9ce4_8422_2325,
            drawn: vec![false; samples],
        }
    }

    /// The next sample (a fresh shuffle when a pass ends); `None` for an
    /// empty subset.
    pub fn next_index(&mut self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        if self.pos == self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        let i = self.order[self.pos];
        self.pos += 1;
        self.fold(i as u64);
        if let Some(flag) = self.drawn.get_mut(i) {
            *flag = true;
        }
        Some(i)
    }

    /// The next `batch` samples (fewer only for an empty subset).
    pub fn next_batch(&mut self, batch: usize) -> Vec<usize> {
        (0..batch).map_while(|_| self.next_index()).collect()
    }

    /// Folds `x` into the digest (what else decides a batch: a window length).
    pub fn fold(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The generator of the order, for augmentation drawn in the same stream.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// The digest as 16 hex digits.
    pub fn digest(&self) -> String {
        format!("{:016x}", self.digest)
    }

    /// How many distinct samples were drawn.
    pub fn distinct(&self) -> usize {
        self.drawn.iter().filter(|&&f| f).count()
    }
}

/// Which of the two models of a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The checkpoint's encoder plus a fresh linear head.
    Pretrained,
    /// The same network, freshly initialised.
    Scratch,
}

impl Arm {
    /// "pre-trained" / "from scratch".
    pub fn label(self) -> &'static str {
        match self {
            Arm::Pretrained => "pre-trained",
            Arm::Scratch => "from scratch",
        }
    }
}

/// One seed of one fraction, as the modality trains it (both arms get the
/// same trial).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial<'a> {
    /// The fraction of the labels.
    pub fraction: f64,
    /// The seed's number, 0-based.
    pub seed_index: u64,
    /// The labelled samples (sorted indices into the modality's labels).
    pub labelled: &'a [usize],
    /// The seed the subset was drawn with: the modality derives its batch
    /// order and augmentation from it.
    pub draw_seed: u64,
    /// The seed of the freshly initialised weights (the head of both arms,
    /// the encoder of the scratch arm): the run's seed plus `seed_index`.
    pub init_seed: u64,
}

/// What one trained model reports: its test score and a progress line.
pub trait Scored {
    /// The test score in `[0, 1]` (accuracy) averaged into the row.
    fn score(&self) -> f64;
    /// What the progress line says about it ("final loss 0.312, test
    /// top-1 71.20%").
    fn describe(&self) -> String {
        format!("test accuracy {:.2}%", self.score() * 100.0)
    }
}

impl Scored for f64 {
    fn score(&self) -> f64 {
        *self
    }
}

/// What a modality implements for [`finetune`]: train one arm on a trial's
/// labelled subset and score it on its test samples.
pub trait FineTune {
    /// The record of one trained model (serialized into the rows).
    type Run: Scored + Serialize;
    /// The label of every sample subsets are drawn from (class ids).
    fn labels(&self) -> &[i64];
    /// Trains `arm` on `trial` and scores it.
    fn run(&self, arm: Arm, trial: &Trial<'_>) -> Result<Self::Run>;
    /// Which samples [`FineTune::run`] scores on (default: the test ones;
    /// [`finetune`] refuses `[eval.finetune] scored_on` when it differs).
    fn scored_on(&self) -> ScoredOn {
        ScoredOn::Test
    }
}

/// Both arms at one fraction.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<R> {
    pub fraction: f64,
    /// What a labelled sample is ("images", "nodes"): the key of
    /// `labelled` in the JSON and the noun of [`Row::line`].
    pub unit: &'static str,
    /// Labelled samples of each seed's subset.
    pub labelled: Vec<usize>,
    /// Every seed's pre-trained and from-scratch run.
    pub pretrained: Vec<R>,
    pub scratch: Vec<R>,
}

impl<R: Serialize> Serialize for Row<R> {
    /// `{"fraction", <unit>: [sizes], "pretrained", "scratch"}`.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("fraction", &self.fraction)?;
        m.serialize_entry(self.unit, &self.labelled)?;
        m.serialize_entry("pretrained", &self.pretrained)?;
        m.serialize_entry("scratch", &self.scratch)?;
        m.end()
    }
}

impl<R: Scored> Row<R> {
    /// Mean and sample std of the pre-trained and of the scratch scores.
    pub fn summary(&self) -> ((f64, f64), (f64, f64)) {
        let scores = |runs: &[R]| runs.iter().map(Scored::score).collect::<Vec<_>>();
        (
            mean_std(&scores(&self.pretrained)),
            mean_std(&scores(&self.scratch)),
        )
    }

    /// "fine-tuning on 1% of the labels (600 images, 3 seeds): pre-trained
    /// 71.2 ± 0.8 %, from scratch 55.1 ± 1.9 %, gain +16.1 points".
    pub fn line(&self) -> String {
        let ((p, ps), (s, ss)) = self.summary();
        let n = self.labelled.first().copied().unwrap_or(0);
        format!(
            "fine-tuning on {}% of the labels ({n} {}, {} seed{}): pre-trained {:.1} ± {:.1} %, \
             from scratch {:.1} ± {:.1} %, gain {:+.1} points",
            self.fraction * 100.0,
            self.unit,
            self.pretrained.len(),
            if self.pretrained.len() == 1 { "" } else { "s" },
            p * 100.0,
            ps * 100.0,
            s * 100.0,
            ss * 100.0,
            (p - s) * 100.0
        )
    }
}

/// Every fraction x seed x arm of `cfg` through `model`: seed `s` of
/// fraction `f` draws its subset ([`stratified`], at most `cfg.max_images`)
/// with `(base_seed + s) XOR rotl(bits(f), 17)`, and both arms train on it
/// with weights initialised from `base_seed + s`; `unit` names a sample;
/// `progress` hears one line per model.
pub fn finetune<F: FineTune>(
    model: &F,
    cfg: &FinetuneConfig,
    base_seed: u64,
    unit: &'static str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row<F::Run>>> {
    cfg.validate().map_err(crate::Error::Config)?;
    if model.scored_on() != cfg.scored_on {
        return Err(crate::Error::Config(format!(
            "[eval.finetune] scored_on = \"{}\": this modality's fine-tuning scores on its {} \
             samples only; remove the key (or give \"{}\")",
            cfg.scored_on.as_str(),
            model.scored_on().as_str(),
            model.scored_on().as_str()
        )));
    }
    let mut rows = Vec::with_capacity(cfg.fractions.len());
    for &fraction in &cfg.fractions {
        let mut row = Row {
            fraction,
            unit,
            labelled: Vec::new(),
            pretrained: Vec::new(),
            scratch: Vec::new(),
        };
        for s in 0..cfg.seeds as u64 {
            let draw_seed = base_seed.wrapping_add(s) ^ fraction.to_bits().rotate_left(17);
            let subset = stratified(model.labels(), fraction, cfg.max_images, draw_seed);
            let trial = Trial {
                fraction,
                seed_index: s,
                labelled: &subset,
                draw_seed,
                init_seed: base_seed.wrapping_add(s),
            };
            for arm in [Arm::Pretrained, Arm::Scratch] {
                let run = model.run(arm, &trial)?;
                progress(&format!(
                    "  {}% labels, seed {s}, {}: {}",
                    fraction * 100.0,
                    arm.label(),
                    run.describe()
                ));
                match arm {
                    Arm::Pretrained => row.pretrained.push(run),
                    Arm::Scratch => row.scratch.push(run),
                }
            }
            row.labelled.push(subset.len());
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
#[path = "finetune/tests.rs"]
mod tests;
