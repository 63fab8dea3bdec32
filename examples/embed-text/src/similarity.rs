//! Cosine similarities between embeddings and the most similar pairs.
use selfsup_text::tch::{Kind, Tensor};

/// The cosine similarity of every pair of rows of `[N, D]` embeddings, as
/// `N` rows of `N` values (a zero row is similar to nothing: 0).
pub fn cosine_matrix(embeddings: &Tensor) -> Vec<Vec<f64>> {
    let x = embeddings.to_kind(Kind::Double);
    let norms = x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let unit = x / norms;
    let sim = unit.mm(&unit.tr());
    let n = sim.size().first().copied().unwrap_or(0);
    (0..n)
        .map(|i| Vec::<f64>::try_from(sim.get(i)).unwrap_or_default())
        .collect()
}

/// The `k` pairs `(i, j, cosine)`, `i < j`, of highest similarity, highest
/// first (ties: the earlier pair first).
pub fn top_pairs(sim: &[Vec<f64>], k: usize) -> Vec<(usize, usize, f64)> {
    let mut pairs: Vec<(usize, usize, f64)> = sim
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .skip(i + 1)
                .map(move |(j, &s)| (i, j, s))
        })
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    pairs.truncate(k);
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_are_the_top_pair_at_cosine_one() {
        let e = Tensor::from_slice(&[1.0f32, 0.0, 0.6, 0.8, 1.0, 0.1, 0.6, 0.8]).view([4, 2]);
        let sim = cosine_matrix(&e);
        assert_eq!(sim.len(), 4);
        assert!((sim[0][0] - 1.0).abs() < 1e-9);
        assert!((sim[0][1] - 0.6).abs() < 1e-6);
        let top = top_pairs(&sim, 2);
        assert_eq!((top[0].0, top[0].1), (1, 3));
        assert!((top[0].2 - 1.0).abs() < 1e-9);
        assert_eq!((top[1].0, top[1].1), (0, 2));
        assert_eq!(top_pairs(&sim, 100).len(), 6);
    }
}
