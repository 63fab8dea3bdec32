//! The codebook diversity loss of wav2vec 2.0 (eq. 4), as transformers'
//! `Wav2Vec2GumbelVectorQuantizer._compute_perplexity`: the perplexity of
//! each codebook's average choice distribution over the masked frames, and
//! the loss `(G V - sum of perplexities) / (G V)`, 0 when every entry of
//! every codebook is used equally, close to 1 when one entry takes all.
use tch::{Kind, Tensor};

/// Perplexity `[G]` of each codebook: `exp(-sum_v p_v log(p_v + 1e-7))`
/// with `p` the mean of `probs` `[N, G, V]` over the frames where `mask`
/// `[N]` is true (all frames when `None`).
pub fn codebook_perplexity(probs: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let probs = probs.to_kind(Kind::Float);
    let marginal = match mask {
        Some(m) => {
            let m = m.to_kind(Kind::Float).view([-1, 1, 1]);
            (&probs * &m).sum_dim_intlist(0, false, Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
        }
        None => probs.mean_dim(0, false, Kind::Float),
    };
    (-(&marginal * (&marginal + 1e-7).log()).sum_dim_intlist(-1, false, Kind::Float)).exp()
}

/// `(G V - perplexities.sum()) / (G V)` for `G` codebooks of `V` entries.
pub fn diversity_loss(perplexities: &Tensor, groups: i64, entries: i64) -> Tensor {
    let gv = (groups * entries) as f64;
    (perplexities.sum(Kind::Float) * -1.0 + gv) / gv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_of_known_distributions() {
        // Codebook 0: frames use 4 of 8 entries equally -> perplexity 4.
        // Codebook 1: every frame picks entry 0 -> perplexity 1.
        let n = 8;
        let mut p = vec![0.0f32; n * 2 * 8];
        for i in 0..n {
            p[i * 16 + (i % 4)] = 1.0;
            p[i * 16 + 8] = 1.0;
        }
        let probs = Tensor::from_slice(&p).view([n as i64, 2, 8]);
        let ppl = codebook_perplexity(&probs, None);
        assert!((ppl.double_value(&[0]) - 4.0).abs() < 1e-4, "{ppl}");
        assert!((ppl.double_value(&[1]) - 1.0).abs() < 1e-4, "{ppl}");
        let d = diversity_loss(&ppl, 2, 8).double_value(&[]);
        assert!((d - (16.0 - 5.0) / 16.0).abs() < 1e-5);
        // Uniform soft probabilities: perplexity V, loss 0.
        let uniform = Tensor::full([5, 2, 8], 0.125, (Kind::Float, tch::Device::Cpu));
        let ppl = codebook_perplexity(&uniform, None);
        assert!((ppl.sum(Kind::Float).double_value(&[]) - 16.0).abs() < 1e-3);
        // The mask picks frames: only frames 0 and 1 -> 2 entries in codebook 0.
        let mask = Tensor::from_slice(&[true, true, false, false, false, false, false, false]);
        let ppl = codebook_perplexity(&probs, Some(&mask));
        assert!((ppl.double_value(&[0]) - 2.0).abs() < 1e-4, "{ppl}");
    }
}
