//! What a CLIP run reads and evaluates on, shared by pre-training, the
//! evaluation of a checkpoint and nothing else: the sources as training
//! pairs and named evaluation sets ([`read_data`]), and those sets as an
//! [`EvalSuite`] for a tokenizer ([`build_suite`]).
use crate::captions::{fill, tokenize_all};
use crate::config::{ClipRunConfig, PairSource};
use crate::eval::{EvalSuite, RetrievalSet, ZeroShotSet};
use crate::held_out::{drop_naming, fashion_classes, held_out_indices, keep_classes};
use crate::pairs::{read_captions, PairSet, ReadOptions};
use crate::registry::{fashion_mnist_pairs, read_emoji};
use selfsup_core::{Error, Result};
use selfsup_text::tokenizer::TextTokenizer;
use selfsup_vision::data::{Normalize, Split};
use std::path::{Path, PathBuf};

/// Pairs to train on and to evaluate with, read from the sources.
pub struct RunData {
    pub train: PairSet,
    pub names: Vec<String>,
    /// Named retrieval sets (held-out pairs).
    pub retrieval: Vec<(String, PairSet)>,
    /// Named labelled sets with their prompt templates (the name is the
    /// figure's, less " top-1").
    pub zero_shot: Vec<(String, PairSet, Vec<String>)>,
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
    let mut retrieval: Vec<(String, PairSet)> = Vec::new();
    let mut zero_shot: Vec<(String, PairSet, Vec<String>)> = Vec::new();
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
    for src in &cfg.data.sources {
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
                    retrieval.push((format!("{name} held-out"), set.subset(&ho)));
                }
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
                    retrieval.push((format!("{name} held-out"), held.clone()));
                    if cfg.eval.second_rendering.is_none() {
                        zero_shot.push((
                            format!("{name} held-out categories zero-shot"),
                            held,
                            cfg.eval.emoji_templates.clone(),
                        ));
                    }
                }
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
                train.push(keep_classes(&all, &seen));
                let test = fashion_mnist_pairs(&dir, Split::Test, Some(*test_images), s, captions)?;
                let seen_test = keep_classes(&test, &seen);
                if !seen_test.is_empty() {
                    zero_shot.push((
                        SEEN_CLASSES.into(),
                        seen_test,
                        cfg.eval.photo_templates.clone(),
                    ));
                }
                let held_test = keep_classes(&test, &held);
                if !held.is_empty() && !held_test.is_empty() {
                    zero_shot.push((
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
            retrieval.push((format!("{name} held-out emoji"), held.clone()));
            zero_shot.push((
                format!("{name} held-out categories zero-shot"),
                held,
                cfg.eval.emoji_templates.clone(),
            ));
        }
        let seen: Vec<usize> = tr.into_iter().take(cfg.eval.seen_images).collect();
        if !seen.is_empty() {
            retrieval.push((format!("{name} training emoji"), set.subset(&seen)));
        }
    }
    let train = PairSet::concat("train", &train)?;
    let (train, dropped_naming_held_out) = drop_naming(&train, &held_out_classes);
    Ok(RunData {
        train,
        names,
        retrieval,
        zero_shot,
        held_out_classes,
        dropped_naming_held_out,
    })
}

/// The evaluation suite of `data` for tokenizer `tok`.
pub fn build_suite(
    data: &RunData,
    tok: &TextTokenizer,
    max_len: usize,
    norm: &Normalize,
) -> Result<EvalSuite> {
    let mut retrieval = Vec::new();
    for (name, set) in &data.retrieval {
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
    for (name, set, templates) in &data.zero_shot {
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
    /// images, each filled with `10 * label + 5` (so an image tells its class).
    fn idx(dir: &Path, prefix: &str, labels: &[u8]) {
        let n = (labels.len() as u32).to_be_bytes();
        let mut img = vec![0, 0, 8, 3];
        img.extend(n);
        img.extend(4u32.to_be_bytes());
        img.extend(4u32.to_be_bytes());
        for &l in labels {
            img.extend([10 * l + 5; 16]);
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
        let names: Vec<&str> = data.zero_shot.iter().map(|z| z.0.as_str()).collect();
        assert_eq!(names, [SEEN_CLASSES]);
        assert_eq!(data.zero_shot[0].1.images.classes.len(), 10);
    }

    #[test]
    fn the_held_out_row_sees_only_held_out_images_and_prompts_training_never_used() {
        let dir = root();
        let cfg = config();
        let data = read_data(&cfg, dir.path()).unwrap();
        let names: Vec<&str> = data.zero_shot.iter().map(|z| z.0.as_str()).collect();
        assert_eq!(names, [SEEN_CLASSES, HELD_OUT_CLASSES]);
        let all = fashion_classes();
        for (set, want, templates) in [
            (
                &data.zero_shot[0],
                vec!["t-shirt/top", "pullover", "dress", "coat", "shirt"],
                &cfg.eval.photo_templates,
            ),
            (
                &data.zero_shot[1],
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
        let suite = build_suite(&data, &tok, 16, &crate::config::image_normalize()).unwrap();
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
}
