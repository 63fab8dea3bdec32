//! The two-view joint-embedding method: both augmented views of each image go
//! through one shared [`Branch`] (encoder + projector) and a [`PairLoss`]
//! compares the two projections.
//!
//! SimCLR (NT-Xent), Barlow Twins and VICReg are this method with their own
//! loss, projector and defaults ([`super::simclr`], [`super::barlow_twins`],
//! [`super::vicreg`]); the wiring (views, forward passes, loss, logged terms,
//! embeddings for the monitors, the exported encoder) lives here once.
use super::branch::Branch;
use super::check_views;
use crate::models::EncoderConfig;
use selfsup_core::head::HeadConfig;
use selfsup_core::loss::PairLoss;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::Result;
use tch::{nn, Tensor};

/// What distinguishes one two-view method from another besides its loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoViewSpec {
    /// The `[method] name` (`simclr`).
    pub name: &'static str,
    /// The method's name in messages (`SimCLR`).
    pub title: &'static str,
    /// What the method predicts.
    pub target: TargetKind,
    /// Variable prefix of the projector (`head` for SimCLR, `projector`
    /// otherwise); the encoder is under [`TwoView::ENCODER_PREFIX`].
    pub projector_prefix: &'static str,
    /// Both views through the network as one batch (batch norm sees 2N
    /// images) instead of one pass per view.
    pub joint_forward: bool,
}

/// A two-view method with loss `L`: encoder under `encoder.`, projector
/// under the spec's prefix.
pub struct TwoView<L> {
    vs: nn::VarStore,
    branch: Branch,
    loss: L,
    spec: TwoViewSpec,
}

impl<L: PairLoss> TwoView<L> {
    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// Builds the encoder, then the projector, on `device`.
    pub fn build(
        device: tch::Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        projector: &HeadConfig,
        loss: L,
        spec: TwoViewSpec,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let branch = Branch::new(
            &(&root / Self::ENCODER_PREFIX),
            &(&root / spec.projector_prefix),
            encoder,
            in_channels,
            projector,
        );
        Self {
            vs,
            branch,
            loss,
            spec,
        }
    }

    /// The loss.
    pub fn loss(&self) -> &L {
        &self.loss
    }

    /// The name, target and layout of the method.
    pub fn spec(&self) -> &TwoViewSpec {
        &self.spec
    }
}

impl<L: PairLoss> Method for TwoView<L> {
    fn name(&self) -> &'static str {
        self.spec.name
    }
    fn target(&self) -> TargetKind {
        self.spec.target
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        check_views(self.spec.title, batch, 2, 2)?;
        let (z1, z2) = if self.spec.joint_forward {
            let n = batch.len();
            let z = self.branch.forward_t(&Tensor::cat(&batch.views, 0), true);
            (z.narrow(0, 0, n), z.narrow(0, n, n))
        } else {
            (
                self.branch.forward_t(&batch.views[0], true),
                self.branch.forward_t(&batch.views[1], true),
            )
        };
        Ok(self.loss.pair(&z1, &z2, ctx.comm))
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.branch.embed(xs, false)
    }
    /// The projections as the loss sees them ([`PairLoss::monitored`]).
    fn project(&self, xs: &Tensor) -> Tensor {
        self.loss.monitored(self.branch.forward_t(xs, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::test_util::{structured_images, train_steps};
    use crate::methods::{
        BarlowTwins, BarlowTwinsMethodConfig, SimClr, SimClrConfig, VicReg, VicRegMethodConfig,
    };
    use selfsup_core::distributed::SingleProcess;
    use tch::{Device, Kind};

    fn cnn() -> EncoderConfig {
        EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        }
    }

    fn projector() -> HeadConfig {
        HeadConfig {
            hidden_dim: 32,
            out_dim: 24,
            layers: 2,
            batch_norm: true,
            last_batch_norm: false,
        }
    }

    fn simclr(joint_forward: bool) -> SimClr {
        let cfg = SimClrConfig {
            head: projector(),
            joint_forward,
            ..Default::default()
        };
        SimClr::new(Device::Cpu, &cnn(), 1, &cfg)
    }

    fn barlow() -> BarlowTwins {
        let cfg = BarlowTwinsMethodConfig {
            projector: projector(),
            ..Default::default()
        };
        BarlowTwins::new(Device::Cpu, &cnn(), 1, &cfg)
    }

    fn vicreg() -> VicReg {
        let cfg = VicRegMethodConfig {
            projector: projector(),
            ..Default::default()
        };
        VicReg::new(Device::Cpu, &cnn(), 1, &cfg)
    }

    fn ctx() -> StepCtx<'static> {
        StepCtx {
            step: 0,
            total_steps: 1,
            epoch: 0,
            steps_per_epoch: 1,
            comm: &SingleProcess,
        }
    }

    fn top_level(vs: &nn::VarStore) -> Vec<String> {
        let mut v: Vec<String> = vs
            .variables()
            .into_keys()
            .filter_map(|k| k.split('.').next().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn each_method_keeps_its_name_target_and_variable_layout() {
        let s = simclr(false);
        assert_eq!((s.name(), s.target()), ("simclr", TargetKind::OtherView));
        assert_eq!(top_level(s.var_store()), ["encoder", "head"]);
        let b = barlow();
        assert_eq!(
            (b.name(), b.target()),
            ("barlow_twins", TargetKind::Redundancy)
        );
        assert_eq!(top_level(b.var_store()), ["encoder", "projector"]);
        let v = vicreg();
        assert_eq!((v.name(), v.target()), ("vicreg", TargetKind::Redundancy));
        assert_eq!(top_level(v.var_store()), ["encoder", "projector"]);
        assert_eq!(SimClr::ENCODER_PREFIX, "encoder");
    }

    #[test]
    fn a_batch_without_two_views_is_refused_by_name() {
        let xs = structured_images(4, 1, 16, 0);
        let one = Batch { views: vec![xs] };
        let e = simclr(false)
            .step(&one, &ctx())
            .err()
            .map(|e| e.to_string());
        assert!(e
            .unwrap_or_default()
            .contains("SimCLR needs exactly 2 views per image, got 1"));
        let e = vicreg().step(&one, &ctx()).err().map(|e| e.to_string());
        assert!(e
            .unwrap_or_default()
            .contains("VICReg needs exactly 2 views"));
        let e = barlow().step(&one, &ctx()).err().map(|e| e.to_string());
        assert!(e
            .unwrap_or_default()
            .contains("Barlow Twins needs exactly 2 views"));
    }

    /// The step is the pair loss of the two views' projections: per view
    /// (batch norm statistics of each view) or, with `joint_forward`, of
    /// both as one batch, which differs.
    #[test]
    fn the_step_is_the_pair_loss_of_the_projections() {
        let x1 = structured_images(6, 1, 16, 1);
        let x2 = structured_images(6, 1, 16, 2);
        let batch = Batch {
            views: vec![x1.shallow_clone(), x2.shallow_clone()],
        };
        tch::manual_seed(0);
        let mut per_view = simclr(false);
        tch::manual_seed(0);
        let mut joint = simclr(true);
        let a = per_view.step(&batch, &ctx()).unwrap();
        let b = joint.step(&batch, &ctx()).unwrap();
        let f = |m: &SimClr, x: &Tensor| m.branch.forward_t(x, true);
        let want_a = per_view
            .loss()
            .pair(&f(&per_view, &x1), &f(&per_view, &x2), &SingleProcess);
        let z = f(&joint, &Tensor::cat(&[&x1, &x2], 0));
        let want_b = joint
            .loss()
            .pair(&z.narrow(0, 0, 6), &z.narrow(0, 6, 6), &SingleProcess);
        let v = |t: &Tensor| t.double_value(&[]);
        assert_eq!(v(&a.loss), v(&want_a.loss));
        assert_eq!(a.terms, want_a.terms);
        assert_eq!(v(&b.loss), v(&want_b.loss));
        assert!((v(&a.loss) - v(&b.loss)).abs() > 1e-6);

        let mut m = barlow();
        let out = m.step(&batch, &ctx()).unwrap();
        let want = m.loss().pair(
            &m.branch.forward_t(&x1, true),
            &m.branch.forward_t(&x2, true),
            &SingleProcess,
        );
        assert_eq!(v(&out.loss), v(&want.loss));
        assert_eq!(out.terms, want.terms);
    }

    /// Barlow Twins' monitors see standardised projections, the others the
    /// raw ones; the embedding is the encoder's.
    #[test]
    fn monitors_see_what_the_loss_compares() {
        let xs = structured_images(8, 1, 16, 3);
        let m = barlow();
        let p = tch::no_grad(|| m.project(&xs));
        let mean = p.mean_dim([0i64].as_slice(), false, Kind::Float);
        assert!(mean.abs().max().double_value(&[]) < 1e-4);
        let raw = tch::no_grad(|| m.branch.forward_t(&xs, false));
        assert!(
            raw.mean_dim([0i64].as_slice(), false, Kind::Float)
                .abs()
                .max()
                .double_value(&[])
                > 1e-3
        );
        let v = vicreg();
        let p = tch::no_grad(|| v.project(&xs));
        assert!(p.equal(&tch::no_grad(|| v.branch.forward_t(&xs, false))));
        assert_eq!(tch::no_grad(|| v.embed(&xs)).size(), [8, 16]);
    }

    /// Each of the three lowers its loss on structured images.
    #[test]
    fn each_method_learns() {
        let batches = [
            structured_images(16, 1, 16, 4),
            structured_images(16, 1, 16, 5),
        ];
        let mut methods: Vec<Box<dyn Method>> = vec![
            Box::new(simclr(false)),
            Box::new(barlow()),
            Box::new(vicreg()),
        ];
        for m in methods.iter_mut() {
            let (first, last) = train_steps(m.as_mut(), &batches, 30, 3e-3);
            assert!(last < first, "{}: {first} -> {last}", m.name());
        }
    }
}
