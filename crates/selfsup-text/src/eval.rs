//! Measuring an MLM encoder: validation loss, masked-token accuracy and
//! perplexity every epoch (beside a unigram baseline), the collapse monitors
//! on pooled sentence embeddings, and linear probes on frozen mean-pooled
//! features for labelled document sets (beside a random-weights encoder and a
//! bag-of-words logistic regression, computed by the same code).
use crate::corpus::{is_held_out, Document};
use crate::loader::{masked_batch, MaskVocab};
use crate::masking::MaskingConfig;
use crate::methods::{Mlm, MlmEval};
use crate::packing::{chunk_document, Packed};
use crate::tokenizer::TextTokenizer;
use selfsup_core::eval::{linear_probe_top1, LinearProbeConfig};
use selfsup_core::method::Method;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Seed of the fixed validation masks (independent of the training seed).
const VALIDATION_MASK_SEED: u64 = 0xE7A1;

/// Validation figures of one pass.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Validation {
    pub loss: f64,
    pub masked_acc: f64,
    pub perplexity: f64,
    pub predicted_tokens: i64,
}

/// Loss, accuracy and perplexity of `mlm` on `data` with fixed masks.
pub fn validate(
    mlm: &Mlm,
    data: &Packed,
    vocab: &MaskVocab,
    masking: &MaskingConfig,
    batch: usize,
    device: Device,
) -> Validation {
    let mut total = MlmEval::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    tch::no_grad(|| {
        for chunk in rows.chunks(batch.max(1)) {
            let b = masked_batch(data, vocab, masking, chunk, VALIDATION_MASK_SEED, 0)
                .to_device(device);
            let e = mlm.evaluate(&b);
            total.loss_sum += e.loss_sum;
            total.correct += e.correct;
            total.count += e.count;
        }
    });
    let n = total.count.max(1) as f64;
    Validation {
        loss: total.loss_sum / n,
        masked_acc: total.correct as f64 / n,
        perplexity: (total.loss_sum / n).exp(),
        predicted_tokens: total.count,
    }
}

/// The unigram baseline on the same validation masks: every selected token
/// predicted from training-set token frequencies (add-one smoothed).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UnigramBaseline {
    pub perplexity: f64,
    /// Accuracy of always predicting the most frequent token.
    pub masked_acc: f64,
}

/// Computes [`UnigramBaseline`] from the training sequences' counts.
pub fn unigram_baseline(
    train: &Packed,
    val: &Packed,
    vocab: &MaskVocab,
    masking: &MaskingConfig,
    vocab_size: usize,
) -> UnigramBaseline {
    let mut counts = vec![1.0f64; vocab_size];
    for &t in &train.ids {
        if !vocab.is_special[t as usize] {
            counts[t as usize] += 1.0;
        }
    }
    for (i, c) in counts.iter_mut().enumerate() {
        if vocab.is_special[i] {
            *c = 0.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let top = (0..vocab_size)
        .max_by(|&a, &b| counts[a].total_cmp(&counts[b]))
        .unwrap_or(0) as i64;
    let (mut nll, mut n, mut hit) = (0.0, 0usize, 0usize);
    let rows: Vec<usize> = (0..val.len()).collect();
    for chunk in rows.chunks(256) {
        let b = masked_batch(val, vocab, masking, chunk, VALIDATION_MASK_SEED, 0);
        let labels = Vec::<i64>::try_from(b.views[2].view([-1])).unwrap_or_default();
        for t in labels.into_iter().filter(|&t| t >= 0) {
            nll -= (counts[t as usize] / total).ln();
            n += 1;
            hit += usize::from(t == top);
        }
    }
    UnigramBaseline {
        perplexity: (nll / n.max(1) as f64).exp(),
        masked_acc: hit as f64 / n.max(1) as f64,
    }
}

/// The per-epoch evaluator of a pre-training run.
pub struct MlmEpochEval {
    pub val: Packed,
    pub monitor: Packed,
    pub vocab: MaskVocab,
    pub masking: MaskingConfig,
    pub batch: usize,
    pub device: Device,
    pub unigram: UnigramBaseline,
    /// The last validation (for the summary).
    pub last: Option<Validation>,
}

impl MlmEpochEval {
    /// Two maskings of the same sequences (the "two views" of the monitors),
    /// pooled and centred, with their spread; `None` under two sequences.
    /// Only full sequences: a padded one (a corpus's last) would be an
    /// outlier that alone dominates the variance.
    fn monitor_pair(&self, mlm: &Mlm) -> Option<(Tensor, Tensor, f64)> {
        let rows: Vec<usize> = (0..self.monitor.len())
            .filter(|&r| !self.monitor.row(r).contains(&self.vocab.pad_id))
            .collect();
        if rows.len() < 2 {
            return None;
        }
        let embed = |seed: u64| -> Tensor {
            let parts: Vec<Tensor> = rows
                .chunks(self.batch.max(1))
                .map(|c| {
                    let b = masked_batch(&self.monitor, &self.vocab, &self.masking, c, seed, 0);
                    mlm.pooled(&b.views[0].to_device(self.device), false)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu)
                })
                .collect();
            Tensor::cat(&parts, 0)
        };
        Some(centre(&embed(1), &embed(2)))
    }
}

impl EpochEvaluator<Mlm> for MlmEpochEval {
    fn evaluate(&mut self, mlm: &Mlm, _epoch: usize) -> Result<EpochEval> {
        let v = validate(
            mlm,
            &self.val,
            &self.vocab,
            &self.masking,
            self.batch,
            self.device,
        );
        self.last = Some(v);
        let mut metrics = vec![
            ("val_masked_acc".into(), v.masked_acc),
            ("val_perplexity".into(), v.perplexity),
            (
                "baseline_unigram_perplexity".into(),
                self.unigram.perplexity,
            ),
        ];
        let views = self.monitor_pair(mlm).map(|(a, b, spread)| {
            metrics.push(("pooled_spread".into(), spread));
            (a, b)
        });
        Ok(EpochEval { metrics, views })
    }

    fn monitor_views(&mut self, mlm: &Mlm) -> Result<Option<(Tensor, Tensor)>> {
        Ok(self.monitor_pair(mlm).map(|(a, b, _)| (a, b)))
    }
}

/// Centres two views of pooled embeddings on their common mean and returns
/// the spread: rms distance to the mean over rms norm.
///
/// Mean-pooled BERT embeddings are anisotropic: every sequence shares a
/// large common component (the final layer norm's bias, frequent tokens;
/// Ethayarajh 2019), so uncentred, a healthy encoder reads as "identical
/// embeddings" to the std and rank monitors (seen on the test fixture: std
/// ratio 0.008, effective rank 1.1, while validation perplexity fell well
/// below the unigram baseline; the spread there was about 0.001). The
/// monitors therefore see the centred embeddings. The spread is logged
/// (`pooled_spread`) as a diagnostic, not a threshold; an encoder that maps
/// every input alike also shows as validation perplexity back at the
/// unigram baseline, which is plotted beside it.
pub fn centre(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, f64) {
    let both = Tensor::cat(&[a, b], 0);
    let mean = both.mean_dim([0i64].as_slice(), true, Kind::Float);
    let rms = |t: &Tensor| t.square().mean(Kind::Float).sqrt().double_value(&[]);
    let spread = rms(&(&both - &mean)) / rms(&both).max(1e-12);
    (a - &mean, b - &mean, spread)
}

/// A labelled document set for a downstream probe.
pub struct LabelledSet {
    pub name: String,
    pub docs: Vec<Document>,
    /// Sequences per document (1: the start of each document).
    pub chunks_per_doc: usize,
}

/// One row of the downstream table.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub task: String,
    pub classes: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub pretrained: f64,
    pub random_weights: f64,
    pub bag_of_words: f64,
}

/// The share of a labelled set's documents held out as the probes' test
/// split (by a hash of the document id).
pub(crate) const PROBE_TEST_FRACTION: f64 = 0.2;

/// A labelled set as sequences: `ids` row-major `[n, max_len]`, one label
/// and one test flag (the document is held out) per row.
pub(crate) struct Examples {
    pub(crate) ids: Vec<i64>,
    pub(crate) labels: Vec<i64>,
    pub(crate) test: Vec<bool>,
}

/// `set`'s sequences and its class count; 20 % of the documents (by a hash
/// of the id and `seed`) are the test split.
pub(crate) fn examples(
    set: &LabelledSet,
    tok: &TextTokenizer,
    max_len: usize,
    seed: u64,
) -> Result<(Examples, usize)> {
    let classes: BTreeMap<String, i64> = set
        .docs
        .iter()
        .filter_map(|d| d.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, i as i64))
        .collect();
    let mut ex = Examples {
        ids: Vec::new(),
        labels: Vec::new(),
        test: Vec::new(),
    };
    for d in &set.docs {
        let Some(label) = d.label.as_ref() else {
            continue;
        };
        // 20% of the documents are the test split, by document.
        let test = is_held_out(&d.id, PROBE_TEST_FRACTION, seed);
        for row in chunk_document(d, tok, max_len, set.chunks_per_doc)
            .map_err(selfsup_core::Error::from)?
        {
            ex.ids.extend(row);
            ex.labels.push(classes[label]);
            ex.test.push(test);
        }
    }
    Ok((ex, classes.len()))
}

fn split(feats: &Tensor, labels: &Tensor, test: &[bool]) -> (Tensor, Tensor, Tensor, Tensor) {
    let mask = Tensor::from_slice(test);
    let tr = mask.logical_not().nonzero().squeeze_dim(1);
    let te = mask.nonzero().squeeze_dim(1);
    (
        feats.index_select(0, &tr),
        labels.index_select(0, &tr),
        feats.index_select(0, &te),
        labels.index_select(0, &te),
    )
}

fn pooled_features<M: Method + ?Sized>(
    mlm: &M,
    ids: &Tensor,
    batch: i64,
    device: Device,
) -> Tensor {
    tch::no_grad(|| {
        let n = ids.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(batch as usize)
            .map(|s| {
                let b = ids.narrow(0, s, batch.min(n - s)).to_device(device);
                mlm.embed(&b).to_kind(Kind::Float).to_device(Device::Cpu)
            })
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Bag of words: `log(1 + count)` of every non-special token id.
fn bag_of_words(ids: &[i64], rows: usize, max_len: usize, vocab: &MaskVocab) -> Tensor {
    let v = vocab.is_special.len();
    let mut feats = vec![0f32; rows * v];
    for r in 0..rows {
        for &t in &ids[r * max_len..(r + 1) * max_len] {
            if !vocab.is_special[t as usize] {
                feats[r * v + t as usize] += 1.0;
            }
        }
    }
    feats.iter_mut().for_each(|x| *x = x.ln_1p());
    Tensor::from_slice(&feats).view([rows as i64, v as i64])
}

/// What every downstream probe of a run shares.
pub struct ProbeSetup<'a> {
    pub tok: &'a TextTokenizer,
    pub vocab: &'a MaskVocab,
    pub max_len: usize,
    pub cfg: &'a LinearProbeConfig,
    /// Seed of the document split (20% of documents are the test split).
    pub seed: u64,
    pub device: Device,
}

/// Linear probes on `set` for the pre-trained encoder, a random-weights
/// encoder of the same architecture and a bag-of-words baseline.
pub fn probe<M: Method + ?Sized>(
    set: &LabelledSet,
    pretrained: &M,
    random: &M,
    p: &ProbeSetup,
) -> Result<ProbeRow> {
    let ProbeSetup {
        tok,
        vocab,
        max_len,
        cfg: probe_cfg,
        seed,
        device,
    } = *p;
    let (ex, classes) = examples(set, tok, max_len, seed)?;
    let rows = ex.labels.len();
    let n_test = ex.test.iter().filter(|&&t| t).count();
    if classes < 2 || n_test == 0 || n_test == rows {
        return Err(selfsup_core::Error::Eval(format!(
            "{}: needs two classes and documents on both sides of the split ({classes} classes, {rows} examples, {n_test} test)",
            set.name
        )));
    }
    let ids = Tensor::from_slice(&ex.ids).view([rows as i64, max_len as i64]);
    let labels = Tensor::from_slice(&ex.labels);
    let acc = |feats: Tensor| -> Result<f64> {
        let (a, b, c, d) = split(&feats, &labels, &ex.test);
        linear_probe_top1(&a, &b, &c, &d, classes as i64, probe_cfg)
    };
    let pre = acc(pooled_features(pretrained, &ids, 128, device))?;
    let rnd = acc(pooled_features(random, &ids, 128, device))?;
    let bow = acc(bag_of_words(&ex.ids, rows, max_len, vocab))?;
    Ok(ProbeRow {
        task: set.name.clone(),
        classes,
        train_examples: rows - n_test,
        test_examples: n_test,
        pretrained: pre,
        random_weights: rnd,
        bag_of_words: bow,
    })
}
