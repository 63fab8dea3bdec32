//! Evaluation around training: the collapse monitors before the first step,
//! the caller's evaluator at each epoch end, and the collapse warnings,
//! whose emphasis comes from what the method trains towards
//! ([`TargetKind`]).
use super::records::{init_collapse_of, Judged, Records};
use super::{EpochEval, EpochEvaluator, Trainer};
use crate::method::Method;
use crate::monitor::{collapse_stats, CollapseStats, CollapseThresholds};
use crate::target::TargetKind;
use crate::Result;
use serde_json::Value;

impl Trainer {
    /// The collapse statistics before the first step: measured on the
    /// evaluator's monitor views (rank 0) and recorded when the run starts
    /// at step 0, read back from the `init` record of a resumed run.
    pub(super) fn initial_monitors<M: Method + ?Sized>(
        &self,
        method: &M,
        eval: &mut dyn EpochEvaluator<M>,
        start: u64,
        history: &[Value],
        records: &mut Records,
    ) -> Result<Option<CollapseStats>> {
        if start != 0 {
            return Ok(init_collapse_of(history));
        }
        let views = if self.comm.rank() == 0 {
            tch::no_grad(|| eval.monitor_views(method))?
        } else {
            None
        };
        let stats = views.map(|(a, b)| collapse_stats(&a, Some(&b)));
        if let Some(c) = &stats {
            records.init(c)?;
        }
        Ok(stats)
    }

    /// Runs the evaluator after `epoch` and judges its monitor views against
    /// `init`, the statistics before the first step.
    pub(super) fn evaluate_epoch<M: Method + ?Sized>(
        &self,
        method: &M,
        eval: &mut dyn EpochEvaluator<M>,
        epoch: usize,
        init: Option<&CollapseStats>,
        target: TargetKind,
    ) -> Result<Judged> {
        // Every rank holds the same weights: rank 0 evaluates for all.
        let out = if self.comm.rank() == 0 {
            tch::no_grad(|| eval.evaluate(method, epoch))?
        } else {
            EpochEval::default()
        };
        let collapse = out.views.as_ref().map(|(a, b)| collapse_stats(a, Some(b)));
        let warnings = collapse
            .as_ref()
            .map(|c| collapse_warnings(&self.cfg.collapse, c, init, target))
            .unwrap_or_default()
            .into_iter()
            .map(|w| format!("epoch {}: {w}", epoch + 1))
            .collect();
        Ok(Judged {
            metrics: out.metrics,
            collapse,
            warnings,
        })
    }
}

/// The warnings `thresholds` raise for `stats` (judged against `init`),
/// each followed by what it means for a method training towards `target`.
/// Non-finite embeddings are reported as they are: no target explains them.
pub(super) fn collapse_warnings(
    thresholds: &CollapseThresholds,
    stats: &CollapseStats,
    init: Option<&CollapseStats>,
    target: TargetKind,
) -> Vec<String> {
    let warnings = thresholds.warnings_since(stats, init);
    if stats.non_finite {
        return warnings;
    }
    let emphasis = emphasis(target);
    warnings
        .into_iter()
        .map(|w| format!("{w}; {emphasis}"))
        .collect()
}

/// What a collapse warning means for a method training towards `target`:
/// with a collapse-prone target nothing in the loss pushes embeddings
/// apart, so the warning most likely marks a real collapse; with any other
/// target the loss itself resists collapse and the warning is a weaker
/// signal, to be checked against the probe.
pub(super) fn emphasis(target: TargetKind) -> String {
    let (name, why) = match target {
        TargetKind::Teacher => ("teacher", ""),
        TargetKind::Prototypes => ("prototype", ""),
        TargetKind::OtherView => ("contrastive", "negatives push embeddings apart"),
        TargetKind::Redundancy => (
            "redundancy-reduction",
            "the loss keeps the dimensions decorrelated",
        ),
        TargetKind::MaskedContent => ("masked-content", "the loss needs the input's content"),
        TargetKind::Pretext => ("pretext", "the loss needs the transformation's label"),
    };
    if target.collapse_prone() {
        format!(
            "{name} target: nothing in the loss pushes embeddings apart, so the run has likely collapsed"
        )
    } else {
        format!("{name} target ({why}): a weaker signal, check the probe")
    }
}
