//! Feature masking (GRACE): each feature column is zeroed with probability
//! `p`, the same columns for every node of the view.
use crate::graph::View;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// `v` with masked feature columns.
pub fn mask_features(v: &View, p: f64, rng: &mut ChaCha8Rng) -> View {
    let f = v.x.size()[1];
    let keep: Vec<f32> = (0..f)
        .map(|_| if rng.gen::<f64>() >= p { 1.0 } else { 0.0 })
        .collect();
    View {
        x: &v.x * Tensor::from_slice(&keep).to_kind(Kind::Float).view([1, f]),
        edges: v.edges.shallow_clone(),
        weights: v.weights.shallow_clone(),
        batch: v.batch.shallow_clone(),
        num_graphs: v.num_graphs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{assert_valid, random_view};
    use rand::SeedableRng;

    #[test]
    fn masks_whole_columns_at_the_rate() {
        let mut masked = 0;
        let mut total = 0;
        for seed in 0..200 {
            let v = random_view(20, 30, 2);
            let out = mask_features(&v, 0.4, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_valid(&out);
            // A column is either all zero or untouched.
            let zero_cols = out.x.eq(0.0).all_dims([0i64].as_slice(), false);
            let same = out.x.eq_tensor(&v.x).all_dims([0i64].as_slice(), false);
            assert_eq!(zero_cols.logical_or(&same).all().int64_value(&[]), 1);
            masked += zero_cols.sum(Kind::Int64).int64_value(&[]);
            total += 8;
        }
        let rate = masked as f64 / total as f64;
        assert!((rate - 0.4).abs() < 0.04, "{rate}");
    }
}
