//! View sources: the graph data as a core `BatchSource`, every view drawn
//! from a ChaCha generator seeded by `(seed, epoch, batch)`, so an epoch
//! replays exactly after a resume.
//!
//! - [`NodeViews`]: full-graph steps on one graph; `steps_per_epoch`
//!   batches per (trainer) epoch, each two augmented views (GRACE) or the
//!   graph and a node permutation (DGI's corruption).
//! - [`GraphViews`]: mini-batches of graphs (shuffled each epoch, the last
//!   incomplete batch dropped), each batch as two augmented disjoint unions.
use crate::augment::AugmentConfig;
use crate::graph::View;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::Batch;
use selfsup_core::source::BatchSource;
use selfsup_core::Result;
use tch::Tensor;

fn rng(seed: u64, epoch: usize, b: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ ((epoch as u64) << 32 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// Full-graph views of one graph.
pub struct NodeViews {
    pub base: View,
    pub augment: AugmentConfig,
    pub steps_per_epoch: usize,
    pub seed: u64,
    /// DGI: the graph itself and a permutation of its nodes.
    pub corrupt: bool,
}

impl NodeViews {
    /// The batch of step `b` of `epoch`.
    pub fn batch(&self, epoch: usize, b: usize) -> Batch {
        let mut r = rng(self.seed, epoch, b);
        let n = self.base.nodes();
        let mut views = vec![Tensor::arange(n, (tch::Kind::Int64, tch::Device::Cpu))];
        if self.corrupt {
            self.base.push_into(&mut views);
            let mut perm: Vec<i64> = (0..n).collect();
            perm.shuffle(&mut r);
            views.push(Tensor::from_slice(&perm));
        } else {
            self.augment
                .view1
                .apply(&self.base, &mut r)
                .push_into(&mut views);
            self.augment
                .view2
                .apply(&self.base, &mut r)
                .push_into(&mut views);
        }
        Batch { views }
    }
}

impl BatchSource for NodeViews {
    fn batches_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }
    fn batch_size(&self) -> usize {
        self.base.nodes() as usize
    }
    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new((start..self.steps_per_epoch).map(move |b| Ok(self.batch(epoch, b))))
    }
}

/// Mini-batches of graphs.
pub struct GraphViews {
    pub graphs: Vec<View>,
    pub augment: AugmentConfig,
    pub batch_size: usize,
    pub seed: u64,
}

impl BatchSource for GraphViews {
    fn batches_per_epoch(&self) -> usize {
        self.graphs.len() / self.batch_size.max(1)
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let mut order: Vec<usize> = (0..self.graphs.len()).collect();
        order.shuffle(&mut rng(self.seed, epoch, usize::MAX >> 32));
        Box::new((start..self.batches_per_epoch()).map(move |b| {
            let ids = &order[b * self.batch_size..(b + 1) * self.batch_size];
            let members: Vec<&View> = ids.iter().map(|&i| &self.graphs[i]).collect();
            let joined = View::batch_of(&members);
            let mut r = rng(self.seed, epoch, b);
            let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            let mut views = vec![Tensor::from_slice(&idx)];
            self.augment
                .view1
                .apply(&joined, &mut r)
                .push_into(&mut views);
            self.augment
                .view2
                .apply(&joined, &mut r)
                .push_into(&mut views);
            Ok(Batch { views })
        }))
    }
}
