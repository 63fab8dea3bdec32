use super::*;
use crate::config::VisionRunConfig;
use crate::models::EncoderConfig;
use crate::vision_method::build_method;
use selfsup_core::trainer::EpochEvaluator;

/// `n` 8x8 grey images whose every pixel is the image's index (so a part's
/// images name the training images they came from), labels `i % classes`.
fn indexed(n: usize, classes: i64) -> ImageDataset {
    let px: Vec<u8> = (0..n).flat_map(|i| [i as u8; 64]).collect();
    let labels = (0..n).map(|i| i as i64 % classes).collect();
    let names = (0..classes).map(|c| c.to_string()).collect();
    ImageDataset::new("toy/train", 8, 8, 1, px, Some(labels), names).unwrap()
}

fn settings(fraction: f64, seed: u64) -> EvalSettings {
    EvalSettings {
        validation_fraction: fraction,
        split_seed: seed,
        max_train: None,
        max_held_out: None,
    }
}

/// The index an `indexed` image carries.
fn ids(d: &ImageDataset) -> Vec<usize> {
    (0..d.len()).map(|i| d.image(i)[0] as usize).collect()
}

#[test]
fn the_validation_part_is_disjoint_from_the_bank_and_stratified() {
    let train = indexed(200, 4);
    let test = indexed(40, 4);
    let norm = Normalize::for_channels(1);
    let d = EvalData::build(&train, &test, &norm, &settings(0.1, 3)).unwrap();
    assert_eq!(
        (d.train.len(), d.validation.len(), d.test.len()),
        (180, 20, 40)
    );
    // The parts hold the images their indices name, and share none.
    assert_eq!(ids(&d.train), d.train_indices);
    assert_eq!(ids(&d.validation), d.validation_indices);
    assert!(d
        .validation_indices
        .iter()
        .all(|i| !d.train_indices.contains(i)));
    let mut all = [d.train_indices.clone(), d.validation_indices.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    // Stratified: 5 of each class's 50 images; the labels follow the images.
    let val_y: Vec<i64> = Vec::try_from(&d.validation_y).unwrap();
    for c in 0..4 {
        assert_eq!(val_y.iter().filter(|&&y| y == c).count(), 5, "class {c}");
    }
    assert!(d
        .validation_indices
        .iter()
        .zip(&val_y)
        .all(|(&i, &y)| i as i64 % 4 == y));
    assert_eq!(d.validation.name, "toy/train (validation part)");
    // The seed, not the trainer's, picks the part: the same seed the same
    // part, another seed another.
    let again = EvalData::build(&train, &test, &norm, &settings(0.1, 3)).unwrap();
    assert_eq!(again.validation_indices, d.validation_indices);
    let other = EvalData::build(&train, &test, &norm, &settings(0.1, 4)).unwrap();
    assert_ne!(other.validation_indices, d.validation_indices);
    // Caps keep the parts disjoint: each capped part is spread over its own
    // uncapped part; the validation part and the test split share one cap.
    let capped = EvalSettings {
        max_train: Some(50),
        max_held_out: Some(8),
        ..settings(0.1, 3)
    };
    let c = EvalData::build(&train, &test, &norm, &capped).unwrap();
    assert_eq!(
        (c.train.len(), c.validation.len(), c.test.len()),
        (50, 8, 8)
    );
    assert!(c.train_indices.iter().all(|i| d.train_indices.contains(i)));
    assert!(c
        .validation_indices
        .iter()
        .all(|i| d.validation_indices.contains(i)));
    assert_eq!(ids(&c.test), crate::load::spread(40, 8));
    let f = d.raw_features();
    assert_eq!(
        (f.train.size(), f.validation.size(), f.test.size()),
        (vec![180, 64], vec![20, 64], vec![40, 64])
    );
}

#[test]
fn too_few_labelled_images_are_refused_naming_the_key_and_the_fix() {
    let norm = Normalize::for_channels(1);
    // One image of each class: nothing can be set aside.
    let err = EvalData::build(&indexed(3, 3), &indexed(3, 3), &norm, &settings(0.1, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("toy/train")
            && err.contains("3 labelled training image(s)")
            && err.contains("[eval] validation_fraction = 0.1")
            && err.contains("[data] train_images")
            && err.contains("at least 2"),
        "{err}"
    );
    // Unlabelled training images cannot be split either.
    let mut bare = indexed(10, 2);
    bare.labels = None;
    let err = EvalData::build(&bare, &indexed(3, 3), &norm, &settings(0.1, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("needs labels"), "{err}");
    // Two images of a class are enough: one each side.
    let d = EvalData::build(&indexed(4, 2), &indexed(2, 2), &norm, &settings(0.1, 0)).unwrap();
    assert_eq!((d.train.len(), d.validation.len()), (2, 2));
}

/// Dark (label 0) and light (label 1) 8x8 images with some texture.
fn dark_and_light(n: usize, salt: usize, flip: bool) -> ImageDataset {
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let class = i % 2;
        let base = if class == 0 { 30 } else { 200 };
        px.extend((0..64).map(|p| (base + (p * 7 + i * 11 + salt) % 40) as u8));
        labels.push(if flip { 1 - class as i64 } else { class as i64 });
    }
    let names = vec!["dark".to_string(), "light".to_string()];
    ImageDataset::new("toy", 8, 8, 1, px, Some(labels), names).unwrap()
}

/// The per-epoch figures of `data` under `method`.
fn epoch_metrics(
    data: EvalData,
    method: &dyn crate::vision_method::VisionMethod,
) -> Vec<(String, f64)> {
    let raw = data.raw_knn(Part::Validation, &knn5()).unwrap();
    let mut e = VisionEvaluator {
        data: Some(data),
        monitor_views: None,
        knn: knn5(),
        every_epoch: true,
        raw_validation_knn: Some(raw),
    };
    EpochEvaluator::evaluate(&mut e, method, 0).unwrap().metrics
}

fn knn5() -> KnnConfig {
    KnnConfig {
        k: 5,
        temperature: 0.1,
    }
}

/// The per-epoch evaluator reads the validation part alone: a test split
/// whose labels are all wrong leaves every per-epoch figure as it was,
/// while the final test figures move (to exactly 1 - the right figure, on
/// two classes).
#[test]
fn the_per_epoch_knn_reads_the_validation_part_never_the_test_split() {
    let cfg = VisionRunConfig {
        model: EncoderConfig::SmallCnn {
            channels: vec![8, 16],
        },
        ..Default::default()
    };
    tch::manual_seed(0);
    let method = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
    let norm = Normalize::for_channels(1);
    let train = dark_and_light(60, 0, false);
    let s = settings(0.2, 1);
    let right = EvalData::build(&train, &dark_and_light(20, 5, false), &norm, &s).unwrap();
    let wrong = EvalData::build(&train, &dark_and_light(20, 5, true), &norm, &s).unwrap();

    let f = right.features(method.as_ref());
    let per_epoch_validation = right.knn_on(Part::Validation, &f, &knn5()).unwrap();
    let (test_right, test_wrong) = (
        right.knn(&f, &knn5()).unwrap(),
        wrong
            .knn(&wrong.features(method.as_ref()), &knn5())
            .unwrap(),
    );
    let (raw_right, raw_wrong) = (
        right.raw_knn(Part::Test, &knn5()).unwrap(),
        wrong.raw_knn(Part::Test, &knn5()).unwrap(),
    );
    assert!(
        (test_right + test_wrong - 1.0).abs() < 1e-9,
        "{test_right} {test_wrong}"
    );
    assert!(
        (test_right - test_wrong).abs() > 0.2,
        "{test_right} {test_wrong}"
    );
    assert_eq!((raw_right, raw_wrong), (1.0, 0.0));

    let a = epoch_metrics(right, method.as_ref());
    let b = epoch_metrics(wrong, method.as_ref());
    assert_eq!(a, b);
    let names: Vec<&str> = a.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, [EPOCH_RAW_KNN, EPOCH_KNN]);
    // The figure is the validation part's kNN, and the baseline the
    // validation part's raw pixels (both light and dark are trivially apart).
    assert_eq!(a[0].1, 1.0);
    assert!((a[1].1 - per_epoch_validation).abs() < 1e-12, "{a:?}");
}
