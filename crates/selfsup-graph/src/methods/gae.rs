//! Graph auto-encoder (GAE, Kipf & Welling 2016, arXiv:1611.07308): a GCN
//! encodes the nodes, `Z = GCN_out(act(GCN(X, A)), A)`, and an inner-product
//! decoder scores a node pair by the logit `z_u . z_v`. Training
//! reconstructs the edges: binary cross-entropy on every (training) edge
//! and on as many node pairs drawn uniformly among the non-edges
//! ([`gae_loss`], PyTorch Geometric's `GAE.recon_loss` with sampled
//! negatives rather than the full dense adjacency of the paper).
//!
//! The encoder is the crate's GCN (`[encoder]`, an activation after every
//! layer) followed by GAE's own output GCN layer without activation
//! (`[method] out_dim`; `gae.out.*`), as the paper's second layer: its
//! output `Z` is the representation evaluated and exported.
//!
//! Negatives are drawn from a ChaCha generator seeded by the training seed
//! and the global step, so a resumed run draws what the uninterrupted one
//! would have.
use super::{view_of, GraphMethod};
use crate::encoders::gcn::GcnConv;
use crate::encoders::{EncoderConfig, GraphEncoder};
use crate::graph::View;
use crate::propagation::Propagation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tch::{nn, Kind, Tensor};

/// `[method] name = "gae"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GaeConfig {
    /// Width of the output GCN layer, the embedding (GAE: 16).
    pub out_dim: i64,
}

impl Default for GaeConfig {
    fn default() -> Self {
        Self { out_dim: 16 }
    }
}

/// GAE's reconstruction loss on node embeddings `z` `[N, D]`: the mean
/// `-log sigmoid(z_u . z_v)` over the positive pairs `pos` `[2, P]` plus the
/// mean `-log(1 - sigmoid(z_u . z_v))` over the negative pairs `neg`
/// `[2, Q]` (as softplus, stable for any logit).
pub fn gae_loss(z: &Tensor, pos: &Tensor, neg: &Tensor) -> Tensor {
    let logits = |pairs: &Tensor| {
        (z.index_select(0, &pairs.get(0)) * z.index_select(0, &pairs.get(1))).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        )
    };
    let pos_loss = (-logits(pos)).softplus().mean(Kind::Float);
    let neg_loss = logits(neg).softplus().mean(Kind::Float);
    pos_loss + neg_loss
}

/// Draws `count` node pairs `u != v` of `n` nodes uniformly among those
/// that are not in `edges` (undirected, `(min, max)`), as `[2, count]`; at
/// most `64 * count + 64` draws, so a graph almost complete gives fewer.
pub fn sample_negatives(
    n: i64,
    count: usize,
    edges: &HashSet<(i64, i64)>,
    rng: &mut ChaCha8Rng,
) -> Tensor {
    let (mut src, mut dst) = (Vec::with_capacity(count), Vec::with_capacity(count));
    if n >= 2 {
        let mut tries = 0usize;
        while src.len() < count && tries < 64 * count + 64 {
            tries += 1;
            let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
            if a != b && !edges.contains(&(a.min(b), a.max(b))) {
                src.push(a);
                dst.push(b);
            }
        }
    }
    let k = src.len() as i64;
    src.extend(dst);
    Tensor::from_slice(&src).view([2, k])
}

/// GAE on a node-level graph.
pub struct Gae {
    vs: nn::VarStore,
    encoder: GraphEncoder,
    out: GcnConv,
    base: View,
    /// The training graph's edges, which negatives avoid.
    edges: HashSet<(i64, i64)>,
    seed: u64,
}

impl Gae {
    /// Builds the method for `base` (the training graph); negatives are
    /// drawn from `seed` and the step.
    pub fn new(
        base: View,
        encoder: &EncoderConfig,
        cfg: &GaeConfig,
        seed: u64,
        device: tch::Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let enc = GraphEncoder::new(&(vs.root() / "encoder"), base.x.size()[1], encoder);
        let out = GcnConv::new(&(vs.root() / "gae" / "out"), enc.node_dim(), cfg.out_dim);
        let pairs = Vec::<i64>::try_from(base.edges.to_device(tch::Device::Cpu).view([-1]))
            .unwrap_or_default();
        let e = pairs.len() / 2;
        let edges = (0..e)
            .map(|i| (pairs[i].min(pairs[e + i]), pairs[i].max(pairs[e + i])))
            .collect();
        Self {
            vs,
            encoder: enc,
            out,
            base: base.to_device(device),
            edges,
            seed,
        }
    }

    /// `Z` of features `x` on the graph of `prop`.
    fn z(&self, x: &Tensor, prop: &Propagation, train: bool) -> Tensor {
        self.out
            .forward(&self.encoder.nodes_on(x, prop, train), prop)
    }
}

impl Method for Gae {
    fn name(&self) -> &'static str {
        "gae"
    }
    fn target(&self) -> TargetKind {
        TargetKind::OtherView
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<LossOut> {
        let v = view_of(batch, 0);
        let pos = v.edges.shallow_clone();
        let count = pos.size()[1] as usize;
        if count == 0 {
            return Err(Error::Data(
                "gae: the view has no edge to reconstruct; lower [augment.view1] edge_drop".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ ctx.step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6A_E000,
        );
        let neg = sample_negatives(v.nodes(), count, &self.edges, &mut rng).to_device(pos.device());
        if neg.size()[1] == 0 {
            return Err(Error::Data(
                "gae: no node pair of the graph is a non-edge: nothing to contrast the edges with"
                    .into(),
            ));
        }
        let z = self.z(&v.x, &self.encoder.propagation(&v), true);
        Ok(LossOut {
            loss: gae_loss(&z, &pos, &neg),
            terms: vec![],
        })
    }
    /// `Z` of the whole (training) graph with node features `xs`.
    fn embed(&self, xs: &Tensor) -> Tensor {
        let v = View {
            x: xs.shallow_clone(),
            ..self.base.share()
        };
        self.z(&v.x, &self.encoder.propagation(&v), false)
    }
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

impl GraphMethod for Gae {
    fn encoder(&self) -> &GraphEncoder {
        &self.encoder
    }
    fn represent(&self, v: &View) -> Tensor {
        tch::no_grad(|| self.z(&v.x, &self.encoder.propagation(v), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::gcn::GcnConfig;
    use crate::graph::{Featurize, GraphBuilder};
    use selfsup_core::distributed::SingleProcess;

    #[test]
    fn loss_matches_an_independent_computation() {
        // /tmp/link_ref.py, numpy:
        //   z = [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [0.1, 0.3]]
        //   P = [(0, 1), (1, 2), (2, 3)]; N = [(0, 2), (1, 3), (0, 3)]
        //   -mean(log(sigmoid(z_u . z_v) over P)) - mean(log(1 - sigmoid(z_u . z_v) over N))
        let z = Tensor::from_slice(&[0.5f32, -1.0, 1.5, 0.25, -0.75, 2.0, 0.1, 0.3]).view([4, 2]);
        let pos = Tensor::from_slice(&[0i64, 1, 2, 1, 2, 3]).view([2, 3]);
        let neg = Tensor::from_slice(&[0i64, 1, 0, 2, 3, 3]).view([2, 3]);
        let l = gae_loss(&z, &pos, &neg).double_value(&[]);
        assert!((l - 1.1564434348443684).abs() < 1e-6, "{l}");
    }

    #[test]
    fn negatives_are_non_edges_and_reproducible() {
        let edges: HashSet<(i64, i64)> = [(0, 1), (1, 2), (2, 3), (0, 3)].into();
        let draw = |s| sample_negatives(5, 50, &edges, &mut ChaCha8Rng::seed_from_u64(s));
        let a = draw(7);
        assert_eq!(a.size(), [2, 50]);
        assert!(a.equal(&draw(7)) && !a.equal(&draw(8)));
        let flat = Vec::<i64>::try_from(a.view([-1])).unwrap();
        for i in 0..50 {
            let (u, v) = (flat[i], flat[50 + i]);
            assert!(u != v && !edges.contains(&(u.min(v), u.max(v))), "{u} {v}");
        }
        // A complete graph has no non-edge: nothing is drawn, no endless loop.
        let full: HashSet<(i64, i64)> = [(0, 1), (0, 2), (1, 2)].into();
        let none = sample_negatives(3, 10, &full, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(none.size(), [2, 0]);
    }

    #[test]
    fn a_step_reconstructs_the_edges_and_the_loss_falls() {
        let _rng = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(0);
        // Two 6-cliques joined by one edge.
        let mut b = GraphBuilder::new(12);
        for c in [0, 6] {
            for u in c..c + 6 {
                for v in u + 1..c + 6 {
                    b.add_edge(u, v, 1.0);
                }
            }
        }
        b.add_edge(5, 6, 1.0);
        let (f, d) = Featurize::Identity.apply(&b).unwrap();
        let base = b.build(f, d, None).tensors();
        let enc = EncoderConfig::Gcn(GcnConfig {
            dims: vec![16],
            ..Default::default()
        });
        let mut m = Gae::new(
            base.share(),
            &enc,
            &GaeConfig { out_dim: 8 },
            0,
            tch::Device::Cpu,
        );
        assert_eq!(m.represent(&base).size(), [12, 8]);
        let mut views = vec![Tensor::arange(12, (Kind::Int64, tch::Device::Cpu))];
        base.push_into(&mut views);
        let batch = Batch { views };
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &m.vs, 0.01).unwrap();
        let comm = SingleProcess;
        let mut losses = Vec::new();
        for step in 0..100u64 {
            let ctx = StepCtx {
                step,
                total_steps: 100,
                epoch: 0,
                steps_per_epoch: 100,
                comm: &comm,
            };
            let l = m.step(&batch, &ctx).unwrap().loss;
            losses.push(l.double_value(&[]));
            opt.backward_step(&l);
        }
        let (first, last) = (losses[0], losses[99]);
        assert!(last < 0.7 * first, "{first} -> {last}");
        // The decoder now tells the cliques' edges from pairs across them.
        let z = m.represent(&base);
        let score = |u: i64, v: i64| (z.get(u) * z.get(v)).sum(Kind::Float).double_value(&[]);
        assert!(score(0, 1) > score(0, 7) && score(7, 8) > score(2, 9));
    }
}
