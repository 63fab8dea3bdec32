//! What the speech-text dual encoder is worth on speakers it never heard:
//!
//! * retrieval, per speaker (or per source for the validation speakers):
//!   `s->t` ranks the set's written forms for each clip (right: its own);
//!   `t->s` ranks the clips for each written form (right: any clip of it),
//!   Recall@1/5/10 through [`crate::eval::recall_at_k`] (ties count against
//!   the query);
//! * zero-shot word recognition, per source: each clip of the held-out
//!   speakers is classified among every written form those speakers say
//!   (class embeddings from `[eval] templates`, [`crate::eval::zero_shot`]).
//!
//! Every figure comes with its chance level (the expected score of a random
//! ranking) and is computed by the same code for the random-weights
//! control. Clips are embedded one at a time, so that no figure depends on
//! which clips share a batch (the first conv layer's group norm would see
//! the padding).
use crate::captions::fill;
use crate::eval::zero_shot::{class_embeddings, top1};
use crate::eval::{encode_texts, recall_at_k, KS};
use crate::method::Clip;
use crate::model::{ClipModel, SpeechTower};
use crate::speech_pairs::{eval_clip, forms_of, SpeechPair};
use selfsup_core::loss::info_nce::normalize;
use selfsup_core::method::Method;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::Result;
use tch::{Device, Kind, Tensor};

/// Written forms as token rows (`[CLS] chars [SEP]`): the text tower's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    /// The characters of the training forms, sorted; id = 4 + position.
    pub chars: Vec<char>,
}

impl CharVocab {
    pub const PAD: i64 = 0;
    pub const UNK: i64 = 1;
    pub const CLS: i64 = 2;
    pub const SEP: i64 = 3;

    /// The characters of `texts` (the training forms).
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut chars: Vec<char> = texts.into_iter().flat_map(str::chars).collect();
        chars.sort_unstable();
        chars.dedup();
        Self { chars }
    }

    /// Ids in all (the four specials included).
    pub fn size(&self) -> usize {
        self.chars.len() + 4
    }

    /// `[CLS] c1 c2 ... [SEP]`, at most `max_len` ids; a character training
    /// never saw is `[UNK]`.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<i64> {
        let keep = max_len.saturating_sub(2);
        let mut row = vec![Self::CLS];
        row.extend(text.chars().take(keep).map(|c| {
            self.chars
                .binary_search(&c)
                .map_or(Self::UNK, |k| 4 + k as i64)
        }));
        row.push(Self::SEP);
        row
    }
}

/// Clips and the written forms they say.
pub struct SpeechSet {
    pub name: String,
    /// Normalised clips (the first `[data] eval_seconds` of each).
    pub clips: Vec<Vec<f32>>,
    /// The distinct written forms.
    pub forms: Vec<String>,
    /// Token row of each form (retrieval).
    pub form_rows: Vec<Vec<i64>>,
    /// Token rows of each form's prompts (`[eval] templates`: zero-shot).
    pub prompts: Vec<Vec<Vec<i64>>>,
    /// The form each clip says.
    pub clip_form: Vec<i64>,
}

impl SpeechSet {
    /// The set of pairs `idx`.
    pub fn new(
        name: String,
        pairs: &[SpeechPair],
        idx: &[usize],
        vocab: &CharVocab,
        templates: &[String],
        max_len: usize,
        max_samples: usize,
    ) -> Self {
        let (forms, clip_form) = forms_of(pairs, idx);
        let prompts = forms
            .iter()
            .map(|f| {
                templates
                    .iter()
                    .map(|t| vocab.encode(&fill(t, f), max_len))
                    .collect()
            })
            .collect();
        let form_rows = forms.iter().map(|f| vocab.encode(f, max_len)).collect();
        Self {
            name,
            form_rows,
            clips: idx
                .iter()
                .map(|&i| eval_clip(&pairs[i].samples, max_samples))
                .collect(),
            forms,
            prompts,
            clip_form,
        }
    }

    /// Chance of each retrieval figure: `s->t` R@K = K / forms; `t->s` R@K
    /// = the chance that a random K of the clips holds one of the form's.
    pub fn retrieval_chance(&self) -> Vec<(String, f64)> {
        let n = self.clips.len();
        let c = self.forms.len().max(1);
        let mut per_form = vec![0usize; c];
        for &f in &self.clip_form {
            if let Some(x) = per_form.get_mut(f as usize) {
                *x += 1;
            }
        }
        let mut out = Vec::new();
        for k in KS {
            let k = k as usize;
            let t2s = per_form
                .iter()
                .map(|&m| {
                    let miss: f64 = (0..k.min(n))
                        .map(|j| (n.saturating_sub(m + j)) as f64 / (n - j) as f64)
                        .product();
                    1.0 - miss
                })
                .sum::<f64>()
                / c as f64;
            out.push((format!("{} t->s R@{k}", self.name), t2s));
        }
        for k in KS {
            out.push((
                format!("{} s->t R@{k}", self.name),
                (k as f64 / c as f64).min(1.0),
            ));
        }
        out
    }
}

/// Unit embeddings of clips, each embedded alone (on the CPU).
pub fn encode_clips(model: &ClipModel<SpeechTower>, clips: &[Vec<f32>], device: Device) -> Tensor {
    tch::no_grad(|| {
        let rows: Vec<Tensor> = clips
            .iter()
            .map(|c| {
                let wave = Tensor::from_slice(c).view([1, -1]).to_device(device);
                normalize(&model.encode_tower(&[wave], false)).to_device(Device::Cpu)
            })
            .collect();
        if rows.is_empty() {
            Tensor::zeros([0, 1], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&rows, 0)
        }
    })
}

/// Every speech evaluation of a run.
pub struct SpeechSuite {
    pub retrieval: Vec<SpeechSet>,
    pub zero_shot: Vec<SpeechSet>,
}

impl SpeechSuite {
    /// Named figures: `<set> zero-shot top-1`, `<set> t->s R@1`, ...
    pub fn evaluate(&self, model: &ClipModel<SpeechTower>, device: Device) -> Vec<(String, f64)> {
        let pad = CharVocab::PAD;
        let mut out = Vec::new();
        // A retrieval set named as a zero-shot set holds the same clips
        // (the validation suite): they are embedded once.
        let mut done: Vec<(String, Tensor)> = Vec::new();
        for z in &self.zero_shot {
            let classes = class_embeddings(model, &z.prompts, pad, device);
            let clips = encode_clips(model, &z.clips, device);
            let labels = Tensor::from_slice(&z.clip_form);
            out.push((zero_shot_name(z), top1(&clips, &classes, &labels)));
            done.push((z.name.clone(), clips));
        }
        for r in &self.retrieval {
            let same = done
                .iter()
                .find(|(n, _)| n == &r.name)
                .map(|(_, t)| t.shallow_clone());
            let clips = same.unwrap_or_else(|| encode_clips(model, &r.clips, device));
            let texts = encode_texts(model, &r.form_rows, pad, device);
            // [forms, clips]: a form's right answers are all its clips.
            let rec = recall_at_k(&texts.matmul(&clips.tr()), &r.clip_form);
            for (dir, vals) in [("t->s", rec.image_to_text), ("s->t", rec.text_to_image)] {
                for (k, v) in KS.iter().zip(vals) {
                    out.push((format!("{} {dir} R@{k}", r.name), v));
                }
            }
        }
        out
    }

    /// The chance level of every figure, by name.
    pub fn chance(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .zero_shot
            .iter()
            .map(|z| (zero_shot_name(z), 1.0 / z.forms.len().max(1) as f64))
            .collect();
        for r in &self.retrieval {
            out.extend(r.retrieval_chance());
        }
        out
    }

    /// One line per set: its clips and forms.
    pub fn describe(&self) -> Vec<String> {
        self.zero_shot
            .iter()
            .chain(&self.retrieval)
            .map(|s| {
                format!(
                    "{} ({} clips, {} forms)",
                    s.name,
                    s.clips.len(),
                    s.forms.len()
                )
            })
            .collect()
    }
}

fn zero_shot_name(z: &SpeechSet) -> String {
    format!("{} zero-shot top-1", z.name)
}

/// Normalised clips and one token row each (what the collapse monitors see).
pub type MonitorPairs = (Vec<Vec<f32>>, Vec<Vec<i64>>);

/// The trainer's per-epoch hook: the validation suite and clip / form
/// embeddings of training pairs for the collapse monitors.
pub struct SpeechEvaluator {
    pub validation: SpeechSuite,
    pub every_epoch: bool,
    pub monitor: Option<MonitorPairs>,
}

impl EpochEvaluator<Clip<SpeechTower>> for SpeechEvaluator {
    fn evaluate(&mut self, method: &Clip<SpeechTower>, _epoch: usize) -> Result<EpochEval> {
        let device = method.var_store().device();
        let metrics = if self.every_epoch {
            self.validation.evaluate(&method.model, device)
        } else {
            Vec::new()
        };
        let views = self.monitor_views(method)?;
        Ok(EpochEval { metrics, views })
    }

    fn monitor_views(&mut self, method: &Clip<SpeechTower>) -> Result<Option<(Tensor, Tensor)>> {
        let device = method.var_store().device();
        Ok(self.monitor.as_ref().map(|(clips, rows)| {
            (
                encode_clips(&method.model, clips, device),
                encode_texts(&method.model, rows, CharVocab::PAD, device),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_spelled_in_training_characters() {
        let v = CharVocab::build(["ba", "ab", "c"]);
        assert_eq!(v.chars, ['a', 'b', 'c']);
        assert_eq!(v.size(), 7);
        assert_eq!(v.encode("cab", 16), [2, 6, 4, 5, 3]);
        assert_eq!(v.encode("zä", 16), [2, 1, 1, 3]);
        assert_eq!(v.encode("abcabc", 4), [2, 4, 5, 3]);
    }

    fn set(clip_form: Vec<i64>, forms: usize) -> SpeechSet {
        SpeechSet {
            name: "s".into(),
            clips: vec![vec![0.0]; clip_form.len()],
            forms: (0..forms).map(|f| f.to_string()).collect(),
            form_rows: vec![vec![2, 3]; forms],
            prompts: vec![vec![vec![2, 3]]; forms],
            clip_form,
        }
    }

    /// Chance by hand: 4 clips, forms {0: 2 clips, 1: 1, 2: 1}. s->t R@1 =
    /// 1/3; t->s R@1 = mean(2/4, 1/4, 1/4) = 1/3; t->s R@5 = 1 (every clip).
    #[test]
    fn chance_levels_are_those_of_a_random_ranking() {
        let c = set(vec![0, 0, 1, 2], 3).retrieval_chance();
        let get = |n: &str| c.iter().find(|(k, _)| k == n).unwrap().1;
        assert!((get("s s->t R@1") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(get("s s->t R@5"), 1.0);
        assert!((get("s t->s R@1") - 1.0 / 3.0).abs() < 1e-12);
        // R@2 for the 2-clip form: 1 - (2/4)(1/3) = 5/6; single-clip: 1/2.
        assert!(c.iter().all(|(k, _)| !k.contains("R@2")));
        assert_eq!(get("s t->s R@5"), 1.0);
    }
}
