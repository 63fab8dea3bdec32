//! Loudness normalisation as wav2vec 2.0's feature extractor does it
//! (`Wav2Vec2FeatureExtractor(do_normalize=True)`): zero mean and unit
//! variance over the valid samples, `(x - mean) / sqrt(var + 1e-7)`.

/// Normalises `xs` in place to zero mean and unit variance.
pub fn zero_mean_unit_var(xs: &mut [f32]) {
    if xs.is_empty() {
        return;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-7).sqrt();
    for x in xs.iter_mut() {
        *x = ((*x as f64 - mean) * inv) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_mean_unit_variance() {
        let mut xs: Vec<f32> = (0..1000)
            .map(|i| 0.3 + 0.2 * (i as f32 * 0.37).sin())
            .collect();
        zero_mean_unit_var(&mut xs);
        let mean = xs.iter().sum::<f32>() / 1000.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 1000.0;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
        let mut silent = vec![0.0f32; 10];
        zero_mean_unit_var(&mut silent);
        assert!(silent.iter().all(|&x| x == 0.0));
    }
}
