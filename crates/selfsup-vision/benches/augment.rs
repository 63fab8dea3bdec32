//! Two-view SimCLR augmentation throughput (images/s), default pipeline, one
//! batch of 256 random images built exactly as the loader builds it (rayon
//! over the images, tensors at the end). `cargo xtask bench` reads
//! `target/criterion/simclr_two_views/{28x28x1,32x32x3}` and compares with
//! torchvision on the same cores (set `RAYON_NUM_THREADS`).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfsup_vision::augment::{AugmentConfig, Augmenter};
use selfsup_vision::data::{ImageDataset, Normalize};
use selfsup_vision::loader::ViewLoader;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 256;

fn loader(side: usize, channels: usize) -> ViewLoader {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pixels = (0..BATCH * side * side * channels)
        .map(|_| rng.gen())
        .collect();
    let data = ImageDataset::new("random", side, side, channels, pixels, None, vec![])
        .expect("valid dataset");
    let aug = Augmenter::new(
        AugmentConfig::default(),
        channels,
        side,
        Normalize::for_channels(channels),
    )
    .expect("default augmentation");
    ViewLoader::new(Arc::new(data), aug, BATCH, 0)
}

fn two_views(c: &mut Criterion) {
    let mut group = c.benchmark_group("simclr_two_views");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    for (name, side, channels) in [("28x28x1", 28, 1), ("32x32x3", 32, 3)] {
        let l = loader(side, channels);
        let mut epoch = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                epoch += 1;
                black_box(l.batch(epoch, 0).expect("one batch"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, two_views);
criterion_main!(benches);
