//! Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
//! Representations by Solving Jigsaw Puzzles", arXiv:1603.09246): an image is
//! cut into a 3x3 grid of tiles, the tiles are shuffled by one permutation
//! of a fixed set, each goes through the same encoder (a siamese "context-free
//! network"), and a classifier on the nine concatenated feature vectors
//! names the permutation (cross-entropy over the set).
//!
//! * **Permutation set**: a greedy walk over all 9! permutations that starts
//!   at one drawn from a fixed seed (`permutation_seed`) and repeatedly adds
//!   the permutation farthest from those already chosen (first one on ties).
//!   `selection = "sum"` (default) is the paper's Algorithm 1: farthest by
//!   summed Hamming distance. It spreads the set on average but lets near
//!   twins in: for 100 permutations from seed 0 the mean pairwise distance is
//!   8.08 and the minimum only 2 (one swap apart). `selection = "min"` is
//!   farthest-point sampling (largest distance to the *nearest* chosen one,
//!   summed distance breaking ties), which keeps the minimum high (see the
//!   tests). Deterministic either way; [`PermutationSet`] reports its minimum
//!   and mean pairwise Hamming distance (also logged as the
//!   `permutation_min_hamming` term).
//! * **Tiles**: `tile_ratio` of a grid cell (the paper: 64 of 75 pixels),
//!   placed anywhere inside the cell by default (`jitter = 1`), so the gaps
//!   between tiles vary and edges do not line up; each tile is normalised to
//!   zero mean and unit variance on its own (`normalize_tiles`, as in the
//!   paper) so low-level statistics do not give the position away.
//! * **Small images**: a 28x28 image has 9-pixel cells and 7-pixel tiles,
//!   fewer than the 8 pixels the default 4-block small CNN needs (its three
//!   unpadded 2x2 max-pools would reach zero size). `tile_size` resizes the
//!   tiles bilinearly before the encoder; the Fashion-MNIST preset uses 12
//!   (12 -> 6 -> 3 -> 1). Without it a too-small tile is an error that says so.
//! * The paper's per-tile `fc6` is folded into the classifier, which sees the
//!   concatenated encoder features directly.
//!
//! Input position `i` of a puzzle with permutation `p` holds tile `p[i]` of
//! the image (tiles numbered row-major); putting input `i` back at `p[i]`
//! solves it. Trained from one augmented view per image.
use super::pretext::{
    check_fraction, cross_entropy, prepare_tiles, single_view, square_side, ClassifierConfig,
    TileGrid,
};
use crate::models::{build_encoder, EncoderConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::encoder::Encoder;
use selfsup_core::head::MlpHead;
use selfsup_core::method::{Batch, LossOut, Method, StepCtx};
use selfsup_core::target::TargetKind;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Tiles per puzzle.
pub const TILES: usize = 9;
/// 9!: every ordering of nine tiles.
pub const ALL_PERMUTATIONS: usize = 362_880;

/// How the greedy selection of the permutation set measures "far".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermutationSelection {
    /// Largest summed Hamming distance to the chosen set (the paper's Algorithm 1).
    #[default]
    Sum,
    /// Largest Hamming distance to the nearest chosen permutation, ties
    /// broken by the summed distance (farthest-point sampling).
    Min,
}

/// Jigsaw settings (the `[method]` table with `name = "jigsaw"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JigsawConfig {
    /// Size of the permutation set, i.e. classes of the classifier (paper: 100 to 1000).
    pub permutations: usize,
    /// Seed of the first permutation of the greedy selection.
    pub permutation_seed: u64,
    /// `"sum"` (the paper's) or `"min"`: see the module docs.
    pub selection: PermutationSelection,
    /// Tile side as a fraction of a grid cell (paper: 64 / 75).
    pub tile_ratio: f64,
    /// Largest move of a tile from its cell's centre, as a fraction of the
    /// room left in the cell, each way (1: anywhere inside the cell).
    pub jitter: f64,
    /// Resize tiles to this side before the encoder (default: keep).
    pub tile_size: Option<i64>,
    /// Normalise every tile to zero mean and unit variance on its own.
    pub normalize_tiles: bool,
    /// The classifier on the nine concatenated tile features.
    pub head: ClassifierConfig,
}

impl Default for JigsawConfig {
    fn default() -> Self {
        Self {
            permutations: 100,
            permutation_seed: 0,
            selection: PermutationSelection::Sum,
            tile_ratio: 64.0 / 75.0,
            jitter: 1.0,
            tile_size: None,
            normalize_tiles: true,
            head: ClassifierConfig::default(),
        }
    }
}

impl JigsawConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<()> {
        if !(2..=ALL_PERMUTATIONS).contains(&self.permutations) {
            return Err(Error::Config(format!(
                "jigsaw: permutations must be between 2 and 9! = {ALL_PERMUTATIONS}, got {}",
                self.permutations
            )));
        }
        check_fraction("jigsaw", "tile_ratio", self.tile_ratio, true)?;
        check_fraction("jigsaw", "jitter", self.jitter, false)?;
        if let Some(s) = self.tile_size.filter(|&s| s < 1) {
            return Err(Error::Config(format!(
                "jigsaw: tile_size must be positive, got {s}"
            )));
        }
        self.head.validate("jigsaw")
    }
}

/// A set of permutations of the nine tiles, chosen for large Hamming distances.
#[derive(Debug, Clone, PartialEq)]
pub struct PermutationSet {
    /// `perms[c][i]`: the tile at input position `i` for class `c`.
    pub perms: Vec<[u8; TILES]>,
    /// Smallest Hamming distance between two permutations of the set.
    pub min_hamming: i64,
    /// Mean Hamming distance over all pairs.
    pub mean_hamming: f64,
}

/// Every permutation of `0..9` in lexicographic order.
fn all_permutations() -> Vec<[u8; TILES]> {
    let mut p: [u8; TILES] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut out = Vec::with_capacity(ALL_PERMUTATIONS);
    loop {
        out.push(p);
        // Next permutation: the longest non-increasing suffix, swap, reverse.
        let Some(i) = (0..TILES - 1).rev().find(|&i| p[i] < p[i + 1]) else {
            break;
        };
        let j = (i + 1..TILES).rev().find(|&j| p[j] > p[i]).unwrap_or(i + 1);
        p.swap(i, j);
        p[i + 1..].reverse();
    }
    out
}

/// Places where two permutations differ.
fn hamming(a: &[u8; TILES], b: &[u8; TILES]) -> u32 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u32
}

impl PermutationSet {
    /// The greedy maximal-Hamming-distance selection of `n` permutations
    /// (the paper's Algorithm 1 for [`PermutationSelection::Sum`]), from a
    /// first permutation drawn with `seed`.
    pub fn maximal_hamming(n: usize, seed: u64, selection: PermutationSelection) -> Result<Self> {
        if !(2..=ALL_PERMUTATIONS).contains(&n) {
            return Err(Error::Config(format!(
                "jigsaw: cannot choose {n} permutations of 9 tiles (2 to {ALL_PERMUTATIONS})"
            )));
        }
        let all = all_permutations();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut j = rng.gen_range(0..ALL_PERMUTATIONS);
        let mut chosen = vec![all[j]];
        let mut summed = vec![0u32; ALL_PERMUTATIONS];
        let mut nearest = vec![TILES as u32; ALL_PERMUTATIONS];
        let mut taken = vec![false; ALL_PERMUTATIONS];
        while chosen.len() < n {
            taken[j] = true;
            let last = all[j];
            let mut best = (0u64, None);
            for (k, p) in all.iter().enumerate() {
                let d = hamming(p, &last);
                summed[k] += d;
                nearest[k] = nearest[k].min(d);
                if taken[k] {
                    continue;
                }
                // The nearest distance dominates, the sum (< 2^22) breaks ties.
                let score = match selection {
                    PermutationSelection::Sum => u64::from(summed[k]),
                    PermutationSelection::Min => {
                        (u64::from(nearest[k]) << 22) + u64::from(summed[k])
                    }
                };
                if best.1.is_none() || score > best.0 {
                    best = (score, Some(k));
                }
            }
            j = best.1.unwrap_or(0);
            chosen.push(all[j]);
        }
        let mut min_hamming = TILES as u32;
        let mut total = 0u64;
        for (i, p) in chosen.iter().enumerate() {
            for q in &chosen[i + 1..] {
                let d = hamming(p, q);
                min_hamming = min_hamming.min(d);
                total += u64::from(d);
            }
        }
        let pairs = (n * (n - 1) / 2) as f64;
        Ok(Self {
            perms: chosen,
            min_hamming: i64::from(min_hamming),
            mean_hamming: total as f64 / pairs,
        })
    }

    /// The set as an `[N, 9]` `Int64` tensor on `device`.
    pub fn to_tensor(&self, device: Device) -> Tensor {
        let flat: Vec<i64> = self
            .perms
            .iter()
            .flat_map(|p| p.iter().map(|&v| i64::from(v)))
            .collect();
        Tensor::from_slice(&flat)
            .view([self.perms.len() as i64, TILES as i64])
            .to_device(device)
    }
}

/// The jigsaw method: encoder under `encoder.`, classifier under `head.`.
pub struct Jigsaw {
    vs: nn::VarStore,
    encoder: Box<dyn Encoder>,
    encoder_cfg: EncoderConfig,
    head: MlpHead,
    cfg: JigsawConfig,
    set: PermutationSet,
    perms: Tensor,
}

impl Jigsaw {
    /// Builds the encoder, the classifier and the permutation set on `device`.
    pub fn new(
        device: Device,
        encoder: &EncoderConfig,
        in_channels: i64,
        cfg: &JigsawConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let set =
            PermutationSet::maximal_hamming(cfg.permutations, cfg.permutation_seed, cfg.selection)?;
        let vs = nn::VarStore::new(device);
        let enc = build_encoder(&(vs.root() / "encoder"), encoder, in_channels);
        let head = cfg.head.build(
            &(vs.root() / "head"),
            TILES as i64 * enc.out_dim(),
            cfg.permutations as i64,
        );
        Ok(Self {
            vs,
            encoder: enc,
            encoder_cfg: encoder.clone(),
            head,
            cfg: cfg.clone(),
            perms: set.to_tensor(device),
            set,
        })
    }

    /// The variable prefix of the encoder (what gets exported).
    pub const ENCODER_PREFIX: &'static str = "encoder";

    /// The permutation set (the classes).
    pub fn permutations(&self) -> &PermutationSet {
        &self.set
    }

    /// Shuffled tiles `[B, 9, C, t, t]` (not yet normalised or resized) and
    /// permutation labels `[B]` of square images `x`.
    pub fn puzzles(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let side = square_side("jigsaw", x)?;
        let grid = TileGrid::new("jigsaw", side, self.cfg.tile_ratio, self.cfg.jitter)?;
        let tiles: Vec<Tensor> = (0..TILES as i64).map(|k| grid.tile_of_cell(x, k)).collect();
        let tiles = Tensor::stack(&tiles, 1);
        let n = x.size()[0];
        let labels = Tensor::randint(self.cfg.permutations as i64, [n], (Kind::Int64, x.device()));
        let order = self
            .perms
            .to_device(x.device())
            .index_select(0, &labels)
            .view([n, TILES as i64, 1, 1, 1])
            .expand_as(&tiles);
        Ok((tiles.gather(1, &order, false), labels))
    }

    /// Permutation logits `[B, permutations]` of shuffled tiles `[B, 9, C, t, t]`.
    pub fn logits(&self, puzzles: &Tensor, train: bool) -> Result<Tensor> {
        let size = puzzles.size();
        let n = size[0];
        let mut tiles = puzzles.flatten(0, 1);
        if self.cfg.normalize_tiles {
            let dims = [1i64, 2, 3];
            let mean = tiles.mean_dim(dims.as_slice(), true, Kind::Float);
            let std = tiles.std_dim(dims.as_slice(), false, true);
            tiles = (tiles - mean) / (std + 1e-5);
        }
        let tiles = prepare_tiles("jigsaw", tiles, self.cfg.tile_size, &self.encoder_cfg)?;
        let f = self.encoder.forward_t(&tiles, train).view([n, -1]);
        Ok(f.apply_t(&self.head, train))
    }
}

impl Method for Jigsaw {
    fn name(&self) -> &'static str {
        "jigsaw"
    }
    fn target(&self) -> TargetKind {
        TargetKind::Pretext
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch, _ctx: &StepCtx) -> Result<LossOut> {
        let x = single_view("jigsaw", batch)?;
        let (puzzles, labels) = self.puzzles(x)?;
        let (loss, accuracy) = cross_entropy(&self.logits(&puzzles, true)?, &labels);
        Ok(LossOut {
            loss,
            terms: vec![
                ("jigsaw_accuracy", accuracy),
                ("permutation_min_hamming", self.set.min_hamming as f64),
            ],
        })
    }
    fn embed(&self, xs: &Tensor) -> Tensor {
        self.encoder.forward_t(xs, false)
    }
    /// The encoder features of the whole image: the classifier only sees
    /// shuffled tiles, so the collapse monitors watch the representation.
    fn project(&self, xs: &Tensor) -> Tensor {
        self.embed(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::pretext::tests::coordinates;
    use selfsup_core::distributed::SingleProcess;
    use std::collections::HashSet;
    use tch::nn::OptimizerConfig;

    fn small(permutations: usize) -> JigsawConfig {
        JigsawConfig {
            permutations,
            head: ClassifierConfig {
                hidden_dim: 32,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn method(cfg: JigsawConfig) -> Jigsaw {
        let enc = EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        };
        Jigsaw::new(Device::Cpu, &enc, 1, &cfg).unwrap()
    }

    fn ctx(comm: &SingleProcess) -> StepCtx<'_> {
        StepCtx {
            step: 0,
            total_steps: 1,
            epoch: 0,
            steps_per_epoch: 1,
            comm,
        }
    }

    #[test]
    fn all_permutations_are_there_once() {
        let all = all_permutations();
        assert_eq!(all.len(), 362_880);
        assert_eq!(all[0], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(all[362_879], [8, 7, 6, 5, 4, 3, 2, 1, 0]);
        // Each holds every tile once, and the list is strictly increasing, so all distinct.
        for p in &all {
            let mut s = *p;
            s.sort();
            assert_eq!(s, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn permutation_set_is_deterministic_distinct_and_spread() {
        use PermutationSelection::{Min, Sum};
        for selection in [Sum, Min] {
            let a = PermutationSet::maximal_hamming(100, 0, selection).unwrap();
            let b = PermutationSet::maximal_hamming(100, 0, selection).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.perms.len(), 100);
            let distinct: HashSet<[u8; 9]> = a.perms.iter().copied().collect();
            assert_eq!(distinct.len(), 100);
            for p in &a.perms {
                let mut s = *p;
                s.sort();
                assert_eq!(s, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
            }
            // Recompute the distances in plain Rust.
            let mut min = 9;
            let mut sum = 0;
            for (i, p) in a.perms.iter().enumerate() {
                for q in &a.perms[i + 1..] {
                    let d = p.iter().zip(q).filter(|(x, y)| x != y).count() as i64;
                    min = min.min(d);
                    sum += d;
                }
            }
            assert_eq!(a.min_hamming, min, "{selection:?}");
            assert!((a.mean_hamming - sum as f64 / 4950.0).abs() < 1e-9);
            // Uniformly random permutations differ in 8 places on average.
            assert!(a.mean_hamming >= 8.0, "{selection:?}: {}", a.mean_hamming);
            let other = PermutationSet::maximal_hamming(100, 1, selection).unwrap();
            assert_ne!(other.perms, a.perms);
        }
        // Measured: the paper's sum criterion lets a pair one swap apart in;
        // farthest-point sampling keeps every pair far apart.
        let sum = PermutationSet::maximal_hamming(100, 0, Sum).unwrap();
        let min = PermutationSet::maximal_hamming(100, 0, Min).unwrap();
        assert_eq!(sum.min_hamming, 2);
        assert!(
            (sum.mean_hamming - 8.08).abs() < 0.005,
            "{}",
            sum.mean_hamming
        );
        assert_eq!(min.min_hamming, 6);
        assert!(PermutationSet::maximal_hamming(1, 0, Sum).is_err());
    }

    #[test]
    fn putting_tiles_back_by_the_permutation_rebuilds_the_image() {
        // 27 px, whole 9-px cells as tiles, no jitter: the tiles tile the image.
        let m = method(JigsawConfig {
            tile_ratio: 1.0,
            jitter: 0.0,
            ..small(10)
        });
        let x = Tensor::cat(&[coordinates(27), coordinates(27) + 5000.0], 0).repeat([8, 1, 1, 1]);
        let (puzzles, labels) = m.puzzles(&x).unwrap();
        assert_eq!(puzzles.size(), vec![16, 9, 1, 9, 9]);
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        for (b, &c) in labels.iter().enumerate() {
            let p = m.permutations().perms[c as usize];
            let mut placed: Vec<Option<Tensor>> = (0..9).map(|_| None).collect();
            for (i, &tile) in p.iter().enumerate() {
                placed[tile as usize] = Some(puzzles.get(b as i64).get(i as i64));
            }
            let rows: Vec<Tensor> = placed
                .chunks(3)
                .map(|r| {
                    let r: Vec<&Tensor> = r.iter().map(|t| t.as_ref().unwrap()).collect();
                    Tensor::cat(&r, 2)
                })
                .collect();
            let rebuilt = Tensor::cat(&rows, 1);
            assert!(rebuilt.equal(&x.get(b as i64)), "image {b}, class {c}");
        }
    }

    #[test]
    fn step_loss_is_cross_entropy_of_the_logits() {
        let m = method(small(12));
        let x = Tensor::randn([5, 1, 24, 24], (Kind::Float, Device::Cpu));
        let (puzzles, labels) = m.puzzles(&x).unwrap();
        let logits = m.logits(&puzzles, true).unwrap();
        assert_eq!(logits.size(), vec![5, 12]);
        let (loss, _) = cross_entropy(&logits, &labels);
        let rows = Vec::<Vec<f32>>::try_from(&logits).unwrap();
        let labels = Vec::<i64>::try_from(&labels).unwrap();
        let by_hand: f64 = rows
            .iter()
            .zip(&labels)
            .map(|(r, &k)| {
                r.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln() - f64::from(r[k as usize])
            })
            .sum::<f64>()
            / 5.0;
        assert!((loss.double_value(&[]) - by_hand).abs() < 1e-4);
    }

    #[test]
    fn a_few_steps_lower_the_loss() {
        // One fixed random scene seen with a little noise: every tile has a
        // look of its own even after per-tile normalisation.
        let mut m = method(small(8));
        let scene = Tensor::rand([1, 1, 24, 24], (Kind::Float, Device::Cpu));
        let x = scene + Tensor::rand([32, 1, 24, 24], (Kind::Float, Device::Cpu)) * 0.1;
        let batch = Batch { views: vec![x] };
        let comm = SingleProcess;
        let mut opt = nn::Adam::default().build(m.var_store(), 3e-3).unwrap();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let out = m.step(&batch, &ctx(&comm)).unwrap();
            opt.backward_step(&out.loss);
            losses.push(out.loss.double_value(&[]));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&losses[..5]), mean(&losses[35..]));
        assert!(last < first - 0.5, "{first} -> {last}: {losses:?}");
    }

    #[test]
    fn bad_input_and_config_are_refused() {
        let mut m = method(small(4));
        let comm = SingleProcess;
        let x = Tensor::zeros([2, 1, 24, 24], (Kind::Float, Device::Cpu));
        let two = Batch {
            views: vec![x.shallow_clone(), x],
        };
        assert!(m
            .step(&two, &ctx(&comm))
            .unwrap_err()
            .to_string()
            .contains("views = 1"));
        let enc = EncoderConfig::default();
        let mut deep = Jigsaw::new(Device::Cpu, &enc, 1, &small(4)).unwrap();
        let x28 = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let err = deep
            .step(&Batch { views: vec![x28] }, &ctx(&comm))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile_size"), "{err}");
        for bad in [
            small(1),
            JigsawConfig {
                tile_ratio: 1.2,
                ..small(4)
            },
            JigsawConfig {
                jitter: -0.1,
                ..small(4)
            },
        ] {
            assert!(Jigsaw::new(Device::Cpu, &enc, 1, &bad).is_err(), "{bad:?}");
        }
        let err = toml::from_str::<JigsawConfig>("grid = 4\n").unwrap_err();
        assert!(err.to_string().contains("grid"), "{err}");
    }
}
