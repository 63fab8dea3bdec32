//! Tests of `emoji` on small synthetic emoji packages.
use super::*;

/// Writes a 4x4 RGBA PNG of one colour.
fn rgba(path: &Path, px: [u8; 4]) {
    image::RgbaImage::from_pixel(4, 4, image::Rgba(px))
        .save(path)
        .unwrap();
}

/// A package in the fetched layout: `n_per` emoji in each of the categories
/// "Animals" and "Food" (distinct colours), one "Component" emoji, one entry
/// without a Google image, and `extra` added entries.
fn package(n_per: usize, extra: &[serde_json::Value]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut entries = Vec::new();
    for (c, cat) in ["Food", "Animals"].iter().enumerate() {
        for i in 0..n_per {
            let name = format!("{c}-{i}.png");
            rgba(&img.join(&name), [10 * i as u8, 100 * c as u8, 7, 255]);
            entries.push(serde_json::json!({
                "name": format!("{cat} {i}"), "image": name, "category": cat,
                "has_img_google": true, "has_img_twitter": true,
                "skin_variations": {"1F3FB": {"image": "ignored.png"}}
            }));
        }
    }
    rgba(&img.join("swatch.png"), [200, 150, 100, 255]);
    entries.push(serde_json::json!({"image": "swatch.png", "category": "Component"}));
    entries.push(serde_json::json!({
        "image": "absent.png", "category": "Food", "has_img_google": false
    }));
    entries.extend(extra.iter().cloned());
    std::fs::write(
        t.path().join("emoji.json"),
        serde_json::to_string(&entries).unwrap(),
    )
    .unwrap();
    t
}

fn opts(side: usize) -> EmojiOptions {
    EmojiOptions {
        side,
        test_fraction: 0.25,
        ..EmojiOptions::default()
    }
}

#[test]
fn categories_labels_and_left_out_entries() {
    let t = package(MIN_CATEGORY_IMAGES, &[]);
    let d = read_emoji(t.path(), &opts(4)).unwrap();
    // Sorted names; Component (1 image) dropped; the has_img_google = false
    // entry is never opened (its file does not exist).
    assert_eq!(d.train.classes, vec!["Animals", "Food"]);
    assert_eq!(
        d.report.dropped_categories,
        vec![("Component".to_string(), 1)]
    );
    assert_eq!((d.report.entries, d.report.without_image), (42, 1));
    assert_eq!(d.train.len() + d.test.len(), 40);
    // 25 % of each category of 20 in the test split.
    let count = |ds: &ImageDataset, l: i64| {
        ds.labels
            .as_ref()
            .unwrap()
            .iter()
            .filter(|&&x| x == l)
            .count()
    };
    assert_eq!((count(&d.test, 0), count(&d.test, 1)), (5, 5));
    // Every image carries its category's label and its own colour: file
    // "<c>-<i>.png" of category c ("Food" = 0 -> label 1) is (10 i, 100 c, 7).
    for (ds, files) in [(&d.train, &d.train_files), (&d.test, &d.test_files)] {
        for (k, f) in files.iter().enumerate() {
            let (c, i) = f.trim_end_matches(".png").split_once('-').unwrap();
            let (c, i): (u8, u8) = (c.parse().unwrap(), i.parse().unwrap());
            assert_eq!(ds.labels.as_ref().unwrap()[k], 1 - i64::from(c), "{f}");
            assert_eq!(&ds.image(k)[..3], &[10 * i, 100 * c, 7], "{f}");
        }
    }
    // No emoji on both sides.
    for f in &d.test_files {
        assert!(!d.train_files.contains(f), "{f}");
    }
    assert_eq!(d.train.name, "emoji-google/train");
    assert!(d.report.left_out().contains("Component (1)"));
}

#[test]
fn transparency_is_laid_over_white() {
    let extra = [serde_json::json!({"image": "half.png", "category": "Food"})];
    let t = package(MIN_CATEGORY_IMAGES, &extra);
    // Red at alpha 0 -> white; red at alpha 128 -> half way to white.
    let mut im = image::RgbaImage::from_pixel(4, 4, image::Rgba([255, 0, 0, 0]));
    im.put_pixel(0, 0, image::Rgba([255, 0, 0, 128]));
    im.save(t.path().join("img/half.png")).unwrap();
    let d = read_emoji(t.path(), &opts(4)).unwrap();
    let (ds, k) = match d.train_files.iter().position(|f| f == "half.png") {
        Some(k) => (&d.train, k),
        None => (
            &d.test,
            d.test_files.iter().position(|f| f == "half.png").unwrap(),
        ),
    };
    let img = ds.image(k);
    assert_eq!(&img[..3], &[255, 127, 127]);
    assert_eq!(&img[3..6], &[255, 255, 255]);
    // Resized to 2x2: the triangle filter mixes the corner into its quarter.
    let small = read_emoji(t.path(), &opts(2)).unwrap();
    assert_eq!(small.train.image_len(), 2 * 2 * 3);
}

#[test]
fn split_is_seeded_and_stable() {
    let t = package(MIN_CATEGORY_IMAGES, &[]);
    let a = read_emoji(t.path(), &opts(4)).unwrap();
    let b = read_emoji(t.path(), &opts(4)).unwrap();
    assert_eq!(a.test_files, b.test_files);
    assert_eq!(a.train_files, b.train_files);
    assert_eq!(a.test.pixels, b.test.pixels);
    let other = EmojiOptions {
        split_seed: 1,
        ..opts(4)
    };
    let c = read_emoji(t.path(), &other).unwrap();
    assert_ne!(a.test_files, c.test_files);
    // A duplicate image is dropped, and the split of the other emoji does not
    // move (it depends on each emoji's own name).
    let extra = [serde_json::json!({"image": "copy.png", "category": "Food"})];
    let t2 = package(MIN_CATEGORY_IMAGES, &extra);
    std::fs::copy(
        t2.path().join("img/0-3.png"),
        t2.path().join("img/copy.png"),
    )
    .unwrap();
    let d = read_emoji(t2.path(), &opts(4)).unwrap();
    assert_eq!(d.report.duplicates, 1);
    assert_eq!(d.test_files, a.test_files);
}

#[test]
fn npm_layout_and_twitter_flag() {
    let t = package(MIN_CATEGORY_IMAGES, &[]);
    let pkg = tempfile::tempdir().unwrap();
    let img = pkg.path().join("package/img/twitter/64");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy(
        t.path().join("emoji.json"),
        pkg.path().join("package/emoji.json"),
    )
    .unwrap();
    for e in std::fs::read_dir(t.path().join("img")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), img.join(e.file_name())).unwrap();
    }
    let tw = EmojiOptions {
        set: EmojiSet::Twitter,
        skip_bad: true,
        ..opts(4)
    };
    let d = read_emoji(pkg.path(), &tw).unwrap();
    assert_eq!(d.train.name, "emoji-twitter/train");
    // "absent.png" has no has_img_twitter flag: it is listed for Twitter,
    // and its file is missing (skipped and counted with skip_bad).
    assert_eq!(d.report.without_image, 0);
    assert_eq!(d.report.skipped_count, 1);
    assert_eq!(d.report.skipped[0].file, "absent.png");
    assert_eq!(d.train.len() + d.test.len(), 40);
    // The split is the Google one: the same names on the same sides.
    let g = read_emoji(t.path(), &opts(4)).unwrap();
    assert_eq!(d.test_files, g.test_files);
}

#[test]
fn bad_input_is_refused_by_name() {
    // No emoji.json.
    let empty = tempfile::tempdir().unwrap();
    let e = read_emoji(empty.path(), &opts(4)).unwrap_err().to_string();
    assert!(
        e.contains("emoji.json") && e.contains("cargo xtask fetch emoji-google"),
        "{e}"
    );
    // A listed PNG missing: named with its entry and the fix.
    let extra = [serde_json::json!({"image": "gone.png", "category": "Food"})];
    let t = package(MIN_CATEGORY_IMAGES, &extra);
    let e = read_emoji(t.path(), &opts(4)).unwrap_err().to_string();
    assert!(
        e.contains("gone.png") && e.contains("entry 42") && e.contains("skip_bad"),
        "{e}"
    );
    // ... skipped and counted with skip_bad; so is a corrupt one.
    std::fs::write(t.path().join("img/0-0.png"), b"\x89PNG\r\n\x1a\n junk").unwrap();
    let skip = EmojiOptions {
        skip_bad: true,
        ..opts(4)
    };
    let d = read_emoji(t.path(), &skip).unwrap();
    assert_eq!(d.report.skipped_count, 2);
    let names: Vec<&str> = d.report.skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(names, vec!["0-0.png", "gone.png"]);
    assert_eq!(d.train.len() + d.test.len(), 39);
    // An image path leaving img/.
    let extra = [serde_json::json!({"image": "../emoji.json", "category": "Food"})];
    let t = package(MIN_CATEGORY_IMAGES, &extra);
    let e = read_emoji(t.path(), &opts(4)).unwrap_err().to_string();
    assert!(
        e.contains("../emoji.json") && e.contains("plain file name"),
        "{e}"
    );
    // Not an emoji list.
    std::fs::write(t.path().join("emoji.json"), "{\"image\": 1}").unwrap();
    let e = read_emoji(t.path(), &opts(4)).unwrap_err().to_string();
    assert!(e.contains("not an emoji-datasource emoji.json"), "{e}");
    // No img/ folder.
    std::fs::remove_dir_all(t.path().join("img")).unwrap();
    let e = read_emoji(t.path(), &opts(4)).unwrap_err().to_string();
    assert!(e.contains("img") && e.contains("fetch"), "{e}");
    // No category with enough images is no labelled dataset.
    let t = package(3, &[]);
    let e = read_emoji(t.path(), &opts(4)).unwrap_err().to_string();
    assert!(e.contains("a labelled dataset needs two"), "{e}");
    // A test share outside (0, 1).
    let e = read_emoji(
        t.path(),
        &EmojiOptions {
            test_fraction: 1.0,
            ..opts(4)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("test_fraction"), "{e}");
}

#[test]
fn test_share_keeps_both_sides() {
    assert_eq!(test_count(0, 0.2), 0);
    assert_eq!(test_count(1, 0.2), 0);
    assert_eq!(test_count(2, 0.01), 1);
    assert_eq!(test_count(2, 0.99), 1);
    assert_eq!(test_count(20, 0.25), 5);
    assert!(plain_file_name("1f600.png"));
    assert!(!plain_file_name("../x.png") && !plain_file_name("a/b.png"));
    assert!(!plain_file_name("") && !plain_file_name("/x.png"));
}

#[test]
fn data_keys_belong_to_their_format() {
    use crate::config::{DataConfig, DataFormat};
    let emoji = |f: fn(&mut DataConfig)| {
        let mut d = DataConfig {
            format: DataFormat::Emoji,
            ..DataConfig::default()
        };
        f(&mut d);
        d.check().map_err(|e| e.to_string())
    };
    assert!(emoji(|d| {
        d.image_size = Some(64);
        d.set = Some(EmojiSet::Twitter);
        d.test_fraction = Some(0.3);
        d.split_seed = Some(7);
        d.skip_bad = Some(true);
    })
    .is_ok());
    let e = emoji(|d| d.test_path = Some("t".into())).unwrap_err();
    assert!(
        e.contains("[data] test_path") && e.contains("own test split"),
        "{e}"
    );
    let e = emoji(|d| d.test_fraction = Some(1.0)).unwrap_err();
    assert!(e.contains("test_fraction = 1"), "{e}");
    let e = emoji(|d| d.image_size = Some(0)).unwrap_err();
    assert!(e.contains("image_size = 0"), "{e}");
    for format in [DataFormat::FashionMnist, DataFormat::ImageFolder] {
        let d = DataConfig {
            format,
            set: Some(EmojiSet::Google),
            ..DataConfig::default()
        };
        let e = d.check().unwrap_err().to_string();
        assert!(e.contains("set") && e.contains("emoji"), "{e}");
    }
    let d = DataConfig {
        format: DataFormat::Emoji,
        image_size: Some(16),
        set: Some(EmojiSet::Twitter),
        ..DataConfig::default()
    };
    let o = d.emoji_options();
    assert_eq!((o.set, o.side, o.channels), (EmojiSet::Twitter, 16, 3));
    assert_eq!((o.test_fraction, o.split_seed), (DEFAULT_TEST_FRACTION, 0));
    assert_eq!(d.channels(), 3);
}

/// The emoji presets read a package through the vision workflow's loader:
/// a train and a test split, the evaluation line saying what was left out.
#[test]
fn presets_load_through_the_workflow() {
    let t = package(MIN_CATEGORY_IMAGES, &[]);
    for name in ["colorization-cpu.toml", "simclr-emoji-cpu.toml"] {
        let mut cfg = crate::config::tests::preset(name);
        cfg.data.image_size = Some(4);
        let loaded =
            crate::load::load_data(&cfg, t.path(), &mut selfsup_core::trainer::Silent).unwrap();
        let test = loaded.test.unwrap();
        assert_eq!((loaded.train.len(), test.len()), (32, 8), "{name}");
        assert_eq!(loaded.train.classes, vec!["Animals", "Food"]);
        assert!(
            loaded.evaluation.contains("20 % of each category")
                && loaded.evaluation.contains("Component (1)"),
            "{}",
            loaded.evaluation
        );
    }
}
