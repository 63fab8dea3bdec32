//! What the dual encoder is worth: zero-shot classification and retrieval on
//! held-out pairs, for the trained weights and for random weights (the same
//! code on a freshly initialised model), plus the per-epoch hook of the
//! trainer (validation figures and the collapse monitors on image / caption
//! embeddings). The per-epoch hook never reads the test sets: see
//! [`crate::data`] for which pairs are which.
pub mod retrieval;
pub mod zero_shot;

pub use retrieval::{recall_at_k, Recall, KS};

use crate::captions::pad_batch;
use crate::method::Clip;
use crate::model::ClipModel;
use crate::tower::Tower;
use selfsup_core::loss::info_nce::normalize;
use selfsup_core::method::Method;
use selfsup_core::trainer::{EpochEval, EpochEvaluator};
use selfsup_core::Result;
use tch::{Device, Tensor};

const CHUNK: i64 = 256;

/// Unit image embeddings of normalised images `xs` (on the CPU), in chunks.
pub fn encode_images(model: &ClipModel, xs: &Tensor, device: Device) -> Tensor {
    let n = xs.size()[0];
    tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n)
            .step_by(CHUNK as usize)
            .map(|s| {
                let x = xs.narrow(0, s, CHUNK.min(n - s)).to_device(device);
                normalize(&model.encode_image(&x, false)).to_device(Device::Cpu)
            })
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Unit text embeddings of token rows (on the CPU), in chunks.
pub fn encode_texts<A: Tower>(
    model: &ClipModel<A>,
    rows: &[Vec<i64>],
    pad_id: i64,
    device: Device,
) -> Tensor {
    tch::no_grad(|| {
        let parts: Vec<Tensor> = rows
            .chunks(CHUNK as usize)
            .map(|c| {
                let refs: Vec<&[i64]> = c.iter().map(Vec::as_slice).collect();
                let (ids, att) = pad_batch(&refs, pad_id);
                normalize(&model.encode_text(&ids.to_device(device), &att.to_device(device), false))
                    .to_device(Device::Cpu)
            })
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Held-out images and captions for retrieval.
pub struct RetrievalSet {
    pub name: String,
    /// Normalised images `[N, 3, S, S]`.
    pub images: Tensor,
    /// Token rows of the captions.
    pub texts: Vec<Vec<i64>>,
    /// The image each caption describes.
    pub text_image: Vec<i64>,
}

/// Labelled images and the prompts of their classes.
pub struct ZeroShotSet {
    /// The figure's name ("fashion-mnist held-out-class zero-shot top-1").
    pub name: String,
    /// Normalised images `[N, 3, S, S]`.
    pub images: Tensor,
    pub labels: Tensor,
    /// Token rows of each class's prompts.
    pub prompts: Vec<Vec<Vec<i64>>>,
    /// Accuracy of guessing (1 / classes).
    pub chance: f64,
}

/// Every evaluation of a run.
pub struct EvalSuite {
    pub retrieval: Vec<RetrievalSet>,
    pub zero_shot: Vec<ZeroShotSet>,
    pub pad_id: i64,
}

impl EvalSuite {
    /// Named figures (each zero-shot set's name, `<set> i->t R@1`, ...).
    pub fn evaluate(&self, model: &ClipModel, device: Device) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for z in &self.zero_shot {
            let classes = zero_shot::class_embeddings(model, &z.prompts, self.pad_id, device);
            let images = encode_images(model, &z.images, device);
            out.push((
                z.name.clone(),
                zero_shot::top1(&images, &classes, &z.labels),
            ));
        }
        for r in &self.retrieval {
            let images = encode_images(model, &r.images, device);
            let texts = encode_texts(model, &r.texts, self.pad_id, device);
            let rec = recall_at_k(&images.matmul(&texts.tr()), &r.text_image);
            for (dir, vals) in [("i->t", rec.image_to_text), ("t->i", rec.text_to_image)] {
                for (k, v) in KS.iter().zip(vals) {
                    out.push((format!("{} {dir} R@{k}", r.name), v));
                }
            }
        }
        out
    }
}

/// The trainer's per-epoch hook: the validation suite (every epoch when
/// asked) and image / caption embeddings of training pairs for the collapse
/// monitors.
pub struct ClipEvaluator {
    /// Validation sets: carved out of the training data, never trained on.
    pub validation: EvalSuite,
    pub every_epoch: bool,
    /// Images `[M, 3, S, S]` and one caption each.
    pub monitor: Option<(Tensor, Vec<Vec<i64>>)>,
}

impl EpochEvaluator<Clip> for ClipEvaluator {
    fn evaluate(&mut self, method: &Clip, _epoch: usize) -> Result<EpochEval> {
        let device = method.var_store().device();
        let metrics = if self.every_epoch {
            self.validation.evaluate(&method.model, device)
        } else {
            Vec::new()
        };
        let views = self.monitor_views(method)?;
        Ok(EpochEval { metrics, views })
    }

    fn monitor_views(&mut self, method: &Clip) -> Result<Option<(Tensor, Tensor)>> {
        let device = method.var_store().device();
        Ok(self.monitor.as_ref().map(|(xs, rows)| {
            (
                encode_images(&method.model, xs, device),
                encode_texts(&method.model, rows, self.validation.pad_id, device),
            )
        }))
    }
}
