//! `selfsup eval finetune` on a BERT (MLM) checkpoint: core's label-efficiency
//! protocol ([`selfsup_core::eval::finetune`]: stratified fractions, seeds,
//! both arms, rows) on the labelled document sets text already probes
//! (`[[eval.downstream]]`: SpamAssassin spam / ham, Brown genre).
//!
//! Each set is tokenised and split exactly as the downstream probe splits it
//! (the same sequences of every document, 20 % of the documents held out
//! for the test by a hash of the document id and `[trainer] seed`); the
//! fractions are fractions of the training sequences. With `[eval.finetune]
//! scored_on = "validation"` the test documents are left unread and 20 % of
//! the training documents (another hash) are held out and scored instead,
//! for choosing the settings.
//!
//! For every fraction and seed, the checkpoint's BERT plus a linear head on
//! the mean-pooled tokens (the probe's pooling) is trained end to end (the
//! pre-trained arm), and so is the same network freshly initialised (the
//! scratch arm), on the same sequences in the same order with the same head
//! initialisation, steps, optimiser and schedule (`[eval.finetune]`, text's
//! defaults: [`default_settings`]). Dropout is on while training, off for
//! scoring. The MLM prediction head (`cls.*`) is not part of the classifier
//! and stays frozen. `[eval.finetune] max_images` caps the labelled
//! sequences of a fraction. The rows go to `finetune.json` beside the
//! checkpoint.
use crate::config::{check_settings, names};
use crate::config::{DownstreamConfig, TextRunConfig};
use crate::corpus::is_held_out;
use crate::eval::{examples, LabelledSet, PROBE_TEST_FRACTION};
use crate::methods::Mlm;
use crate::model::BertConfig;
use crate::pretrain::labelled_set;
use crate::tokenizer::TextTokenizer;
use selfsup_core::eval::finetune::{
    self as protocol, Arm, FineTune, FinetuneConfig, LossTrace, Scored, ScoredOn, SubsetOrder,
    Trial,
};
use selfsup_core::method::Method;
use selfsup_core::optim::Params;
use selfsup_core::run::seed_random_weights;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The evaluation's name in `selfsup eval`.
pub const FINETUNE: &str = "finetune";

/// The table `selfsup eval finetune` writes beside the checkpoint.
pub const FINETUNE_FILE: &str = "finetune.json";

/// Test sequences scored per forward pass.
const TEST_CHUNK: usize = 128;

/// The prefix of the classifier's variables (transformers'
/// `BertForSequenceClassification` name).
const HEAD: &str = "classifier";

/// One labelled set as fixed-length sequences, split by document as the
/// downstream probe splits it: the training sequences (what fractions are
/// drawn from) and the scored ones (the test sequences, or a validation
/// part of the training documents).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSequences {
    pub name: String,
    pub classes: usize,
    pub max_len: usize,
    /// Training sequences, row-major `[n, max_len]` token ids.
    pub train_ids: Vec<i64>,
    pub train_labels: Vec<i64>,
    /// Scored sequences, row-major `[n, max_len]`: the test split, or with
    /// [`ScoredOn::Validation`] the validation part.
    pub test_ids: Vec<i64>,
    pub test_labels: Vec<i64>,
    /// Which of the two `test_*` hold.
    pub scored_on: ScoredOn,
}

impl LabelledSequences {
    /// `set` tokenised as the probe does (`chunks_per_doc` sequences of
    /// `max_len` per document; 20 % of the documents held out as the test
    /// by `seed`). [`ScoredOn::Validation`]: the test documents are
    /// dropped, and 20 % of the others (held out by `seed + 1`) are scored.
    /// Fewer than 2 classes, or no document on one side, is an error naming
    /// the set.
    pub fn new(
        set: &LabelledSet,
        tok: &TextTokenizer,
        max_len: usize,
        seed: u64,
        scored_on: ScoredOn,
    ) -> Result<Self> {
        let (ex, classes) = match scored_on {
            ScoredOn::Test => examples(set, tok, max_len, seed)?,
            ScoredOn::Validation => {
                let train = LabelledSet {
                    name: set.name.clone(),
                    docs: set
                        .docs
                        .iter()
                        .filter(|d| !is_held_out(&d.id, PROBE_TEST_FRACTION, seed))
                        .cloned()
                        .collect(),
                    chunks_per_doc: set.chunks_per_doc,
                };
                examples(&train, tok, max_len, seed.wrapping_add(1))?
            }
        };
        let mut out = Self {
            name: set.name.clone(),
            classes,
            max_len,
            train_ids: Vec::new(),
            train_labels: Vec::new(),
            test_ids: Vec::new(),
            test_labels: Vec::new(),
            scored_on,
        };
        for (r, (&label, &test)) in ex.labels.iter().zip(&ex.test).enumerate() {
            let Some(row) = ex.ids.get(r * max_len..(r + 1) * max_len) else {
                break;
            };
            let (ids, labels) = match test {
                true => (&mut out.test_ids, &mut out.test_labels),
                false => (&mut out.train_ids, &mut out.train_labels),
            };
            ids.extend_from_slice(row);
            labels.push(label);
        }
        if classes < 2 || out.train_labels.len() < 2 || out.test_labels.is_empty() {
            return Err(Error::Data(format!(
                "{}: fine-tuning needs labelled documents of at least 2 classes on both sides of \
                 the split; it has {classes} class(es), {} training and {} {} sequences (give \
                 a labelled format such as brown or spam-assassin, with more documents)",
                set.name,
                out.train_labels.len(),
                out.test_labels.len(),
                scored_on.as_str()
            )));
        }
        Ok(out)
    }

    /// Training sequences.
    pub fn train_len(&self) -> usize {
        self.train_labels.len()
    }

    /// Scored sequences (test or validation).
    pub fn test_len(&self) -> usize {
        self.test_labels.len()
    }

    /// Rows `rows` of `ids` (`[n, max_len]`) as a `[rows, max_len]` tensor.
    fn rows(&self, ids: &[i64], rows: &[usize]) -> Tensor {
        let l = self.max_len;
        let mut flat = Vec::with_capacity(rows.len() * l);
        for &r in rows {
            if let Some(row) = ids.get(r * l..(r + 1) * l) {
                flat.extend_from_slice(row);
            }
        }
        let n = (flat.len() / l.max(1)) as i64;
        Tensor::from_slice(&flat).view([n, l as i64])
    }
}

/// A BERT of the checkpoint's architecture and a linear head on its
/// mean-pooled tokens, in one var store (`bert.*` and `cls.*` as the MLM
/// names them, `classifier.*`). The MLM head `cls.*` is frozen.
pub struct Net {
    mlm: Mlm,
    head: nn::Linear,
}

impl Net {
    /// Freshly initialised from libtorch's generator as it stands (BERT,
    /// then the head).
    pub fn new(bert: &BertConfig, classes: i64, device: Device) -> Self {
        let mlm = Mlm::new(bert, device);
        let head = nn::linear(
            mlm.var_store().root() / HEAD,
            bert.hidden,
            classes,
            Default::default(),
        );
        for (name, t) in mlm.var_store().variables() {
            if name.starts_with("cls.") {
                let _ = t.set_requires_grad(false);
            }
        }
        Self { mlm, head }
    }

    /// The var store (BERT, its frozen MLM head, the classifier).
    pub fn var_store(&self) -> &nn::VarStore {
        self.mlm.var_store()
    }

    /// Overwrites every variable but the classifier with `pretrained`'s
    /// (each must be there with its shape).
    pub fn load_encoder(&mut self, pretrained: &Mlm) -> Result<()> {
        let src: HashMap<String, Tensor> = pretrained.var_store().variables().into_iter().collect();
        let prefix = format!("{HEAD}.");
        tch::no_grad(|| {
            for (name, mut dst) in self.var_store().variables() {
                if name.starts_with(&prefix) {
                    continue;
                }
                match src.get(&name) {
                    Some(s) if s.size() == dst.size() => {
                        dst.copy_(&s.to_device(dst.device()));
                    }
                    other => {
                        return Err(Error::Config(format!(
                            "the checkpoint's BERT has no variable {name} of shape {:?} (found \
                             {:?})",
                            dst.size(),
                            other.map(|t| t.size())
                        )))
                    }
                }
            }
            Ok(())
        })
    }

    /// Class logits `[B, classes]` of token ids `[B, L]`.
    pub fn logits(&self, ids: &Tensor, train: bool) -> Tensor {
        let ids = ids.to_device(self.var_store().device());
        self.mlm
            .pooled(&ids, train)
            .to_kind(Kind::Float)
            .apply(&self.head)
    }

    /// Accuracy on the scored sequences of `data`, dropout off.
    pub fn accuracy(&self, data: &LabelledSequences) -> f64 {
        let n = data.test_len();
        let mut correct = 0i64;
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(TEST_CHUNK) {
            let xs = data.rows(&data.test_ids, chunk);
            let y: Vec<i64> = chunk.iter().map(|&r| data.test_labels[r]).collect();
            let pred = tch::no_grad(|| self.logits(&xs, false))
                .argmax(1, false)
                .to_device(Device::Cpu);
            correct += pred
                .eq_tensor(&Tensor::from_slice(&y))
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        correct as f64 / n.max(1) as f64
    }
}

/// What one model was trained on and how it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceRun {
    /// Accuracy on the scored sequences (test, or the validation part).
    pub accuracy: f64,
    /// Mean loss of the first and of the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Optimisation steps, and labelled sequences (with repeats) trained on.
    pub steps: usize,
    pub sequences_seen: usize,
    /// Distinct labelled sequences trained on.
    pub distinct_sequences: usize,
    /// FNV-1a of the sequence of row indices trained on (both arms of a
    /// seed see the same rows in the same order, so the same digest).
    pub batches_digest: String,
}

impl Scored for SequenceRun {
    fn score(&self) -> f64 {
        self.accuracy
    }

    fn describe(&self) -> String {
        format!(
            "final loss {:.3}, accuracy {:.2}%",
            self.last_loss,
            self.accuracy * 100.0
        )
    }
}

/// One training run of `net` on the training sequences `subset` of `data`:
/// `ft.steps` steps of `min(batch_size, |subset|)` sequences, the subset
/// cycled in an order drawn by `seed` (reshuffled every pass); `accuracy`
/// is left at 0 for the caller to score.
pub fn train(
    net: &Net,
    data: &LabelledSequences,
    subset: &[usize],
    ft: &FinetuneConfig,
    seed: u64,
) -> Result<SequenceRun> {
    if subset.len() < 2 {
        return Err(Error::Data(format!(
            "{}: fine-tuning needs at least 2 labelled sequences, the fraction gives {}",
            data.name,
            subset.len()
        )));
    }
    if let Some(bad) = subset.iter().find(|&&i| i >= data.train_len()) {
        return Err(Error::Data(format!(
            "{}: labelled sequence {bad} is not one of the {} training sequences",
            data.name,
            data.train_len()
        )));
    }
    let device = net.var_store().device();
    let batch = ft.batch_size.min(subset.len());
    let steps_per_pass = subset.len().div_ceil(batch) as u64;
    let warmup = (ft.schedule.warmup_epochs * steps_per_pass as f64).round() as u64;
    let peak = ft.optimizer.scaled_lr(batch);
    let mut params = Params::of(net.var_store());
    let mut opt = ft.optimizer.build(&params);
    let mut draw = SubsetOrder::new(subset, data.train_len(), seed);
    let mut trace = LossTrace::new(ft.steps);
    for step in 0..ft.steps {
        let idx = draw.next_batch(batch);
        let xs = data.rows(&data.train_ids, &idx);
        let y: Vec<i64> = idx.iter().map(|&i| data.train_labels[i]).collect();
        let y = Tensor::from_slice(&y).to_device(device);
        params.zero_grad();
        let loss = net.logits(&xs, true).cross_entropy_for_logits(&y);
        loss.backward();
        let lr = ft.schedule.lr(peak, step as u64, ft.steps as u64, warmup);
        opt.step(&params, lr);
        trace.record(step, loss.double_value(&[]))?;
    }
    Ok(SequenceRun {
        accuracy: 0.0,
        first_loss: trace.first,
        last_loss: trace.last,
        steps: ft.steps,
        sequences_seen: ft.steps * batch,
        distinct_sequences: draw.distinct(),
        batches_digest: draw.digest(),
    })
}

/// Text's side of the protocol on one labelled set.
pub struct Documents<'a> {
    /// The checkpoint's model (the pre-trained arm starts from its weights).
    pub pretrained: &'a Mlm,
    pub data: &'a LabelledSequences,
    pub settings: &'a FinetuneConfig,
    pub device: Device,
}

impl FineTune for Documents<'_> {
    type Run = SequenceRun;

    fn labels(&self) -> &[i64] {
        &self.data.train_labels
    }

    fn scored_on(&self) -> ScoredOn {
        self.data.scored_on
    }

    /// Weights of both arms from `trial.init_seed` (the same head draw), the
    /// order of the sequences from `trial.draw_seed ^ 1`.
    fn run(&self, arm: Arm, trial: &Trial<'_>) -> Result<SequenceRun> {
        seed_random_weights(trial.init_seed);
        let mut net = Net::new(
            &self.pretrained.bert.cfg,
            self.data.classes as i64,
            self.device,
        );
        if arm == Arm::Pretrained {
            net.load_encoder(self.pretrained)?;
        }
        let mut run = train(
            &net,
            self.data,
            trial.labelled,
            self.settings,
            trial.draw_seed ^ 1,
        )?;
        run.accuracy = net.accuracy(self.data);
        Ok(run)
    }
}

/// Every fraction x seed x arm of `settings` on `data` (core's loop, seeded
/// by `seed`), the pre-trained arm starting from `pretrained`; `progress`
/// hears one line per model.
pub fn finetune(
    pretrained: &Mlm,
    data: &LabelledSequences,
    settings: &FinetuneConfig,
    seed: u64,
    device: Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<protocol::Row<SequenceRun>>> {
    let model = Documents {
        pretrained,
        data,
        settings,
        device,
    };
    protocol::finetune(&model, settings, seed, "sequences", progress)
}

/// The `[[eval.downstream]]` sets fine-tuning trains on: those named in
/// `[eval] finetune_sets`, else all; none is an error naming the checkpoint.
fn chosen_sets<'a>(cfg: &'a TextRunConfig, checkpoint: &Path) -> Result<Vec<&'a DownstreamConfig>> {
    let e = &cfg.eval;
    if e.downstream.is_empty() {
        return Err(Error::Config(format!(
            "{}: its config has no [[eval.downstream]] labelled set to fine-tune on (give one, \
             e.g. name = \"spam-vs-ham\", source = {{ format = \"spam-assassin\", path = \
             \"spam-assassin\" }}, in the pre-training config)",
            checkpoint.display()
        )));
    }
    let mut out = Vec::new();
    for d in &e.downstream {
        if e.finetune_sets.is_empty() || e.finetune_sets.contains(&d.name) {
            out.push(d);
        }
    }
    if let Some(missing) = e
        .finetune_sets
        .iter()
        .find(|n| !e.downstream.iter().any(|d| &d.name == *n))
    {
        return Err(Error::Config(format!(
            "{}: [eval] finetune_sets names {missing:?}, not one of its [[eval.downstream]] sets \
             ({})",
            checkpoint.display(),
            names(&e.downstream)
        )));
    }
    Ok(out)
}

/// One labelled set's figures in `finetune.json`.
#[derive(Debug, Clone, Serialize)]
struct SetRows {
    name: String,
    classes: usize,
    train_sequences: usize,
    /// `"test"` or `"validation"`: what `scored_sequences` are.
    scored_on: ScoredOn,
    scored_sequences: usize,
    chunks_per_doc: usize,
    rows: Vec<protocol::Row<SequenceRun>>,
}

/// Refuses a checkpoint of another text method than MLM (fine-tuning
/// trains a BERT encoder), naming it.
pub fn needs_mlm(cfg: &TextRunConfig, checkpoint: &Path) -> Result<()> {
    match cfg.method.name() {
        "mlm" => Ok(()),
        other => Err(Error::Config(format!(
            "{}: a {other} checkpoint; `selfsup eval finetune` fine-tunes a BERT encoder and needs \
             an mlm checkpoint",
            checkpoint.display()
        ))),
    }
}

/// Where [`report`] reads and writes.
pub struct ReportPaths<'a> {
    pub checkpoint: &'a Path,
    /// The data root the `[[eval.downstream]]` sources are under.
    pub root: &'a Path,
    /// The file written beside the checkpoint ([`FINETUNE_FILE`], or its
    /// name for a `--data` folder: core's `eval::result_file_name`).
    pub file: &'a str,
}

/// `selfsup eval finetune` on a text checkpoint whose model `mlm` and
/// tokenizer `tok` are restored: refuses a method other than MLM, reads
/// every chosen `[[eval.downstream]]` set under `paths.root`, fine-tunes,
/// writes `paths.file` beside the checkpoint and returns the lines to print
/// (progress goes to stderr as each model finishes).
pub fn report(
    cfg: &TextRunConfig,
    mlm: &Mlm,
    tok: &TextTokenizer,
    device: Device,
    paths: &ReportPaths<'_>,
) -> Result<Vec<String>> {
    let ReportPaths {
        checkpoint,
        root,
        file,
    } = *paths;
    needs_mlm(cfg, checkpoint)?;
    check_settings(&cfg.eval)
        .map_err(|e| Error::Config(format!("{}: {e}", checkpoint.display())))?;
    let chosen = chosen_sets(cfg, checkpoint)?;
    let ft = &cfg.eval.finetune;
    let start = std::time::Instant::now();
    let mut sets = Vec::with_capacity(chosen.len());
    for d in chosen {
        let set = labelled_set(d, root)?;
        let data =
            LabelledSequences::new(&set, tok, cfg.model.max_len, cfg.trainer.seed, ft.scored_on)?;
        drop(set);
        eprintln!(
            "fine-tuning on {}: {} classes, {} training / {} {} sequences",
            data.name,
            data.classes,
            data.train_len(),
            data.test_len(),
            ft.scored_on.as_str()
        );
        let rows = finetune(mlm, &data, ft, cfg.trainer.seed, device, &mut |l| {
            eprintln!("{l}")
        })?;
        sets.push(SetRows {
            name: data.name.clone(),
            classes: data.classes,
            train_sequences: data.train_len(),
            scored_on: data.scored_on,
            scored_sequences: data.test_len(),
            chunks_per_doc: d.chunks_per_doc,
            rows,
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "method": cfg.method.name(),
        "data": root.display().to_string(),
        "max_len": cfg.model.max_len,
        "settings": ft,
        "sets": sets,
        "seconds": seconds,
    });
    let out = selfsup_core::eval::write_beside(checkpoint, file, &json)?;
    let mut lines = vec![format!(
        "mlm checkpoint {}: fine-tuning end to end (BERT + linear head on mean-pooled tokens) vs \
         the same network from scratch, {} steps of up to {} sequences of {} tokens; {}, \
         mean ± std over seeds",
        checkpoint.display(),
        ft.steps,
        ft.batch_size,
        cfg.model.max_len,
        match ft.scored_on {
            ScoredOn::Test => "test accuracy (20 % of the documents, the probe's split)",
            ScoredOn::Validation =>
                "validation accuracy (20 % of the training documents; the test documents unread)",
        }
    )];
    for s in &sets {
        lines.push(format!(
            "{} ({} classes, {} training / {} {} sequences):",
            s.name,
            s.classes,
            s.train_sequences,
            s.scored_sequences,
            s.scored_on.as_str()
        ));
        lines.extend(s.rows.iter().map(|r| format!("  {}", r.line())));
    }
    lines.push(format!("wrote {} ({seconds:.0} s)", out.display()));
    Ok(lines)
}

#[cfg(test)]
mod tests;
