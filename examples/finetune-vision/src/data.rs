//! The labelled images: Fashion-MNIST's IDX files (its training split, of
//! which FRACTION is labelled, and its test split held out) or a folder of
//! class folders (a stratified share of each class held out, FRACTION of
//! the rest labelled). Every image ends up as the export's encoder takes it:
//! `image_size` x `image_size` bytes with its channels (see
//! `VisionEmbedder::input`).
use crate::args::Args;
use crate::convert::convert_images;
use selfsup_vision::data::idx::read_fashion_mnist;
use selfsup_vision::data::image_folder::list_folder;
use selfsup_vision::data::{ImageDataset, Split};
use selfsup_vision::embed::VisionEmbedder;
use std::error::Error;
use std::path::Path;

/// The most bytes of decoded images held at once (16 GiB).
pub const MAX_IMAGE_BYTES: u64 = 16 << 30;

/// Images with their class labels.
#[derive(Debug, Default)]
pub struct Labelled {
    /// `side x side x channels` bytes (HWC) each.
    pub images: Vec<Vec<u8>>,
    /// Class index of each image.
    pub labels: Vec<i64>,
}

/// The training images, the held-out ones, and what they are.
#[derive(Debug)]
pub struct Splits {
    /// Labelled training images.
    pub train: Labelled,
    /// Held-out images.
    pub test: Labelled,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// One line: where the images come from and how many of each.
    pub described: String,
}

/// Whether `dir` holds Fashion-MNIST's training IDX file.
fn is_idx(dir: &Path) -> bool {
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// `0..n` in a seeded random order.
pub(crate) fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    // Fisher-Yates on a SplitMix64 stream of our own: libtorch's generator is
    // one per process, shared by every thread, so two shuffles running at
    // once would interleave their draws.
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Splits `items` (indices with labels `labels[i]`) class by class, in a
/// seeded random order: `take(n_c)` of each class's `n_c` go to the first
/// list, the others to the second.
pub fn stratified(
    items: &[usize],
    labels: &[i64],
    classes: usize,
    seed: u64,
    take: impl Fn(usize) -> usize,
) -> (Vec<usize>, Vec<usize>) {
    let mut per_class = vec![Vec::new(); classes];
    for &o in &shuffled(items.len(), seed) {
        let i = items[o];
        if let Some(c) = per_class.get_mut(labels[i] as usize) {
            c.push(i);
        }
    }
    let (mut taken, mut rest) = (Vec::new(), Vec::new());
    for members in per_class {
        let k = take(members.len()).min(members.len());
        taken.extend_from_slice(&members[..k]);
        rest.extend_from_slice(&members[k..]);
    }
    (taken, rest)
}

/// `share` of `n`, rounded, at least one (zero only when `n` is).
fn share(n: usize, share: f64) -> usize {
    ((n as f64 * share).round() as usize).clamp(n.min(1), n)
}

/// Refuses to decode more than [`MAX_IMAGE_BYTES`] of images.
fn check_bytes(images: usize, emb: &VisionEmbedder, channels: usize) -> Result<(), String> {
    let bytes = images as u64 * (emb.image_size * emb.image_size * channels) as u64;
    if bytes > MAX_IMAGE_BYTES {
        return Err(format!(
            "{images} images of {side}x{side}x{channels} take {} GiB, above the {} GiB this \
             example holds: lower FRACTION or --max-test",
            bytes >> 30,
            MAX_IMAGE_BYTES >> 30,
            side = emb.image_size,
        ));
    }
    Ok(())
}

/// The channels the encoder's input is made from (3 for a colorization
/// encoder, which takes the L* of RGB images).
pub fn input_channels(emb: &VisionEmbedder) -> usize {
    if emb.lightness {
        3
    } else {
        emb.in_channels as usize
    }
}

/// Reads the labelled images `args` names, as `emb` takes them.
pub fn load(args: &Args, emb: &VisionEmbedder) -> Result<Splits, Box<dyn Error>> {
    if is_idx(&args.data) {
        load_idx(args, emb)
    } else {
        load_folder(args, emb)
    }
}

fn idx_images(ds: &ImageDataset, which: &[usize], emb: &VisionEmbedder) -> Labelled {
    let labels = ds.labels.as_deref().unwrap_or_default();
    let images: Vec<&[u8]> = which.iter().map(|&i| ds.image(i)).collect();
    Labelled {
        images: convert_images(
            &images,
            (ds.height, ds.width, ds.channels),
            emb.image_size,
            input_channels(emb),
        ),
        labels: which.iter().map(|&i| labels[i]).collect(),
    }
}

fn load_idx(args: &Args, emb: &VisionEmbedder) -> Result<Splits, Box<dyn Error>> {
    let train = read_fashion_mnist(&args.data, Split::Train)?;
    let test = read_fashion_mnist(&args.data, Split::Test)?;
    let (Some(train_labels), Some(_)) = (&train.labels, &test.labels) else {
        return Err(format!("{}: the IDX files carry no labels", args.data.display()).into());
    };
    let classes = train.classes.clone();
    let all: Vec<usize> = (0..train.len()).collect();
    let (chosen, _) = stratified(&all, train_labels, classes.len(), args.seed, |n| {
        share(n, args.fraction)
    });
    let tested: Vec<usize> = (0..test.len().min(args.max_test)).collect();
    check_bytes(chosen.len() + tested.len(), emb, input_channels(emb))?;
    let described = format!(
        "{}: {} of {} training images labelled ({:.1}%), {} held-out images (test split), {} classes",
        args.data.display(),
        chosen.len(),
        train.len(),
        100.0 * chosen.len() as f64 / train.len().max(1) as f64,
        tested.len(),
        classes.len()
    );
    Ok(Splits {
        train: idx_images(&train, &chosen, emb),
        test: idx_images(&test, &tested, emb),
        classes,
        described,
    })
}

fn load_folder(args: &Args, emb: &VisionEmbedder) -> Result<Splits, Box<dyn Error>> {
    let listing = list_folder(&args.data)?;
    let Some(labels) = listing.labels.as_deref() else {
        return Err(format!(
            "{}: its images are not in class folders: fine-tuning needs labels \
             (DATA/<class>/<image>), or Fashion-MNIST's IDX files",
            args.data.display()
        )
        .into());
    };
    let classes = listing.classes.clone();
    if classes.len() < 2 {
        return Err(format!(
            "{}: one class folder ({}): a classifier needs at least two",
            args.data.display(),
            classes.join(", ")
        )
        .into());
    }
    let mut counts = vec![0usize; classes.len()];
    for &l in labels {
        counts[l as usize] += 1;
    }
    if let Some(c) = counts.iter().position(|&n| n < 2) {
        return Err(format!(
            "{}: class folder {} holds one image: each class needs at least two (one to train \
             on, one held out)",
            args.data.display(),
            classes[c]
        )
        .into());
    }
    let all: Vec<usize> = (0..labels.len()).collect();
    // At least one image of each class on either side.
    let (held, rest) = stratified(&all, labels, classes.len(), args.seed, |n| {
        share(n, args.held_out).clamp(1, n - 1)
    });
    let (chosen, _) = stratified(&rest, labels, classes.len(), args.seed ^ 1, |n| {
        share(n, args.fraction)
    });
    let mut tested = held;
    tested.truncate(args.max_test);
    check_bytes(chosen.len() + tested.len(), emb, input_channels(emb))?;
    let decode = |which: &[usize]| -> Result<Labelled, Box<dyn Error>> {
        let mut out = Labelled::default();
        for &i in which {
            out.images.push(emb.decode(&listing.files[i].path)?);
            out.labels.push(labels[i]);
        }
        Ok(out)
    };
    let described = format!(
        "{}: {} of {} training images labelled ({:.1}%), {} held-out images ({:.0}% of each class), {} classes",
        args.data.display(),
        chosen.len(),
        rest.len(),
        100.0 * chosen.len() as f64 / rest.len().max(1) as f64,
        tested.len(),
        100.0 * args.held_out,
        classes.len()
    );
    Ok(Splits {
        train: decode(&chosen)?,
        test: decode(&tested)?,
        classes,
        described,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_takes_the_same_share_of_every_class_and_is_seeded() {
        // 10 images of class 0, 20 of class 1.
        let labels: Vec<i64> = (0..30).map(|i| i64::from(i >= 10)).collect();
        let all: Vec<usize> = (0..30).collect();
        let (a, rest) = stratified(&all, &labels, 2, 3, |n| share(n, 0.5));
        assert_eq!(a.len(), 15);
        assert_eq!(rest.len(), 15);
        assert_eq!(a.iter().filter(|&&i| labels[i] == 0).count(), 5);
        let mut both: Vec<usize> = a.iter().chain(&rest).copied().collect();
        both.sort();
        assert_eq!(both, all);
        let (b, _) = stratified(&all, &labels, 2, 3, |n| share(n, 0.5));
        assert_eq!(a, b);
        let (c, _) = stratified(&all, &labels, 2, 4, |n| share(n, 0.5));
        assert_ne!(a, c);
    }

    #[test]
    fn a_share_is_at_least_one_image() {
        assert_eq!(share(60000, 0.01), 600);
        assert_eq!(share(7, 0.01), 1);
        assert_eq!(share(0, 0.5), 0);
        assert_eq!(share(3, 1.0), 3);
    }
}
