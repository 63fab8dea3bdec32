//! What a CLIP run reads and evaluates on, shared by pre-training, the
//! evaluation of a checkpoint and nothing else: the sources as training
//! pairs and named evaluation sets ([`read_data`]), and those sets as an
//! [`EvalSuite`] for a tokenizer ([`build_suite`]).
//!
//! Two kinds of evaluation set:
//!
//! * **test** (`held-out` in the names): the pairs `[data] held_out` keeps
//!   out of training, Fashion-MNIST's test split, the second rendering;
//!   read once, at the end of a run (and by `selfsup eval`);
//! * **validation** (`validation` in the names): what the per-epoch
//!   evaluation reads, carved out of the *training* data and never trained
//!   on: `[data] validation_fraction` of each source's training images
//!   (stratified by class where the source has classes, seeded by the
//!   run's seed) for retrieval, emoji-category zero-shot and seen-class
//!   caption classification; the second rendering of those same emoji; and
//!   the training-split images of the held-out Fashion-MNIST classes (at
//!   most `test_images`), which never train, for held-out-class zero-shot.
use crate::captions::{fill, tokenize_all};
use crate::config::{ClipRunConfig, PairSource};
use crate::eval::{EvalSuite, RetrievalSet, ZeroShotSet};
use crate::held_out::{drop_naming, fashion_classes, held_out_indices, keep_classes};
use crate::pairs::{read_captions, PairSet, ReadOptions};
use crate::registry::{fashion_mnist_pairs, read_emoji};
use selfsup_core::eval::split::by_sample;
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::{Normalize, Split};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Named evaluation sets of one kind (test or validation).
#[derive(Debug, Clone, Default)]
pub struct EvalSets {
    /// Named retrieval sets.
    pub retrieval: Vec<(String, PairSet)>,
    /// Named labelled sets with their prompt templates (the name is the
    /// figure's, less " top-1").
    pub zero_shot: Vec<(String, PairSet, Vec<String>)>,
}

impl EvalSets {
    /// `name (N images)` of every set, for the log.
    pub fn describe(&self) -> Vec<String> {
        self.retrieval
            .iter()
            .map(|(n, s)| format!("{n} ({} images)", s.len()))
            .chain(
                self.zero_shot
                    .iter()
                    .map(|(n, s, _)| format!("{n} ({} images)", s.len())),
            )
            .collect()
    }

    /// Whether there is no set.
    pub fn is_empty(&self) -> bool {
        self.retrieval.is_empty() && self.zero_shot.is_empty()
    }
}

/// Pairs to train on and to evaluate with, read from the sources.
pub struct RunData {
    pub train: PairSet,
    pub names: Vec<String>,
    /// Read once, at the end (see the module's doc).
    pub test: EvalSets,
    /// Read after every epoch and at the end, never trained on (see the
    /// module's doc).
    pub validation: EvalSets,
    /// Training images set aside for validation (the held-out classes'
    /// images and the second rendering were never training images).
    pub validation_images: usize,
    /// The Fashion-MNIST classes held out of training (lower-cased).
    pub held_out_classes: Vec<String>,
    /// Training images of other sources dropped because a caption of theirs
    /// names a held-out class.
    pub dropped_naming_held_out: usize,
}

/// Figure names of the Fashion-MNIST sets (" top-1" follows).
pub const SEEN_CLASSES: &str = "fashion-mnist seen-class caption classification";
/// See [`SEEN_CLASSES`].
pub const HELD_OUT_CLASSES: &str = "fashion-mnist held-out-class zero-shot";
/// Seen-class caption classification on the validation part of the
/// Fashion-MNIST training images.
pub const VALIDATION_SEEN_CLASSES: &str =
    "fashion-mnist validation seen-class caption classification";
/// Held-out-class zero-shot on training-split images of the held-out
/// classes (never trained on).
pub const VALIDATION_HELD_OUT_CLASSES: &str = "fashion-mnist validation held-out-class zero-shot";

/// The validation part of the images `idx` of `set`: `fraction` of them
/// set aside, stratified by `set`'s labels (one stratum when it has none),
/// drawn with `seed`. Returns (train, validation) as indices into `set`;
/// nothing is set aside when `fraction` is 0 or there are fewer than two
/// images.
fn set_aside(
    set: &PairSet,
    idx: &[usize],
    fraction: f64,
    seed: u64,
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if fraction == 0.0 || idx.len() < 2 {
        return Ok((idx.to_vec(), Vec::new()));
    }
    let labels: Vec<i64> = match &set.images.labels {
        Some(l) => idx
            .iter()
            .map(|&i| l.get(i).copied().unwrap_or(-1))
            .collect(),
        None => vec![0; idx.len()],
    };
    let split = by_sample(&labels, fraction, seed).map_err(|e| {
        Error::Data(format!(
            "{what}: [data] validation_fraction = {fraction}: {e} (set it to 0 to train on every \
             pair and skip the per-epoch figures)"
        ))
    })?;
    let pick = |part: &[usize]| part.iter().filter_map(|&k| idx.get(k).copied()).collect();
    Ok((pick(&split.train), pick(&split.validation)))
}

/// Adds `set` as a validation retrieval set when it has at least two images
/// (one image is always retrieved).
fn push_retrieval(sets: &mut EvalSets, name: String, set: PairSet) {
    if set.len() >= 2 {
        sets.retrieval.push((name, set));
    }
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Reads every source under the data root `root` (`--data`, or its
/// default) and splits it into training and evaluation sets. A file that
/// is not there is an error naming it, the root and `--data`.
pub fn read_data(cfg: &ClipRunConfig, root: &Path) -> Result<RunData> {
    read_sources(cfg, root).map_err(|e| match e {
        Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Data(format!(
                "{}: not found ({source}); [[data.sources]] paths are relative to the data root \
                 {}: give the folder that holds them with --data",
                path.display(),
                root.display()
            ))
        }
        other => other,
    })
}

fn read_sources(cfg: &ClipRunConfig, root: &Path) -> Result<RunData> {
    let opts = ReadOptions {
        image_size: cfg.data.image_size,
        skip_bad: cfg.data.skip_bad,
    };
    let mut train = Vec::new();
    let mut names = Vec::new();
    let mut test = EvalSets::default();
    let mut validation = EvalSets::default();
    let fraction = cfg.data.validation_fraction;
    // Each source draws its validation part with its own seed.
    let seed = |k: usize| cfg.trainer.seed.wrapping_add(k as u64);
    // Emoji set aside for validation (their second rendering is validation too).
    let mut validation_keys: HashSet<String> = HashSet::new();
    let mut validation_images = 0;
    let classes = fashion_classes();
    let mut held_out_classes: Vec<String> = Vec::new();
    for src in &cfg.data.sources {
        if let PairSource::FashionMnist {
            held_out_classes: h,
            ..
        } = src
        {
            for i in held_out_indices(h).map_err(Error::Config)? {
                let name = classes.get(i).cloned().unwrap_or_default();
                if !held_out_classes.contains(&name) {
                    held_out_classes.push(name);
                }
            }
        }
    }
    for (k, src) in cfg.data.sources.iter().enumerate() {
        match src {
            PairSource::Captions { file, images } => {
                let file = resolve(root, file);
                let images = images.as_ref().map(|p| resolve(root, p));
                let set = read_captions(&file, images.as_deref(), opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if !ho.is_empty() {
                    test.retrieval
                        .push((format!("{name} held-out"), set.subset(&ho)));
                }
                let (tr, va) = set_aside(&set, &tr, fraction, seed(k), &name)?;
                validation_images += va.len();
                push_retrieval(
                    &mut validation,
                    format!("{name} validation"),
                    set.subset(&va),
                );
                names.push(file.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::Emoji { path } => {
                let dir = resolve(root, path);
                let name = dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let set = read_emoji(&dir, &name, opts)?;
                let (tr, ho) = set.split(cfg.data.held_out);
                if !ho.is_empty() {
                    let held = set.subset(&ho);
                    test.retrieval
                        .push((format!("{name} held-out"), held.clone()));
                    if cfg.eval.second_rendering.is_none() {
                        test.zero_shot.push((
                            format!("{name} held-out categories zero-shot"),
                            held,
                            cfg.eval.emoji_templates.clone(),
                        ));
                    }
                }
                let (tr, va) = set_aside(&set, &tr, fraction, seed(k), &name)?;
                validation_images += va.len();
                validation_keys.extend(va.iter().filter_map(|&i| set.keys.get(i).cloned()));
                let val = set.subset(&va);
                if cfg.eval.second_rendering.is_none() && !val.is_empty() {
                    validation.zero_shot.push((
                        format!("{name} validation categories zero-shot"),
                        val.clone(),
                        cfg.eval.emoji_templates.clone(),
                    ));
                }
                push_retrieval(&mut validation, format!("{name} validation"), val);
                names.push(dir.display().to_string());
                train.push(set.subset(&tr));
            }
            PairSource::FashionMnist {
                path,
                train_images,
                test_images,
                captions,
                held_out_classes: held,
            } => {
                let dir = resolve(root, path);
                let s = cfg.data.image_size;
                let held = held_out_indices(held).map_err(Error::Config)?;
                let seen: Vec<usize> = (0..classes.len()).filter(|c| !held.contains(c)).collect();
                let all = fashion_mnist_pairs(&dir, Split::Train, *train_images, s, captions)?;
                let seen_train = keep_classes(&all, &seen);
                let every: Vec<usize> = (0..seen_train.len()).collect();
                let (tr, va) = set_aside(&seen_train, &every, fraction, seed(k), "fashion-mnist")?;
                validation_images += va.len();
                if !va.is_empty() {
                    validation.zero_shot.push((
                        VALIDATION_SEEN_CLASSES.into(),
                        seen_train.subset(&va),
                        cfg.eval.photo_templates.clone(),
                    ));
                }
                // Training-split images of the held-out classes never train:
                // their zero-shot figure is a validation one.
                let held_train = keep_classes(&all, &held);
                if fraction > 0.0 && !held.is_empty() && !held_train.is_empty() {
                    let first: Vec<usize> = (0..held_train.len().min(*test_images)).collect();
                    validation.zero_shot.push((
                        VALIDATION_HELD_OUT_CLASSES.into(),
                        held_train.subset(&first),
                        cfg.eval.held_out_templates.clone(),
                    ));
                }
                train.push(seen_train.subset(&tr));
                let test_set =
                    fashion_mnist_pairs(&dir, Split::Test, Some(*test_images), s, captions)?;
                let seen_test = keep_classes(&test_set, &seen);
                if !seen_test.is_empty() {
                    test.zero_shot.push((
                        SEEN_CLASSES.into(),
                        seen_test,
                        cfg.eval.photo_templates.clone(),
                    ));
                }
                let held_test = keep_classes(&test_set, &held);
                if !held.is_empty() && !held_test.is_empty() {
                    test.zero_shot.push((
                        HELD_OUT_CLASSES.into(),
                        held_test,
                        cfg.eval.held_out_templates.clone(),
                    ));
                }
                names.push(dir.display().to_string());
            }
        }
    }
    if let Some(second) = &cfg.eval.second_rendering {
        let dir = resolve(root, second);
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let set = read_emoji(&dir, &name, opts)?;
        let (tr, ho) = set.split(cfg.data.held_out);
        if !ho.is_empty() {
            let held = set.subset(&ho);
            test.retrieval
                .push((format!("{name} held-out emoji"), held.clone()));
            test.zero_shot.push((
                format!("{name} held-out categories zero-shot"),
                held,
                cfg.eval.emoji_templates.clone(),
            ));
        }
        // The emoji set aside for validation did not train in the first
        // rendering either: they are validation here, not training emoji.
        let (va, tr): (Vec<usize>, Vec<usize>) = tr.into_iter().partition(|&i| {
            set.keys
                .get(i)
                .is_some_and(|key| validation_keys.contains(key))
        });
        if !va.is_empty() {
            let val = set.subset(&va);
            validation.zero_shot.push((
                format!("{name} validation categories zero-shot"),
                val.clone(),
                cfg.eval.emoji_templates.clone(),
            ));
            push_retrieval(&mut validation, format!("{name} validation emoji"), val);
        }
        let seen: Vec<usize> = tr.into_iter().take(cfg.eval.seen_images).collect();
        if !seen.is_empty() {
            test.retrieval
                .push((format!("{name} training emoji"), set.subset(&seen)));
        }
    }
    let train = PairSet::concat("train", &train)?;
    let (train, dropped_naming_held_out) = drop_naming(&train, &held_out_classes);
    Ok(RunData {
        train,
        names,
        test,
        validation,
        validation_images,
        held_out_classes,
        dropped_naming_held_out,
    })
}

/// The evaluation suite of `sets` (a [`RunData`]'s test or validation sets)
/// for tokenizer `tok`.
pub fn build_suite(
    sets: &EvalSets,
    tok: &TextTokenizer,
    max_len: usize,
    norm: &Normalize,
) -> Result<EvalSuite> {
    let mut retrieval = Vec::new();
    for (name, set) in &sets.retrieval {
        let mut texts = Vec::new();
        let mut text_image = Vec::new();
        for (i, caps) in set.captions.iter().enumerate() {
            texts.extend(caps.iter().cloned());
            text_image.extend(std::iter::repeat_n(i as i64, caps.len()));
        }
        retrieval.push(RetrievalSet {
            name: name.clone(),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            texts: tokenize_all(tok, &texts, max_len)?,
            text_image,
        });
    }
    let mut zero_shot = Vec::new();
    for (name, set, templates) in &sets.zero_shot {
        let labels = set
            .images
            .labels_tensor()
            .ok_or_else(|| Error::Config(format!("{name}: zero-shot needs class labels")))?;
        let prompts = set
            .images
            .classes
            .iter()
            .map(|c| {
                let texts: Vec<String> = templates.iter().map(|t| fill(t, c)).collect();
                tokenize_all(tok, &texts, max_len)
            })
            .collect::<Result<Vec<_>>>()?;
        zero_shot.push(ZeroShotSet {
            name: format!("{name} top-1"),
            images: set
                .images
                .to_tensor(&(0..set.len()).collect::<Vec<_>>(), norm),
            labels,
            chance: 1.0 / set.images.classes.len().max(1) as f64,
            prompts,
        });
    }
    Ok(EvalSuite {
        retrieval,
        zero_shot,
        pad_id: tok.pad_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::as_documents;
    use crate::held_out::names_class;

    /// IDX files of Fashion-MNIST's `prefix` split: `labels.len()` 4x4
    /// images, each filled with `10 * label + 5` in the training split and
    /// `10 * label + 6` in the test split (so an image tells its class and
    /// its split).
    fn idx(dir: &Path, prefix: &str, labels: &[u8]) {
        let split = u8::from(prefix == "t10k");
        let n = (labels.len() as u32).to_be_bytes();
        let mut img = vec![0, 0, 8, 3];
        img.extend(n);
        img.extend(4u32.to_be_bytes());
        img.extend(4u32.to_be_bytes());
        for &l in labels {
            img.extend([10 * l + 5 + split; 16]);
        }
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(n);
        lab.extend(labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }

    /// A data root with Fashion-MNIST (30 training images, 3 of each class;
    /// 40 test images, 4 of each) and an emoji folder two of whose three
    /// emoji name a held-out class.
    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let fm = dir.path().join("fashion-mnist");
        std::fs::create_dir_all(&fm).unwrap();
        let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>();
        idx(&fm, "train", &labels(30));
        idx(&fm, "t10k", &labels(40));
        let em = dir.path().join("emoji-test");
        std::fs::create_dir_all(em.join("img")).unwrap();
        let json = r#"[
          {"name": "WOMANS SANDAL", "short_names": ["sandal"], "image": "a.png", "category": "Objects"},
          {"name": "MONEY BAG", "short_names": ["moneybag"], "image": "b.png", "category": "Objects"},
          {"name": "HANDBAG", "short_names": ["purse"], "image": "c.png", "category": "Objects"}
        ]"#;
        std::fs::write(em.join("emoji.json"), json).unwrap();
        for f in ["a.png", "b.png", "c.png"] {
            image::RgbaImage::from_pixel(4, 4, image::Rgba([200, 0, 0, 255]))
                .save(em.join("img").join(f))
                .unwrap();
        }
        dir
    }

    const HELD: [&str; 5] = ["trouser", "sandal", "sneaker", "bag", "ankle boot"];

    fn config() -> ClipRunConfig {
        let mut cfg = ClipRunConfig::default();
        cfg.data.image_size = 4;
        cfg.data.held_out = 0.0;
        cfg.data.validation_fraction = 0.0;
        cfg.data.sources = vec![
            PairSource::Emoji {
                path: "emoji-test".into(),
            },
            PairSource::FashionMnist {
                path: "fashion-mnist".into(),
                train_images: None,
                test_images: 40,
                captions: vec!["a photo of a {}".into(), "a {}".into()],
                held_out_classes: HELD.iter().map(|c| c.to_string()).collect(),
            },
        ];
        cfg
    }

    #[test]
    fn held_out_classes_never_reach_the_training_captions() {
        let dir = root();
        let data = read_data(&config(), dir.path()).unwrap();
        assert_eq!(data.held_out_classes, HELD);
        // 15 Fashion-MNIST images of the 5 trained classes, and the handbag:
        // the sandal and the money bag name held-out classes.
        assert_eq!(data.dropped_naming_held_out, 2);
        assert_eq!(data.train.len(), 15 + 1);
        let caps: Vec<&String> = data.train.captions.iter().flatten().collect();
        assert!(caps.contains(&&"handbag".to_string()), "{caps:?}");
        assert!(caps.contains(&&"a photo of a t-shirt/top".to_string()));
        for c in &caps {
            for h in HELD {
                assert!(!names_class(c, h), "{c:?} names {h}");
                assert!(!c.contains(h) || c.as_str() == "handbag", "{c:?}");
            }
        }
        // Without held-out classes every image trains.
        let mut all = config();
        if let Some(PairSource::FashionMnist {
            held_out_classes, ..
        }) = all.data.sources.get_mut(1)
        {
            held_out_classes.clear();
        }
        let data = read_data(&all, dir.path()).unwrap();
        assert_eq!((data.train.len(), data.dropped_naming_held_out), (33, 0));
        let names: Vec<&str> = data.test.zero_shot.iter().map(|z| z.0.as_str()).collect();
        assert_eq!(names, [SEEN_CLASSES]);
        assert_eq!(data.test.zero_shot[0].1.images.classes.len(), 10);
    }

    #[test]
    fn the_held_out_row_sees_only_held_out_images_and_prompts_training_never_used() {
        let dir = root();
        let cfg = config();
        let data = read_data(&cfg, dir.path()).unwrap();
        let names: Vec<&str> = data.test.zero_shot.iter().map(|z| z.0.as_str()).collect();
        assert_eq!(names, [SEEN_CLASSES, HELD_OUT_CLASSES]);
        let all = fashion_classes();
        for (set, want, templates) in [
            (
                &data.test.zero_shot[0],
                vec!["t-shirt/top", "pullover", "dress", "coat", "shirt"],
                &cfg.eval.photo_templates,
            ),
            (
                &data.test.zero_shot[1],
                HELD.to_vec(),
                &cfg.eval.held_out_templates,
            ),
        ] {
            let (_, set, t) = set;
            assert_eq!(t, templates);
            assert_eq!(set.images.classes, want);
            assert_eq!(set.len(), 20, "4 test images of each of 5 classes");
            let labels = set.images.labels.clone().unwrap();
            for (i, &l) in labels.iter().enumerate() {
                // The pixel tells the image's Fashion-MNIST class.
                let original = (set.images.image(i)[0] / 10) as usize;
                assert_eq!(all[original], want[l as usize], "image {i}");
            }
        }
        for t in &cfg.eval.held_out_templates {
            for c in ["a photo of a {}", "a {}"] {
                assert_ne!(t, c);
            }
        }
        let captions: Vec<Vec<String>> = data.train.captions.clone();
        let tok =
            selfsup_text::tokenizer::TextTokenizer::train(&as_documents(&captions), 200, 1, true)
                .unwrap();
        let suite = build_suite(&data.test, &tok, 16, &crate::config::image_normalize()).unwrap();
        let rows: Vec<(&str, f64, usize, i64)> = suite
            .zero_shot
            .iter()
            .map(|z| {
                (
                    z.name.as_str(),
                    z.chance,
                    z.prompts.len(),
                    z.labels.size()[0],
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "fashion-mnist seen-class caption classification top-1",
                    0.2,
                    5,
                    20
                ),
                ("fashion-mnist held-out-class zero-shot top-1", 0.2, 5, 20),
            ]
        );
        // Each held-out class has one prompt per held-out template.
        assert!(suite.zero_shot[1].prompts.iter().all(|p| p.len() == 2));
    }

    #[test]
    fn a_bad_held_out_class_is_refused_when_reading() {
        let dir = root();
        let mut cfg = config();
        if let Some(PairSource::FashionMnist {
            held_out_classes, ..
        }) = cfg.data.sources.get_mut(1)
        {
            *held_out_classes = vec!["sandal".into(), "boots".into()];
        }
        let e = read_data(&cfg, dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("held_out_classes")
                && e.contains("\"boots\"")
                && e.contains("\"ankle boot\""),
            "{e}"
        );
    }

    #[test]
    fn validation_is_carved_out_of_training_and_never_trained_on() {
        let dir = root();
        let mut cfg = config();
        cfg.data.validation_fraction = 0.2;
        let data = read_data(&cfg, dir.path()).unwrap();
        // One of the three training images of each trained class (0.2 of 3
        // rounds to 0, and a class with two or more gives at least one),
        // one of the three emoji, before the two naming a held-out class
        // leave the training pairs.
        let names: Vec<&str> = data
            .validation
            .zero_shot
            .iter()
            .map(|z| z.0.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "emoji-test validation categories zero-shot",
                VALIDATION_SEEN_CLASSES,
                VALIDATION_HELD_OUT_CLASSES
            ]
        );
        assert_eq!(data.validation_images, 1 + 5);
        // Test sets are those of a run without validation.
        let plain = read_data(&config(), dir.path()).unwrap();
        let sizes = |e: &EvalSets| -> Vec<(String, usize)> {
            e.zero_shot
                .iter()
                .map(|z| (z.0.clone(), z.1.len()))
                .chain(e.retrieval.iter().map(|r| (r.0.clone(), r.1.len())))
                .collect()
        };
        assert_eq!(sizes(&data.test), sizes(&plain.test));
        // A single validation emoji is no retrieval set (it is always found).
        assert!(data.validation.retrieval.is_empty());
        let seen = &data.validation.zero_shot[1].1;
        assert_eq!(seen.len(), 5);
        let held = &data.validation.zero_shot[2].1;
        assert_eq!(
            held.len(),
            15,
            "3 training-split images of each held-out class"
        );
        assert_eq!(held.images.classes, HELD);
        for (set, classes) in [(seen, 5), (held, 5)] {
            let labels = set.images.labels.clone().unwrap();
            let mut per_class = vec![0; classes];
            for (i, &l) in labels.iter().enumerate() {
                // Training split (pixel 10 * label + 5), never the test split.
                assert_eq!(set.images.image(i)[0] % 10, 5, "image {i}");
                per_class[l as usize] += 1;
            }
            assert!(per_class.iter().all(|&c| c >= 1), "{per_class:?}");
        }
        // Nothing set aside trains: the seen-class validation images and
        // the validation emoji are gone from the training pairs.
        let emoji = &data.validation.zero_shot[0].1;
        assert_eq!(emoji.len(), 1);
        // Without validation, that emoji trains unless it names a held-out class.
        let would_train = !emoji.captions[0]
            .iter()
            .any(|c| HELD.iter().any(|h| names_class(c, h)));
        assert_eq!(
            data.train.len(),
            plain.train.len() - 5 - usize::from(would_train)
        );
        let train_keys: HashSet<&String> = data.train.keys.iter().collect();
        for z in &data.validation.zero_shot[..2] {
            for key in &z.1.keys {
                assert!(!train_keys.contains(key), "{key} trains");
            }
        }
        // The same seed draws the same part; fraction 0 draws none.
        let again = read_data(&cfg, dir.path()).unwrap();
        assert_eq!(again.validation.zero_shot[1].1.keys, seen.keys);
        assert!(plain.validation.is_empty() && plain.validation_images == 0);
    }

    #[test]
    fn the_second_rendering_of_validation_emoji_is_validation_not_training_emoji() {
        let dir = root();
        let (from, to) = (
            dir.path().join("emoji-test"),
            dir.path().join("emoji-other"),
        );
        std::fs::create_dir_all(to.join("img")).unwrap();
        for f in ["emoji.json", "img/a.png", "img/b.png", "img/c.png"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
        let mut cfg = config();
        cfg.data.validation_fraction = 0.2;
        cfg.eval.second_rendering = Some("emoji-other".into());
        let data = read_data(&cfg, dir.path()).unwrap();
        let first = data
            .validation
            .zero_shot
            .iter()
            .find(|z| z.0 == "emoji-other validation categories zero-shot")
            .unwrap();
        assert!(!data
            .validation
            .zero_shot
            .iter()
            .any(|z| z.0.starts_with("emoji-test")));
        assert_eq!(first.1.len(), 1);
        let key = &first.1.keys[0];
        assert!(!data.train.keys.contains(key), "{key} trains");
        let (_, seen) = data
            .test
            .retrieval
            .iter()
            .find(|r| r.0 == "emoji-other training emoji")
            .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(
            !seen.keys.contains(key),
            "{key} counted as a training emoji"
        );
    }
}
