//! Tests of `monitor`.
use super::testing::TestRng;
use super::*;
use tch::Device;

#[test]
fn gaussian_embeddings_are_healthy() {
    let mut g = TestRng::new(0);
    for (n, d) in [(512, 128), (128, 512), (256, 256), (64, 16)] {
        let za = g.randn(&[n, d]);
        let zb = &za + g.randn(&[n, d]) * 0.1;
        let s = collapse_stats(&za, Some(&zb));
        assert!((s.std_ratio - 1.0).abs() < 0.05, "{n}x{d}: {s:?}");
        assert!((s.std_normalized - 1.0 / (d as f64).sqrt()).abs() < 0.05 / (d as f64).sqrt());
        // Marchenko-Pastur: 0.8 for square matrices, close to 1 for elongated ones.
        assert!(s.rank_ratio > 0.75 && s.rank_ratio <= 1.0, "{n}x{d}: {s:?}");
        let a = s.alignment.unwrap();
        assert!(a > 0.0 && a < 0.05, "{n}x{d}: {s:?}");
        assert!(s.uniformity < -3.0, "{n}x{d}: {s:?}");
        assert!(
            CollapseThresholds::default().warnings(&s).is_empty(),
            "{n}x{d}: {s:?}"
        );
    }
}

#[test]
fn anisotropic_but_healthy_embeddings_do_not_warn() {
    let mut g = TestRng::new(1);
    let thresholds = CollapseThresholds::default();
    let spectrum = Tensor::arange_start(1, 129, (Kind::Float, Device::Cpu)).reciprocal();
    for z in [
        g.randn(&[512, 128]) + 1.0,
        g.randn(&[512, 128]).relu(),
        g.randn(&[512, 128]) * spectrum,
    ] {
        let s = collapse_stats(&z, None);
        assert!(thresholds.warnings(&s).is_empty(), "{s:?}");
    }
    // A shared offset carrying 90% of the energy (uniformity about -0.4):
    // not collapsed.
    let s = collapse_stats(&(g.randn(&[512, 128]) + 3.0), None);
    assert!(thresholds.warnings(&s).is_empty(), "{s:?}");
    // Offset 10, 99% of the energy in one shared direction: crowded.
    let s = collapse_stats(&(g.randn(&[512, 128]) + 10.0), None);
    let w = thresholds.warnings(&s);
    assert!(w.iter().any(|w| w.contains("crowd together")), "{w:?}");
}

#[test]
fn constant_embeddings_with_tiny_noise_warn() {
    let mut g = TestRng::new(2);
    let z = g.randn(&[1, 128]).expand([512, 128], false) + g.randn(&[512, 128]) * 1e-3;
    let s = collapse_stats(&z, Some(&z));
    assert!(s.std_ratio < 0.01, "{s:?}");
    assert!(s.rankme < 1.5, "{s:?}");
    assert!(s.uniformity > -1e-3, "{s:?}");
    let w = s.warnings(&CollapseThresholds::default());
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[2].contains("crowd together"), "{w:?}");
    assert!(w[0].contains("nearly identical"), "{w:?}");
    assert!(
        w[1].contains("effective rank 1.1 of 128 dims (RankMe"),
        "{w:?}"
    );
    let off = CollapseThresholds {
        enabled: false,
        ..Default::default()
    };
    assert!(off.warnings(&s).is_empty());
}

#[test]
fn warnings_since_initialisation_tell_never_spread_from_collapsed() {
    let mut g = TestRng::new(4);
    let t = CollapseThresholds::default();
    let rank = |k: i64, g: &mut TestRng| {
        collapse_stats(&g.randn(&[512, k]).matmul(&g.randn(&[k, 128])), None)
    };
    let (four, five, healthy) = (rank(4, &mut g), rank(5, &mut g), rank(128, &mut g));
    assert!(t.warnings(&healthy).is_empty());
    // Rank 4 at initialisation, rank 5 now: low all along, not a collapse.
    let w = t.warnings_since(&five, Some(&four));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(&format!(
            "low effective rank since initialisation: effective rank {:.1} of 128",
            five.rankme
        )),
        "{w:?}"
    );
    assert!(
        w[0].contains(&format!("{:.1} before the first step", four.rankme)),
        "{w:?}"
    );
    assert!(!w[0].contains("possible collapse"), "{w:?}");
    // Spread at initialisation, rank 4 now: a collapse, with the figure it fell from.
    let w = t.warnings_since(&four, Some(&healthy));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(&format!(
            "possible collapse: effective rank {:.1} of",
            four.rankme
        )),
        "{w:?}"
    );
    assert!(
        w[0].contains(&format!("{:.1} before the first step", healthy.rankme)),
        "{w:?}"
    );
    // Low at initialisation and lower still (rank 5 -> 1): that is a collapse too.
    let one = rank(1, &mut g);
    let w = t.warnings_since(&one, Some(&five));
    assert!(w[0].starts_with("possible collapse"), "{w:?}");
    // Without the initial figures, as before.
    assert_eq!(t.warnings_since(&four, None), t.warnings(&four));
    assert!(t.warnings(&four)[0].starts_with("possible collapse: effective rank"));
    // The std ratio and uniformity follow the same rule.
    let point = |g: &mut TestRng, noise: f64| {
        let z = g.randn(&[1, 64]).expand([256, 64], false) + g.randn(&[256, 64]) * noise;
        collapse_stats(&z, None)
    };
    let (tight, tighter) = (point(&mut g, 1e-2), point(&mut g, 1e-3));
    let w = t.warnings_since(&tight, Some(&tight));
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].starts_with("nearly identical embeddings since initialisation"),
        "{w:?}"
    );
    assert!(
        w[2].starts_with("crowded embeddings since initialisation"),
        "{w:?}"
    );
    let w = t.warnings_since(&tighter, Some(&healthy));
    assert!(
        w.iter().all(|m| m.starts_with("possible collapse")),
        "{w:?}"
    );
}

#[test]
fn rank_one_embeddings_have_rankme_one() {
    let mut g = TestRng::new(3);
    let z = g.randn(&[512, 1]).matmul(&g.randn(&[1, 128]));
    let s = collapse_stats(&z, None);
    assert!((s.rankme - 1.0).abs() < 1e-3, "{s:?}");
    let w = CollapseThresholds::default().warnings(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("effective rank 1.0 of 128 dims"), "{w:?}");
    // In 16 dimensions the ratio (1/16) alone would not flag it; the absolute floor does.
    let small = g.randn(&[512, 1]).matmul(&g.randn(&[1, 16])) + g.randn(&[512, 16]) * 1e-3;
    assert_eq!(
        CollapseThresholds::default()
            .warnings(&collapse_stats(&small, None))
            .len(),
        1
    );
    // Low-rank (4 of 128) dimensional collapse warns too, exact rank k has RankMe ~k.
    let four = g.randn(&[512, 4]).matmul(&g.randn(&[4, 128]));
    let s = collapse_stats(&four, None);
    assert!(s.rankme > 3.0 && s.rankme <= 4.0 + 1e-3, "{s:?}");
    assert_eq!(CollapseThresholds::default().warnings(&s).len(), 1, "{s:?}");
}

#[test]
fn rankme_matches_an_independent_computation() {
    // Singular values 3 and 1: p = (0.75, 0.25) (+1e-7), exp(entropy) = 1.7548...
    let z = Tensor::from_slice2(&[[3.0f64, 0.0], [0.0, 1.0], [0.0, 0.0]]);
    let expected = (-(0.75f64 + 1e-7) * (0.75f64 + 1e-7).ln()
        - (0.25f64 + 1e-7) * (0.25f64 + 1e-7).ln())
    .exp();
    assert!((collapse_stats(&z, None).rankme - expected).abs() < 1e-9);
    // z[i, j] = sin(0.7 i + 0.3 j^2) + 0.1 cos(i j), i < 50, j < 12. With PyTorch:
    //   i = torch.arange(50.).double()[:, None]; j = torch.arange(12.).double()[None]
    //   z = torch.sin(0.7*i + 0.3*j**2) + 0.1*torch.cos(i*j)
    //   s = torch.linalg.svdvals(z); p = s/s.sum() + 1e-7; (-(p*p.log()).sum()).exp()
    //   -> 4.064670036031476
    let z = Tensor::from_slice(
        &(0..50)
            .flat_map(|i| {
                (0..12).map(move |j| {
                    let (i, j) = (i as f64, j as f64);
                    (0.7 * i + 0.3 * j * j).sin() + 0.1 * (i * j).cos()
                })
            })
            .collect::<Vec<f64>>(),
    )
    .reshape([50, 12]);
    let s = collapse_stats(&z, None);
    assert!((s.rankme - 4.064670036031476).abs() < 1e-6, "{s:?}");
    assert!((s.rank_ratio - 4.064670036031476 / 12.0).abs() < 1e-6);
    // The wide transpose uses the other Gram matrix and agrees.
    assert!((collapse_stats(&z.tr(), None).rankme - 4.064670036031476).abs() < 1e-6);
}

#[test]
fn alignment_and_uniformity_extremes() {
    let mut g = TestRng::new(4);
    let z = g.randn(&[300, 32]);
    let s = collapse_stats(&z, Some(&(&z * 2.5)));
    assert!(
        s.alignment.unwrap().abs() < 1e-12,
        "scaled copies are perfectly aligned"
    );
    let opposite = collapse_stats(&z, Some(&-&z)).alignment.unwrap();
    assert!(
        (opposite - 4.0).abs() < 1e-9,
        "antipodal views are at distance^2 4"
    );
    assert!(s.uniformity < -3.0, "{s:?}");
    let same = collapse_stats(&g.randn(&[1, 32]).expand([300, 32], false), None);
    assert!(same.uniformity.abs() < 1e-12, "{same:?}");
    assert_eq!(same.std_ratio, 0.0);
    // Two antipodal clusters: half the pairs at distance^2 4, so log((m/2-1)/(m-1) + ...).
    let v = g.randn(&[1, 8]);
    let two = Tensor::cat(&[v.expand([2, 8], false), (-&v).expand([2, 8], false)], 0);
    let expected = ((2.0 * 2.0 + 8.0 * (-8.0f64).exp()) / 12.0).ln();
    assert!((collapse_stats(&two, None).uniformity - expected).abs() < 1e-9);
    // More than 2048 rows are subsampled, with the same answer for i.i.d. points.
    let big = collapse_stats(&g.randn(&[5000, 32]), None);
    assert!(
        (big.uniformity - s.uniformity).abs() < 0.1,
        "{big:?} vs {s:?}"
    );
    // Mismatched views: no alignment.
    assert_eq!(
        collapse_stats(&z, Some(&g.randn(&[10, 32]))).alignment,
        None
    );
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let mut g = TestRng::new(5);
    let zero = Tensor::zeros([10, 4], (Kind::Float, Device::Cpu));
    let s = collapse_stats(&zero, None);
    assert_eq!(s.rankme, 0.0);
    assert_eq!(s.std_ratio, 0.0);
    assert_eq!(CollapseThresholds::default().warnings(&s).len(), 3);
    let one = collapse_stats(&g.randn(&[1, 8]), None);
    assert!(one.std_ratio.is_nan() && one.uniformity.is_nan());
    assert!((one.rankme - 1.0).abs() < 1e-3);
    let empty = collapse_stats(&Tensor::zeros([0, 8], (Kind::Float, Device::Cpu)), None);
    assert!(empty.rankme.is_nan());
    let mut nan = g.randn(&[10, 4]);
    let _ = nan.fill_(f64::NAN);
    let s = collapse_stats(&nan, None);
    assert!(s.non_finite);
    assert_eq!(
        CollapseThresholds::default().warnings(&s),
        vec!["embeddings contain NaN or infinite values"]
    );
    let half = collapse_stats(&g.randn(&[64, 16]).to_kind(Kind::Half), None);
    assert!(half.rank_ratio > 0.8);
    let images = collapse_stats(&g.randn(&[8, 3, 4, 4]), None);
    assert_eq!((images.samples, images.dim), (8, 48));
}

#[test]
fn serde_round_trip_keeps_nan_as_null() {
    let mut g = TestRng::new(6);
    let one = collapse_stats(&g.randn(&[1, 8]), None);
    let json = serde_json::to_string(&one).unwrap();
    assert!(json.contains("\"std_ratio\":null"), "{json}");
    let back: CollapseStats = serde_json::from_str(&json).unwrap();
    assert!(back.std_ratio.is_nan());
    assert!((back.rankme - one.rankme).abs() < 1e-12);
    let t: CollapseThresholds = toml::from_str("min_rank_ratio = 0.01").unwrap();
    assert_eq!(t.min_std_ratio, 0.1);
    assert!(toml::from_str::<CollapseThresholds>("min_rank = 0.01").is_err());
}
