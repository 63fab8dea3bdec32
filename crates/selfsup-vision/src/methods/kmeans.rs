//! Seeded k-means on the device, for [`super::deepcluster`].
//!
//! Lloyd's algorithm on the rows of `x` `[N, D]`, wherever `x` lives:
//! distances are computed `chunk` rows at a time (a `[chunk, K]` block, so
//! memory stays bounded whatever `N`), the centroid sums with one
//! `index_add`. Initialisation is k-means++ (Arthur & Vassilvitskii 2007) or
//! `K` distinct random rows, drawn from a ChaCha generator seeded by the
//! caller, so the same data and seed give the same clustering.
//!
//! Empty clusters are handled as DeepCluster does (Caron et al. 2018, with
//! faiss): during the iterations an empty cluster takes the centroid of the
//! largest cluster, and the two are pushed apart by a small multiplicative
//! perturbation (`c (1 +- eps s)`, `s` random signs, `eps = 1/1024`), so the
//! next assignment splits that cluster's points between them. After the last
//! assignment, any cluster still empty takes the point of the largest cluster
//! farthest from its centroid; with `N >= K` no cluster is left empty.
//!
//! Everything runs in float32 with autocast off (squared distances as
//! `|x|^2 - 2 x.c + |c|^2` lose too much in bfloat16).
//!
//! Also here: [`Whitening`], the PCA-whitening DeepCluster applies to its
//! features before k-means (fitted in float64), and [`nmi`], the normalised
//! mutual information between two clusterings of the same rows.
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_core::autocast::full_precision;
use selfsup_core::loss::scores::normalize;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Relative size of the perturbation that splits a cluster in two.
const SPLIT_EPS: f64 = 1.0 / 1024.0;

/// How the first centroids are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KMeansInit {
    /// k-means++: each next centroid is a row drawn with probability
    /// proportional to its squared distance to the nearest chosen one.
    #[default]
    PlusPlus,
    /// `K` distinct rows drawn uniformly.
    Random,
}

/// k-means settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters `K` (at most the number of rows).
    pub k: i64,
    /// Lloyd iterations (assignment + update) after the initialisation.
    pub iterations: usize,
    /// How the first centroids are chosen.
    pub init: KMeansInit,
    /// Rows whose distances to the `K` centroids are computed at once.
    pub chunk: i64,
}

/// A clustering of `N` rows into `K` clusters.
#[derive(Debug)]
pub struct Clustering {
    /// Centroids `[K, D]` (float32, on the device of the data).
    pub centroids: Tensor,
    /// Cluster of each row, `[N]` int64 (each row's nearest centroid, except
    /// rows moved into otherwise empty clusters).
    pub assignments: Tensor,
    /// Rows per cluster (`K` entries, none zero when `N >= K`).
    pub sizes: Vec<i64>,
    /// Mean squared distance of the rows to their centroid.
    pub inertia: f64,
    /// Empty clusters re-seeded (during the iterations and after them).
    pub reseeded: usize,
}

/// The nearest of `centroids` `[K, D]` to each row of `x` `[N, D]` and its
/// squared Euclidean distance (`[N]` int64, `[N]` float32), `chunk` rows
/// at a time.
pub fn nearest(x: &Tensor, centroids: &Tensor, chunk: i64) -> (Tensor, Tensor) {
    full_precision(|| tch::no_grad(|| nearest_f32(x, centroids, chunk)))
}

fn nearest_f32(x: &Tensor, centroids: &Tensor, chunk: i64) -> (Tensor, Tensor) {
    let x = x.to_kind(Kind::Float);
    let c = centroids.to_kind(Kind::Float).to_device(x.device());
    let c2 = c
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let n = x.size()[0];
    let chunk = chunk.max(1);
    let mut idx = Vec::new();
    let mut dist = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let rows = x.narrow(0, start, len);
        let r2 = rows
            .square()
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        let d = (r2 - rows.matmul(&c.transpose(0, 1)) * 2.0 + c2.unsqueeze(0)).clamp_min(0.0);
        let (v, i) = d.min_dim(1, false);
        dist.push(v);
        idx.push(i);
        start += len;
    }
    if idx.is_empty() {
        let dev = x.device();
        return (
            Tensor::zeros([0], (Kind::Int64, dev)),
            Tensor::zeros([0], (Kind::Float, dev)),
        );
    }
    (Tensor::cat(&idx, 0), Tensor::cat(&dist, 0))
}

/// Clusters the rows of `x` `[N, D]` (see the module docs); errors when `x`
/// is not a finite matrix of at least `K >= 1` rows.
pub fn kmeans(x: &Tensor, cfg: &KMeansConfig, seed: u64) -> Result<Clustering> {
    let (n, d) = match x.size().as_slice() {
        [n, d] => (*n, *d),
        other => {
            return Err(Error::Config(format!(
                "k-means needs a [rows, dim] matrix, got shape {other:?}"
            )))
        }
    };
    let k = cfg.k;
    if k < 1 || n < k || d < 1 {
        return Err(Error::Config(format!(
            "k-means: {k} clusters need at least {k} rows of dimension >= 1, got {n} rows of dimension {d}"
        )));
    }
    full_precision(|| tch::no_grad(|| lloyd(x, cfg, seed, n, d)))
}

/// [`kmeans`] on checked input: `n >= k` rows of dimension `d`.
fn lloyd(x: &Tensor, cfg: &KMeansConfig, seed: u64, n: i64, d: i64) -> Result<Clustering> {
    let k = cfg.k;
    let x = x.to_kind(Kind::Float);
    if x.isfinite().all().int64_value(&[]) == 0 {
        return Err(Error::Config(
            "k-means: the features hold NaN or infinite values".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut c = match cfg.init {
        KMeansInit::PlusPlus => plus_plus(&x, k, &mut rng),
        KMeansInit::Random => {
            let rows: Vec<i64> = sample(&mut rng, n as usize, k as usize)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            x.index_select(0, &Tensor::from_slice(&rows).to_device(x.device()))
        }
    };
    let mut reseeded = 0;
    for _ in 0..cfg.iterations {
        let (assign, _) = nearest(&x, &c, cfg.chunk);
        let counts_t = assign.bincount::<Tensor>(None, k);
        let mut counts: Vec<i64> = Vec::<i64>::try_from(&counts_t.to_device(tch::Device::Cpu))
            .map_err(|e| Error::Config(format!("k-means: cluster sizes: {e}")))?;
        let sums = Tensor::zeros([k, d], (Kind::Float, x.device())).index_add(0, &assign, &x);
        let denom = counts_t.clamp_min(1).to_kind(Kind::Float).unsqueeze(1);
        let next = sums / denom;
        for j in 0..k as usize {
            if counts[j] != 0 {
                continue;
            }
            let i = largest(&counts);
            let signs: Vec<f32> = (0..d)
                .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
                .collect();
            let s = Tensor::from_slice(&signs).to_device(x.device()) * SPLIT_EPS;
            let ci = next.get(i as i64);
            let grown = &ci * (s.ones_like() + &s);
            let shrunk = &ci * (s.ones_like() - &s);
            next.get(j as i64).copy_(&grown);
            next.get(i as i64).copy_(&shrunk);
            let half = counts[i] / 2;
            counts[j] = counts[i] - half;
            counts[i] = half;
            reseeded += 1;
        }
        c = next;
    }
    let (assign, dist) = nearest(&x, &c, cfg.chunk);
    let cpu = tch::Device::Cpu;
    let mut assign_v = Vec::<i64>::try_from(&assign.to_device(cpu))
        .map_err(|e| Error::Config(format!("k-means: assignments: {e}")))?;
    let mut dist_v = Vec::<f32>::try_from(&dist.to_device(cpu))
        .map_err(|e| Error::Config(format!("k-means: distances: {e}")))?;
    let mut sizes = vec![0i64; k as usize];
    for &a in &assign_v {
        if let Some(s) = usize::try_from(a).ok().and_then(|a| sizes.get_mut(a)) {
            *s += 1;
        }
    }
    // Still empty after the last assignment: take the point of the
    // largest cluster farthest from its centroid.
    for j in 0..k as usize {
        if sizes[j] != 0 {
            continue;
        }
        let i = largest(&sizes);
        let far = assign_v
            .iter()
            .zip(&dist_v)
            .enumerate()
            .filter(|(_, (&a, _))| a == i as i64)
            .max_by(|a, b| a.1 .1.total_cmp(b.1 .1))
            .map(|(p, _)| p);
        let Some(p) = far else { continue };
        assign_v[p] = j as i64;
        dist_v[p] = 0.0;
        sizes[i] -= 1;
        sizes[j] += 1;
        c.get(j as i64).copy_(&x.get(p as i64));
        let members: Vec<i64> = assign_v
            .iter()
            .enumerate()
            .filter(|(_, &a)| a == i as i64)
            .map(|(q, _)| q as i64)
            .collect();
        let rows = Tensor::from_slice(&members).to_device(x.device());
        let mean = x
            .index_select(0, &rows)
            .mean_dim([0i64].as_slice(), false, Kind::Float);
        c.get(i as i64).copy_(&mean);
        reseeded += 1;
    }
    let inertia = dist_v.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    Ok(Clustering {
        centroids: c,
        assignments: Tensor::from_slice(&assign_v).to_device(x.device()),
        sizes,
        inertia,
        reseeded,
    })
}

/// Index of the largest entry (the first of ties).
fn largest(counts: &[i64]) -> usize {
    let mut best = 0;
    for (i, &c) in counts.iter().enumerate() {
        if c > counts[best] {
            best = i;
        }
    }
    best
}

/// k-means++ seeding: `k` rows of `x`, the first uniform, each next one
/// drawn with probability proportional to its squared distance to the
/// nearest row already chosen (uniformly among the rest when every row
/// coincides with a chosen one).
fn plus_plus(x: &Tensor, k: i64, rng: &mut ChaCha8Rng) -> Tensor {
    let n = x.size()[0];
    let dev = x.device();
    let sq = |row: i64| -> Tensor {
        (x - x.get(row).unsqueeze(0)).square().sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Double,
        )
    };
    let first = rng.gen_range(0..n);
    let mut chosen = vec![first];
    let mut mind = sq(first);
    while (chosen.len() as i64) < k {
        let cum = mind.cumsum(0, Kind::Double);
        let total = cum.double_value(&[n - 1]);
        let next = if total > 0.0 && total.is_finite() {
            let target = rng.gen::<f64>() * total;
            // The first row whose cumulative weight passes the target: a row
            // of positive weight, since the target is below the total.
            let below = cum.le(target).sum(Kind::Int64).int64_value(&[]);
            below.clamp(0, n - 1)
        } else {
            // Every row sits on a chosen one: any row not chosen yet.
            let rest: Vec<i64> = (0..n).filter(|r| !chosen.contains(r)).collect();
            let pick = rng.gen_range(0..rest.len().max(1));
            rest.get(pick).copied().unwrap_or(first)
        };
        chosen.push(next);
        mind = mind.minimum(&sq(next));
    }
    x.index_select(0, &Tensor::from_slice(&chosen).to_device(dev))
}

/// PCA-whitening fitted on rows of features, as DeepCluster prepares its
/// features for k-means (Caron et al. 2018: PCA to a few hundred dimensions,
/// whitening, l2 normalisation): `z = l2((x - mean) matrix)`.
#[derive(Debug)]
pub struct Whitening {
    /// Mean row `[D]` (float32).
    pub mean: Tensor,
    /// `[D, d]`: the `d` leading principal directions, each divided by the
    /// square root of its variance (float32).
    pub matrix: Tensor,
}

/// Smallest variance kept, relative to the largest, before dividing by its
/// square root (directions of no variance are not blown up).
const MIN_RELATIVE_VARIANCE: f64 = 1e-6;

impl Whitening {
    /// Fits the whitening of the rows of `x` `[N, D]` onto its `dim` leading
    /// principal components (`dim = 0`: no PCA, the identity); errors when
    /// `x` is not a finite matrix of at least 2 rows or `dim > D`.
    pub fn fit(x: &Tensor, dim: i64) -> Result<Self> {
        let (n, d) = match x.size().as_slice() {
            [n, d] => (*n, *d),
            other => {
                return Err(Error::Config(format!(
                    "PCA-whitening needs a [rows, dim] matrix, got shape {other:?}"
                )))
            }
        };
        if n < 2 || d < 1 || dim < 0 || dim > d {
            return Err(Error::Config(format!(
                "PCA-whitening to {dim} dimensions needs at least 2 rows of dimension >= {dim}, \
                 got {n} rows of dimension {d}"
            )));
        }
        full_precision(|| {
            tch::no_grad(|| {
                let x = x.to_kind(Kind::Double);
                if x.isfinite().all().int64_value(&[]) == 0 {
                    return Err(Error::Config(
                        "PCA-whitening: the features hold NaN or infinite values".into(),
                    ));
                }
                if dim == 0 {
                    return Ok(Self {
                        mean: Tensor::zeros([d], (Kind::Float, x.device())),
                        matrix: Tensor::eye(d, (Kind::Float, x.device())),
                    });
                }
                let mean = x.mean_dim([0i64].as_slice(), false, Kind::Double);
                let centred = &x - mean.unsqueeze(0);
                let cov = centred.transpose(0, 1).matmul(&centred) / (n - 1) as f64;
                let (values, vectors) = cov.f_linalg_eigh("L").map_err(|e| {
                    Error::Config(format!("PCA-whitening: eigendecomposition: {e}"))
                })?;
                // Ascending eigenvalues: the leading `dim` are the last, taken
                // in decreasing order.
                let keep =
                    Tensor::arange_start_step(d - 1, d - 1 - dim, -1, (Kind::Int64, x.device()));
                let values = values.index_select(0, &keep);
                let vectors = vectors.index_select(1, &keep);
                let top = values.max().double_value(&[]).max(0.0);
                let floor = (top * MIN_RELATIVE_VARIANCE).max(f64::MIN_POSITIVE);
                let scale = values.clamp_min(floor).rsqrt();
                Ok(Self {
                    mean: mean.to_kind(Kind::Float),
                    matrix: (vectors * scale.unsqueeze(0)).to_kind(Kind::Float),
                })
            })
        })
    }

    /// The whitened rows of `x` `[N, D]` before the l2 normalisation, `[N, d]`.
    pub fn project(x: &Tensor, mean: &Tensor, matrix: &Tensor) -> Tensor {
        full_precision(|| {
            tch::no_grad(|| {
                let x = x.to_kind(Kind::Float);
                let dev = x.device();
                (x - mean.to_device(dev).unsqueeze(0))
                    .matmul(&matrix.to_kind(Kind::Float).to_device(dev))
            })
        })
    }

    /// `l2(project(x))`: the rows k-means clusters.
    pub fn apply(x: &Tensor, mean: &Tensor, matrix: &Tensor) -> Tensor {
        normalize(&Self::project(x, mean, matrix))
    }
}

/// Normalised mutual information `I(a; b) / sqrt(H(a) H(b))` of two labellings
/// of the same rows (Caron et al. 2018 follow their clusterings with it): 1
/// when one is a relabelling of the other, near 0 when independent; 0 when
/// either has a single label (or the lists are empty); `None` when their
/// lengths differ or a label is negative.
pub fn nmi(a: &[i64], b: &[i64]) -> Option<f64> {
    if a.len() != b.len() || a.iter().chain(b).any(|&v| v < 0) {
        return None;
    }
    let n = a.len();
    if n == 0 {
        return Some(0.0);
    }
    let mut joint = std::collections::HashMap::<(i64, i64), usize>::new();
    let mut ca = std::collections::HashMap::<i64, usize>::new();
    let mut cb = std::collections::HashMap::<i64, usize>::new();
    for (&x, &y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1;
        *ca.entry(x).or_default() += 1;
        *cb.entry(y).or_default() += 1;
    }
    let t = n as f64;
    let entropy = |c: &std::collections::HashMap<i64, usize>| -> f64 {
        c.values()
            .map(|&k| {
                let p = k as f64 / t;
                -p * p.ln()
            })
            .sum()
    };
    let (ha, hb) = (entropy(&ca), entropy(&cb));
    if ha <= 0.0 || hb <= 0.0 {
        return Some(0.0);
    }
    let mut mi = 0.0;
    for (&(x, y), &k) in &joint {
        let pxy = k as f64 / t;
        let px = ca.get(&x).copied().unwrap_or(1) as f64 / t;
        let py = cb.get(&y).copied().unwrap_or(1) as f64 / t;
        mi += pxy * (pxy / (px * py)).ln();
    }
    Some((mi / (ha * hb).sqrt()).clamp(0.0, 1.0))
}

/// The shape of a cluster-size distribution, for the collapse monitors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeStats {
    /// Entropy of the sizes over `ln K`: 1 when every cluster holds as many
    /// rows, 0 when one holds them all.
    pub entropy: f64,
    /// Fraction of the rows in the largest cluster (`1/K` at best, 1 when collapsed).
    pub largest: f64,
    /// Clusters without any row.
    pub empty: usize,
}

/// [`SizeStats`] of `sizes` (row counts per cluster).
pub fn size_stats(sizes: &[i64]) -> SizeStats {
    let total: i64 = sizes.iter().map(|&s| s.max(0)).sum();
    let k = sizes.len();
    if total == 0 || k == 0 {
        return SizeStats {
            entropy: 0.0,
            largest: 0.0,
            empty: k,
        };
    }
    let t = total as f64;
    let h: f64 = sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| {
            let p = s as f64 / t;
            -p * p.ln()
        })
        .sum();
    SizeStats {
        entropy: if k > 1 { h / (k as f64).ln() } else { 1.0 },
        largest: sizes.iter().copied().max().unwrap_or(0) as f64 / t,
        empty: sizes.iter().filter(|&&s| s <= 0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg(k: i64, init: KMeansInit) -> KMeansConfig {
        KMeansConfig {
            k,
            iterations: 10,
            init,
            chunk: 7,
        }
    }

    /// `per` points around each of `centres.len()` centres (noise std 0.1),
    /// blob-major, and the blob of each point.
    fn blobs(centres: &[[f32; 3]], per: i64, seed: i64) -> (Tensor, Vec<i64>) {
        tch::manual_seed(seed);
        let c = Tensor::from_slice(&centres.concat()).view([-1, 3]);
        let x = c.repeat_interleave_self_int(per, 0, None)
            + Tensor::randn([centres.len() as i64 * per, 3], (Kind::Float, Device::Cpu)) * 0.1;
        let truth = (0..centres.len() as i64)
            .flat_map(|b| std::iter::repeat_n(b, per as usize))
            .collect();
        (x, truth)
    }

    /// Each true blob lies in one cluster and no two blobs share one.
    fn same_partition(assign: &[i64], truth: &[i64], k: usize) -> bool {
        let mut map = vec![None; k];
        let mut used = vec![false; k];
        for (&a, &t) in assign.iter().zip(truth) {
            match map[t as usize] {
                None => {
                    if used[a as usize] {
                        return false;
                    }
                    used[a as usize] = true;
                    map[t as usize] = Some(a);
                }
                Some(m) if m != a => return false,
                _ => {}
            }
        }
        true
    }

    const CENTRES: [[f32; 3]; 4] = [
        [0.0, 0.0, 0.0],
        [4.0, 0.0, 0.0],
        [0.0, 4.0, 0.0],
        [0.0, 0.0, 4.0],
    ];

    #[test]
    fn separable_blobs_are_recovered_up_to_relabelling() {
        let (x, truth) = blobs(&CENTRES, 40, 1);
        for init in [KMeansInit::PlusPlus, KMeansInit::Random] {
            // Random init can put two seeds in one blob; a few seeds must all
            // recover the blobs through the re-seeding and Lloyd steps, or at
            // least k-means++ must every time.
            let mut recovered = 0;
            for seed in 0..5 {
                let c = kmeans(&x, &cfg(4, init), seed).unwrap();
                let assign = Vec::<i64>::try_from(&c.assignments).unwrap();
                assert_eq!(c.sizes.iter().sum::<i64>(), 160);
                if same_partition(&assign, &truth, 4) {
                    recovered += 1;
                    let mut sizes = c.sizes.clone();
                    sizes.sort();
                    assert_eq!(sizes, vec![40; 4]);
                    // Centroids at the blob centres, noise std 0.1 / sqrt(40).
                    for (b, centre) in CENTRES.iter().enumerate() {
                        let a = assign[b * 40];
                        let got = Vec::<f32>::try_from(&c.centroids.get(a)).unwrap();
                        for (g, w) in got.iter().zip(centre) {
                            assert!((g - w).abs() < 0.1, "{got:?} vs {centre:?}");
                        }
                    }
                    assert!(c.inertia < 0.05, "{}", c.inertia);
                }
            }
            match init {
                KMeansInit::PlusPlus => assert_eq!(recovered, 5),
                KMeansInit::Random => assert!(recovered >= 3, "{recovered} of 5"),
            }
        }
    }

    #[test]
    fn deterministic_by_seed() {
        let (x, _) = blobs(&CENTRES, 30, 2);
        let x = x + Tensor::randn([120, 3], (Kind::Float, Device::Cpu));
        let a = kmeans(&x, &cfg(6, KMeansInit::PlusPlus), 7).unwrap();
        let b = kmeans(&x, &cfg(6, KMeansInit::PlusPlus), 7).unwrap();
        assert!(a.centroids.equal(&b.centroids));
        assert!(a.assignments.equal(&b.assignments));
        let differ = (8..12).any(|s| {
            let c = kmeans(&x, &cfg(6, KMeansInit::PlusPlus), s).unwrap();
            !c.centroids.equal(&a.centroids)
        });
        assert!(differ, "the seed changes nothing");
    }

    #[test]
    fn no_cluster_is_left_empty() {
        // Two heavy duplicates and a few distinct points: seeds land on equal
        // rows, so Lloyd steps empty clusters that must be re-seeded.
        let mut rows = vec![[1.0f32, 0.0, 0.0]; 30];
        rows.extend(vec![[0.0f32, 1.0, 0.0]; 30]);
        rows.extend([
            [0.0, 0.0, 1.0],
            [0.5, 0.5, 0.0],
            [0.0, 0.5, 0.5],
            [0.3, 0.3, 0.3],
        ]);
        let x = Tensor::from_slice(&rows.concat()).view([-1, 3]);
        let mut reseeded = 0;
        for init in [KMeansInit::Random, KMeansInit::PlusPlus] {
            for seed in 0..10 {
                let c = kmeans(&x, &cfg(8, init), seed).unwrap();
                assert!(
                    c.sizes.iter().all(|&s| s > 0),
                    "{init:?} {seed}: {:?}",
                    c.sizes
                );
                assert_eq!(c.sizes.iter().sum::<i64>(), 64);
                let counts = c.assignments.bincount::<Tensor>(None, 8);
                assert_eq!(Vec::<i64>::try_from(&counts).unwrap(), c.sizes);
                reseeded += c.reseeded;
            }
        }
        assert!(reseeded > 0, "the case never produced an empty cluster");
        // Every row equal: only the last resort can fill the clusters.
        let same = Tensor::ones([10, 4], (Kind::Float, Device::Cpu));
        let c = kmeans(&same, &cfg(5, KMeansInit::PlusPlus), 0).unwrap();
        assert!(c.sizes.iter().all(|&s| s > 0), "{:?}", c.sizes);
        assert_eq!(size_stats(&c.sizes).largest, 0.6);
    }

    #[test]
    fn chunked_nearest_is_the_brute_force_one() {
        tch::manual_seed(3);
        let x = Tensor::randn([23, 5], (Kind::Float, Device::Cpu));
        let c = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
        let (idx, dist) = nearest(&x, &c, 5);
        let xs = Vec::<Vec<f32>>::try_from(&x).unwrap();
        let cs = Vec::<Vec<f32>>::try_from(&c).unwrap();
        let idx = Vec::<i64>::try_from(&idx).unwrap();
        let dist = Vec::<f32>::try_from(&dist).unwrap();
        for (i, row) in xs.iter().enumerate() {
            let d: Vec<f64> = cs
                .iter()
                .map(|c| {
                    row.iter()
                        .zip(c)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum()
                })
                .collect();
            let best = (0..4).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap();
            assert_eq!(idx[i], best as i64);
            assert!((f64::from(dist[i]) - d[best]).abs() < 1e-4);
        }
    }

    #[test]
    fn size_stats_of_balanced_and_collapsed_clusterings() {
        let s = size_stats(&[5, 5, 5, 5]);
        assert!((s.entropy - 1.0).abs() < 1e-12 && s.largest == 0.25 && s.empty == 0);
        let s = size_stats(&[20, 0, 0, 0]);
        assert!(s.entropy.abs() < 1e-12 && s.largest == 1.0 && s.empty == 3);
        // Sizes 2, 1, 1: H = -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2, over ln 3.
        let s = size_stats(&[2, 1, 1]);
        let want = 1.5 * 2f64.ln() / 3f64.ln();
        assert!((s.entropy - want).abs() < 1e-12, "{}", s.entropy);
    }

    #[test]
    fn whitening_keeps_the_leading_directions_with_unit_variance() {
        // Independent columns of std 5, 3, 1, 0.1, then rotated: PCA to 2
        // dimensions must keep the first two (rotated) axes, scaled by 1/5
        // and 1/3, and the whitened rows have the identity covariance.
        tch::manual_seed(4);
        let stds = Tensor::from_slice(&[5.0f64, 3.0, 1.0, 0.1]);
        let g = Tensor::randn([4000, 4], (Kind::Double, Device::Cpu));
        let g = &g - g.mean_dim([0i64].as_slice(), true, Kind::Double);
        let (q, _) = Tensor::linalg_qr(
            &Tensor::randn([4, 4], (Kind::Double, Device::Cpu)),
            "reduced",
        );
        let shift = Tensor::from_slice(&[1.0f64, -2.0, 3.0, 0.5]);
        let x = (g * stds.unsqueeze(0)).matmul(&q.tr()) + shift.unsqueeze(0);
        let w = Whitening::fit(&x, 2).unwrap();
        assert_eq!(w.matrix.size(), vec![4, 2]);
        let mean = Vec::<f32>::try_from(&w.mean).unwrap();
        for (m, want) in mean.iter().zip([1.0f32, -2.0, 3.0, 0.5]) {
            assert!((m - want).abs() < 0.3, "{mean:?}");
        }
        let z = Whitening::project(&x, &w.mean, &w.matrix).to_kind(Kind::Double);
        let cov = z.tr().matmul(&z) / 3999.0;
        let eye = Tensor::eye(2, (Kind::Double, Device::Cpu));
        let err = (cov - eye).abs().max().double_value(&[]);
        assert!(err < 1e-3, "covariance off the identity by {err}");
        // Column j is the rotated axis j over its std (up to sign).
        for (j, s) in [5.0f64, 3.0].iter().enumerate() {
            let col = w.matrix.select(1, j as i64).to_kind(Kind::Double);
            let axis = q.select(1, j as i64) / *s;
            let cos = col.dot(&axis).abs().double_value(&[])
                / (col.norm().double_value(&[]) * axis.norm().double_value(&[]));
            assert!(cos > 0.999, "direction {j}: cos {cos}");
            let ratio = col.norm().double_value(&[]) * s;
            assert!((ratio - 1.0).abs() < 0.05, "scale {j}: {ratio}");
        }
        // The applied rows are unit length; dim 0 is the identity.
        let a = Whitening::apply(&x, &w.mean, &w.matrix);
        let norms = a.norm_scalaropt_dim(2.0, [1], false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
        let id = Whitening::fit(&x, 0).unwrap();
        let y = Whitening::project(&x, &id.mean, &id.matrix);
        assert!(y.allclose(&x.to_kind(Kind::Float), 1e-6, 1e-6, false));
        // Refused: more dimensions than the features, one row, NaN.
        assert!(Whitening::fit(&x, 5)
            .unwrap_err()
            .to_string()
            .contains("5 dimensions"));
        assert!(Whitening::fit(&x.narrow(0, 0, 1), 2).is_err());
        let nan = Tensor::full([5, 2], f64::NAN, (Kind::Float, Device::Cpu));
        assert!(Whitening::fit(&nan, 1)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
    }

    #[test]
    fn nmi_of_relabelled_independent_and_hand_computed_labellings() {
        let a = [0i64, 0, 1, 1, 2, 2];
        // A relabelling: 1.
        let b = [5i64, 5, 3, 3, 9, 9];
        assert!((nmi(&a, &b).unwrap() - 1.0).abs() < 1e-12);
        // Independent (every pair equally often): 0.
        let x = [0i64, 0, 1, 1];
        let y = [0i64, 1, 0, 1];
        assert!(nmi(&x, &y).unwrap().abs() < 1e-12);
        // a = [0,0,1,1], b = [0,0,0,1]: H(a) = ln 2,
        // H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4), I = H(b) - H(b|a) = H(b) - 1/2 ln 2.
        let hb = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        let want = (hb - 0.5 * 2f64.ln()) / (2f64.ln() * hb).sqrt();
        let got = nmi(&[0, 0, 1, 1], &[0, 0, 0, 1]).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(nmi(&[1, 1], &[0, 1]), Some(0.0));
        assert_eq!(nmi(&[0, 1], &[0]), None);
        assert_eq!(nmi(&[0, -1], &[0, 1]), None);
    }

    #[test]
    fn bad_input_is_refused() {
        let x = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        let err = kmeans(&x, &cfg(4, KMeansInit::PlusPlus), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 clusters") && err.contains("3 rows"),
            "{err}"
        );
        let nan = Tensor::full([5, 2], f64::NAN, (Kind::Float, Device::Cpu));
        let err = kmeans(&nan, &cfg(2, KMeansInit::Random), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NaN"), "{err}");
        let flat = Tensor::zeros([6], (Kind::Float, Device::Cpu));
        assert!(kmeans(&flat, &cfg(2, KMeansInit::Random), 0).is_err());
    }
}
