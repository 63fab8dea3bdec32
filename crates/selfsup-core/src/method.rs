//! A method wires views, encoder, heads, target and loss into one training step.
use crate::distributed::Collective;
use crate::target::TargetKind;
use crate::Result;
use tch::{nn, Tensor};

/// One batch of views, as the trainer hands it to a method (already on the device).
#[derive(Debug)]
pub struct Batch {
    /// `views[v]` holds view `v` of every sample, stacked on dim 0.
    pub views: Vec<Tensor>,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> i64 {
        self.views.first().map_or(0, |v| v.size()[0])
    }
    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Moves every view to `device`.
    pub fn to_device(&self, device: tch::Device) -> Batch {
        Batch {
            views: self.views.iter().map(|v| v.to_device(device)).collect(),
        }
    }
}

/// What a training step produced.
#[derive(Debug)]
pub struct LossOut {
    /// The scalar to minimise (carries the autograd graph).
    pub loss: Tensor,
    /// Named parts of the loss or diagnostics, already detached, for the logs.
    pub terms: Vec<(&'static str, f64)>,
}

/// Where the trainer is, handed to every step.
pub struct StepCtx<'a> {
    /// Global optimisation step (0-based).
    pub step: u64,
    /// Total number of optimisation steps of the run.
    pub total_steps: u64,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Optimisation steps per epoch.
    pub steps_per_epoch: u64,
    /// The processes of the run; ask it for global-batch embeddings.
    pub comm: &'a dyn Collective,
}

impl StepCtx<'_> {
    /// Fraction of training done, in `[0, 1]`.
    pub fn progress(&self) -> f64 {
        if self.total_steps == 0 {
            1.0
        } else {
            self.step as f64 / self.total_steps as f64
        }
    }

    /// Epochs done so far, fractional (`step / steps_per_epoch`).
    pub fn epoch_f(&self) -> f64 {
        self.step as f64 / self.steps_per_epoch.max(1) as f64
    }
}

/// A self-supervised method: SimCLR, BYOL, MAE, MLM, wav2vec 2.0, ...
///
/// The method owns its variables (one [`nn::VarStore`]); the trainer optimises
/// every variable that requires grad, checkpoints all of them, and calls
/// [`Method::after_step`] after each optimiser step for hidden state (EMA
/// teachers, queues, centers).
pub trait Method {
    /// Short name, as in configs (`simclr`).
    fn name(&self) -> &'static str;
    /// What the method predicts.
    fn target(&self) -> TargetKind;
    /// All variables of the method: encoder, heads, teachers, buffers.
    fn var_store(&self) -> &nn::VarStore;
    /// Forward pass and loss for one batch, in training mode.
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut>;
    /// Updates hidden state after the optimiser step (default: nothing).
    fn after_step(&mut self, _ctx: &StepCtx) {}
    /// The encoder's representation of `xs` in inference mode (no grad needed).
    fn embed(&self, xs: &Tensor) -> Tensor;
    /// The projected embedding the loss sees, in inference mode; collapse
    /// monitors watch both this and [`Method::embed`].
    fn project(&self, xs: &Tensor) -> Tensor;
}
