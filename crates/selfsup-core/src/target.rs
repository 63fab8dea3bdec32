//! Targets: what a method predicts for each view.

/// The kind of target a method trains towards ([`crate::method::Method::target`]).
///
/// [`crate::trainer::Trainer::fit`] reads it once per run: it is shown in
/// [`crate::trainer::TrainSummary::target`] (so in `summary.json`) and in
/// the run's first `epoch` record of `metrics.jsonl` (`"target": "teacher"`),
/// and it sets the emphasis of the collapse warnings: with a
/// [`TargetKind::collapse_prone`] target a warning says that nothing in the
/// loss pushes embeddings apart (the run has likely collapsed), with any
/// other it is worded as a weaker signal to check against the probe. The
/// thresholds, and when a warning fires, do not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The embedding of another view of the same sample, against in-batch (or
    /// queued) negatives: SimCLR, MoCo, CLIP, GRACE.
    OtherView,
    /// The output of an EMA (or stop-gradient) teacher on another view: BYOL,
    /// SimSiam, DINO, I-JEPA. Prone to collapse without negatives.
    Teacher,
    /// Statistics of the batch of embeddings: Barlow Twins, VICReg.
    Redundancy,
    /// Cluster assignments of another view: SwAV.
    Prototypes,
    /// Hidden content of the input itself: MAE, MLM, wav2vec 2.0 codes.
    MaskedContent,
    /// A label made up from the transformation: rotation, jigsaw.
    Pretext,
}

impl TargetKind {
    /// Whether nothing in the loss pushes embeddings apart, so collapse is a live risk.
    pub fn collapse_prone(self) -> bool {
        matches!(self, Self::Teacher | Self::Prototypes)
    }
}
