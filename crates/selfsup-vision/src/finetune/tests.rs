//! Tests of `finetune`.
use super::*;
use crate::config::DataFormat;
use crate::models::EncoderConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `per_class` 8x8 grey images of each of 3 classes a flip or a crop
/// does not confuse: horizontal stripes, vertical stripes, a flat grey;
/// a little noise from `seed`.
pub(crate) fn stripes(per_class: usize, seed: u64) -> (Vec<u8>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for i in 0..3 * per_class {
        let class = (i % 3) as i64;
        for y in 0..8 {
            for x in 0..8 {
                let v: u8 = match class {
                    0 => [30, 220][y % 2],
                    1 => [30, 220][x % 2],
                    _ => 125,
                };
                px.push(v.saturating_add(rand::Rng::gen_range(&mut rng, 0..20)));
            }
        }
        labels.push(class);
    }
    (px, labels)
}

fn dataset(per_class: usize, seed: u64) -> (ImageDataset, Vec<i64>) {
    let (px, labels) = stripes(per_class, seed);
    let classes = ["h", "v", "flat"].map(String::from).to_vec();
    let d = ImageDataset::new("stripes", 8, 8, 1, px, Some(labels.clone()), classes).unwrap();
    (d, labels)
}

pub(crate) fn tiny_config() -> VisionRunConfig {
    let mut cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        },
        ..Default::default()
    };
    cfg.data.format = DataFormat::FashionMnist;
    let ft = &mut cfg.eval.finetune;
    (ft.fractions, ft.seeds, ft.steps, ft.batch_size) = (vec![0.2, 1.0], 2, 8, 8);
    cfg
}

#[test]
fn a_fraction_draws_each_class_its_share_by_seed() {
    let labels: Vec<i64> = (0..350).map(|i| [0, 0, 0, 0, 1, 1, 2][i % 7]).collect();
    let count = |idx: &[usize], c: i64| idx.iter().filter(|&&i| labels[i] == c).count();
    let a = stratified(&labels, 0.1, 10_000, 7);
    assert_eq!((count(&a, 0), count(&a, 1), count(&a, 2)), (20, 10, 5));
    assert_eq!(a, stratified(&labels, 0.1, 10_000, 7));
    assert_ne!(a, stratified(&labels, 0.1, 10_000, 8));
    // The cap keeps the proportions; a tiny fraction keeps every class.
    let capped = stratified(&labels, 1.0, 35, 0);
    assert_eq!(
        (count(&capped, 0), count(&capped, 1), count(&capped, 2)),
        (20, 10, 5)
    );
    let tiny = stratified(&labels, 0.001, 10_000, 0);
    assert_eq!(
        (count(&tiny, 0), count(&tiny, 1), count(&tiny, 2)),
        (1, 1, 1)
    );
    assert_eq!(stratified(&labels, 1.0, 10_000, 3).len(), 350);
}

#[test]
fn fractions_outside_0_1_are_refused_naming_the_key() {
    for bad in [0.0, 1.5, f64::NAN, -0.1] {
        let ft = FinetuneConfig {
            fractions: vec![0.1, bad],
            ..Default::default()
        };
        let err = ft.validate().unwrap_err();
        assert!(err.contains("[eval.finetune] fractions"), "{err}");
    }
    let text = "[eval.finetune]\nfractions = [1.5]\n";
    let err = VisionRunConfig::from_toml(text, Path::new("f.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.toml") && err.contains("fractions: 1.5"),
        "{err}"
    );
    let ok = FinetuneConfig::default();
    assert!(ok.validate().is_ok());
    assert!(!VisionRunConfig::default().to_toml().contains("finetune"));
}

/// The head and encoder trained end to end on the easy set: the loss
/// falls and the held-out top-1 is far above chance (1/3).
#[test]
fn training_end_to_end_learns_the_tiny_set() {
    let (train_set, train_y) = dataset(20, 1);
    let (test_set, test_y) = dataset(10, 2);
    let cfg = tiny_config();
    let ft = FinetuneConfig {
        steps: 40,
        batch_size: 16,
        ..cfg.eval.finetune.clone()
    };
    let method = crate::vision_method::build_method(&cfg, Device::Cpu, 1).unwrap();
    let input = Input::of(method.as_ref(), 1);
    seed_random_weights(0);
    let net = Net::new(&cfg, &input, 3, Device::Cpu);
    let before = net.accuracy(&test_set, &test_y);
    let all: Vec<usize> = (0..train_set.len()).collect();
    let run = train(&net, &train_set, &train_y, &all, &ft, 5).unwrap();
    let after = net.accuracy(&test_set, &test_y);
    assert!(
        run.last_loss < 0.5 * run.first_loss,
        "loss {} -> {}",
        run.first_loss,
        run.last_loss
    );
    assert!(after > 0.8 && after > before, "top-1 {before} -> {after}");
    assert_eq!(
        (run.steps, run.images_seen, run.distinct_images),
        (40, 640, 60)
    );
}

/// Both arms of a seed train on the same images in the same order for
/// the same steps; the seeds differ; every row has one run per seed.
#[test]
fn both_arms_share_the_subset_and_the_budget() {
    let (train, train_labels) = dataset(10, 3);
    let (test, test_labels) = dataset(4, 4);
    let splits = Splits {
        train,
        train_labels,
        test,
        test_labels,
        classes: 3,
        scored_on: ScoredOn::Test,
    };
    let cfg = tiny_config();
    let method = crate::vision_method::build_method(&cfg, Device::Cpu, 1).unwrap();
    let mut lines = 0;
    let rows = finetune(&cfg, method.as_ref(), &splits, Device::Cpu, &mut |_| {
        lines += 1
    })
    .unwrap();
    assert_eq!(lines, 2 * 2 * 2);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!((row.pretrained.len(), row.scratch.len()), (2, 2));
        for (p, s) in row.pretrained.iter().zip(&row.scratch) {
            assert_eq!(p.batches_digest, s.batches_digest);
            assert_eq!((p.steps, p.images_seen), (s.steps, s.images_seen));
            assert_eq!(p.steps, 8);
        }
        assert!((0.0..=1.0).contains(&row.pretrained[0].top1));
    }
    // 20 % of 30 images: 2 per class; the two seeds draw different ones.
    assert_eq!(rows[0].labelled, vec![6, 6]);
    assert_eq!(rows[0].pretrained[0].distinct_images, 6);
    assert_ne!(
        rows[0].pretrained[0].batches_digest,
        rows[0].pretrained[1].batches_digest
    );
    assert_eq!(rows[1].labelled, vec![30, 30]);
    // finetune.json keeps its shape: each seed's labelled images as `images`.
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["images"], serde_json::json!([6, 6]));
    assert_eq!(json["pretrained"][0]["steps"], 8);
    assert!(json["scratch"][1]["batches_digest"].is_string());
    let line = rows[0].line();
    assert!(
        line.starts_with("fine-tuning on 20% of the labels (6 images, 2 seeds): pre-trained "),
        "{line}"
    );
    assert!(line.contains("gain "), "{line}");
}

#[test]
fn mean_and_sample_std() {
    let (m, s) = mean_std(&[0.5, 0.7, 0.6]);
    assert!(
        (m - 0.6).abs() < 1e-12 && (s - 0.1).abs() < 1e-12,
        "{m} {s}"
    );
    assert_eq!(mean_std(&[0.3]), (0.3, 0.0));
}
