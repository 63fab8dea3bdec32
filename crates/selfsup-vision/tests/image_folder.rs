//! Folders of the user's own images: listing rules, decoding of mixed
//! formats and modes, the memory-mapped cache (hit, invalidation), bad files
//! with and without `skip_bad`, and `pretrain` end to end on a labelled and an
//! unlabelled folder (through core's run skeleton: `config.toml` and
//! `summary.json` in the run folder).
use selfsup_core::run::RunOptions;
use selfsup_core::trainer::Observer;
use selfsup_vision::data::folder_cache::{load_image_folder, CacheReport, FolderOptions};
use selfsup_vision::data::image_folder::list_folder;
use selfsup_vision::data::ImageDataset;
use selfsup_vision::pretrain::{pretrain, RunSummary, VisionRunConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn load(root: &Path, o: &FolderOptions) -> selfsup_vision::Result<(ImageDataset, CacheReport)> {
    load_image_folder(root, o, &mut |_, _| {})
}

fn rgb(path: &Path, w: u32, h: u32, c: [u8; 3]) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    image::RgbImage::from_pixel(w, h, image::Rgb(c))
        .save(path)
        .unwrap();
}

/// A 12x4 image: black, white, black in three 4x4 blocks. Its centre square
/// is white; stretching it to a square would mix black in.
fn bands(path: &Path) {
    let img = image::RgbImage::from_fn(12, 4, |x, _| {
        if (4..8).contains(&x) {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([0, 0, 0])
        }
    });
    img.save(path).unwrap();
}

fn webp_rgba(path: &Path, w: u32, h: u32, px: [u8; 4]) {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba(px));
    let f = std::fs::File::create(path).unwrap();
    image::codecs::webp::WebPEncoder::new_lossless(f)
        .encode(&img, w, h, image::ExtendedColorType::Rgba8)
        .unwrap();
}

/// root/a: grey PNG, nested RGB JPEG, 12x4 bands; root/b: RGBA WebP
/// (transparent: white), 16-bit RGB PNG; hidden and non-image files.
fn labelled_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/nested/deeper")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    image::GrayImage::from_pixel(5, 7, image::Luma([100]))
        .save(root.join("a/grey.png"))
        .unwrap();
    rgb(&root.join("a/nested/deeper/photo.jpg"), 9, 6, [200, 40, 40]);
    bands(&root.join("a/wide.png"));
    webp_rgba(&root.join("b/clear.webp"), 6, 6, [0, 0, 0, 0]);
    let sixteen = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(
        4,
        4,
        image::Rgb([65535, 0, 32896]),
    );
    image::DynamicImage::ImageRgb16(sixteen)
        .save(root.join("b/deep.png"))
        .unwrap();
    std::fs::write(root.join("b/.hidden.png"), b"not a png at all").unwrap();
    std::fs::write(root.join("b/notes.txt"), b"text").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/x.png"), b"junk").unwrap();
}

#[test]
fn labelled_tree_of_mixed_formats_and_modes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    labelled_tree(&root);
    let cache = t.path().join("cache");
    let (d, r) = load(&root, &opts(&cache, 4, 3)).unwrap();
    assert!(!r.hit);
    assert_eq!(d.classes, vec!["a", "b"]);
    // Sorted by path: a/grey.png, a/nested/deeper/photo.jpg, a/wide.png, b/clear.webp, b/deep.png.
    assert_eq!(d.labels, Some(vec![0, 0, 0, 1, 1]));
    assert_eq!((d.len(), d.height, d.width, d.channels), (5, 4, 4, 3));
    assert!(d.pixels.is_mapped());
    assert!(d.image(0).iter().all(|&v| v == 100), "{:?}", d.image(0));
    // JPEG: close to the colour.
    let p = d.image(1);
    assert!(p[0] > 180 && p[1] < 70 && p[2] < 70, "{p:?}");
    // The centre square of the bands is white: resize-shorter-side + centre crop.
    assert!(d.image(2).iter().all(|&v| v == 255), "{:?}", d.image(2));
    // Transparent WebP over white.
    assert!(d.image(3).iter().all(|&v| v == 255), "{:?}", d.image(3));
    // 16-bit to 8-bit.
    assert_eq!(&d.image(4)[..3], &[255, 0, 128]);
    // Grey output of the same folder: another cache.
    let (g, r) = load(&root, &opts(&cache, 3, 1)).unwrap();
    assert!(!r.hit);
    assert_eq!((g.len(), g.channels, g.image_len()), (5, 1, 9));
    assert!(g.image(0).iter().all(|&v| v == 100));
}

fn opts(cache: &Path, side: usize, channels: usize) -> FolderOptions {
    FolderOptions {
        side,
        channels,
        skip_bad: false,
        cache_root: cache.to_path_buf(),
    }
}

fn skipping(mut o: FolderOptions) -> FolderOptions {
    o.skip_bad = true;
    o
}

/// Sets a file's modification time back (so a same-size rewrite is
/// invisible to the fingerprint: only a decode would notice).
fn set_mtime(path: &Path, t: std::time::SystemTime) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn the_second_load_maps_the_cache_without_decoding() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    labelled_tree(&root);
    let o = opts(&t.path().join("cache"), 4, 3);
    let (first, r1) = load(&root, &o).unwrap();
    assert!(!r1.hit);
    // Garbage of the same size and the same mtime in place of a PNG: a
    // decode would fail, the cache does not decode.
    let f = root.join("a/grey.png");
    let meta = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, vec![0u8; meta.len() as usize]).unwrap();
    set_mtime(&f, meta.modified().unwrap());
    let (second, r2) = load(&root, &o).unwrap();
    assert!(r2.hit, "{r2:?}");
    assert_eq!(r2.pixels_file, r1.pixels_file);
    assert_eq!(second.pixels, first.pixels);
    assert_eq!(second.labels, first.labels);
    // A real change (new mtime) invalidates it: now the garbage is decoded.
    set_mtime(&f, std::time::SystemTime::now());
    let e = load(&root, &o).unwrap_err().to_string();
    assert!(
        e.contains("grey.png") && e.contains("skip_bad = true"),
        "{e}"
    );
}

#[test]
fn a_changed_added_or_removed_file_rebuilds_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    labelled_tree(&root);
    let o = opts(&t.path().join("cache"), 4, 3);
    let (d0, _) = load(&root, &o).unwrap();
    // Modified: another colour (another size, too).
    image::GrayImage::from_pixel(8, 8, image::Luma([7]))
        .save(root.join("a/grey.png"))
        .unwrap();
    let (d1, r) = load(&root, &o).unwrap();
    assert!(!r.hit);
    assert!(d1.image(0).iter().all(|&v| v == 7));
    assert_eq!(d1.image(1), d0.image(1));
    // Added.
    rgb(&root.join("b/zz.png"), 4, 4, [1, 2, 3]);
    let (d2, r) = load(&root, &o).unwrap();
    assert!(!r.hit);
    assert_eq!(d2.len(), 6);
    assert_eq!(&d2.image(5)[..3], &[1, 2, 3]);
    // Removed.
    std::fs::remove_file(root.join("a/wide.png")).unwrap();
    let (d3, r) = load(&root, &o).unwrap();
    assert!(!r.hit);
    assert_eq!(d3.len(), 5);
    assert_eq!(d3.labels, Some(vec![0, 0, 1, 1, 1]));
    // Unchanged since: a hit; old pixel files were removed.
    let (_, r) = load(&root, &o).unwrap();
    assert!(r.hit);
    let dir = r.pixels_file.parent().unwrap();
    let pixel_files = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().ends_with(".u8")
        })
        .count();
    assert_eq!(pixel_files, 1);
}

#[test]
fn an_unlabelled_folder_has_no_labels() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("flat");
    rgb(&root.join("one.png"), 5, 5, [10, 20, 30]);
    rgb(&root.join("two.jpg"), 8, 8, [120, 120, 120]);
    webp_rgba(&root.join("three.WEBP"), 3, 3, [9, 9, 9, 255]);
    std::fs::create_dir_all(root.join("empty-sub")).unwrap();
    let (d, _) = load(&root, &opts(&t.path().join("c"), 2, 3)).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.labels, None);
    assert!(d.classes.is_empty());
    // Sorted: one.png, three.WEBP, two.jpg.
    assert_eq!(&d.image(0)[..3], &[10, 20, 30]);
    assert_eq!(&d.image(1)[..3], &[9, 9, 9]);
}

#[test]
fn images_beside_class_folders_are_refused_naming_one_of_each() {
    let t = tempfile::tempdir().unwrap();
    rgb(&t.path().join("loose.png"), 4, 4, [0, 0, 0]);
    rgb(&t.path().join("cat/x.png"), 4, 4, [0, 0, 0]);
    let e = list_folder(t.path()).unwrap_err().to_string();
    assert!(e.contains("loose.png") && e.contains("cat/x.png"), "{e}");
}

#[test]
fn empty_folders_and_empty_classes_are_named() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("nothing");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("readme.txt"), b"x").unwrap();
    std::fs::write(root.join(".hidden.png"), b"x").unwrap();
    let e = list_folder(&root).unwrap_err().to_string();
    assert!(e.contains("nothing") && e.contains("no image"), "{e}");
    rgb(&root.join("cls/a.png"), 4, 4, [0, 0, 0]);
    let e = list_folder(&root).unwrap_err().to_string();
    assert!(
        e.contains("sub") && e.contains("class folder holds no image"),
        "{e}"
    );
    let e = list_folder(&t.path().join("gone")).unwrap_err().to_string();
    assert!(
        e.contains("gone") && e.contains("no such image folder"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_ends() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    rgb(&root.join("a/x.png"), 4, 4, [0, 0, 0]);
    rgb(&root.join("b/y.png"), 4, 4, [0, 0, 0]);
    std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
    std::os::unix::fs::symlink("../a", root.join("b/back")).unwrap();
    std::os::unix::fs::symlink("self", root.join("a/self")).unwrap();
    let l = list_folder(&root).unwrap();
    let names: Vec<String> = (0..l.files.len()).map(|i| l.relative(i)).collect();
    // Each real image once (a/x.png through a, not again through b/back), plus
    // the self-referencing link, which is not a folder: listed as a file only
    // if it had an image extension (it has none).
    assert_eq!(names, vec!["a/x.png", "b/y.png"]);
}

/// A PNG whose header claims 100000 x 100000 pixels (CRC fixed up).
fn huge_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut c = 0xffff_ffffu32;
    for &b in &bytes[12..29] {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    bytes[29..33].copy_from_slice(&(!c).to_be_bytes());
    bytes
}

#[test]
fn bad_files_fail_naming_them_or_are_skipped_and_counted() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    labelled_tree(&root);
    // A truncated JPEG and a PNG header of 100000 x 100000 pixels.
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([50, 60, 70]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(root.join("a/cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(root.join("b/huge.png"), huge_png()).unwrap();
    let cache = t.path().join("cache");
    let o = opts(&cache, 4, 3);
    let e = load(&root, &o).unwrap_err().to_string();
    assert!(
        e.contains("cut.jpg") && e.contains("skip_bad = true"),
        "{e}"
    );
    let (d, r) = load(&root, &skipping(o.clone())).unwrap();
    assert_eq!(r.skipped_count, 2);
    let names: Vec<&str> = r.skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(names, vec!["a/cut.jpg", "b/huge.png"]);
    assert!(r.skipped[1].reason.contains("8192"), "{:?}", r.skipped[1]);
    assert_eq!(d.len(), 5);
    assert_eq!(d.labels, Some(vec![0, 0, 0, 1, 1]));
    // The cache built with skip_bad still refuses them without it.
    let e = load(&root, &o).unwrap_err().to_string();
    assert!(
        e.contains("cut.jpg") && e.contains("skip_bad = true"),
        "{e}"
    );
    let (_, r) = load(&root, &skipping(o)).unwrap();
    assert!(r.hit && r.skipped_count == 2);
}

#[test]
fn format_keys_are_checked_before_any_data() {
    let base = "[method]\nname = \"simclr\"\n[model]\narch = \"small_cnn\"\n";
    let parse = |data: &str| {
        VisionRunConfig::from_toml(&format!("{base}[data]\n{data}"), Path::new("x.toml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = parse("format = \"fashion-mnist\"\nimage_size = 64").unwrap_err();
    assert!(
        e.contains("image_size") && e.contains("image-folder"),
        "{e}"
    );
    let e = parse("format = \"cifar10\"\nskip_bad = true").unwrap_err();
    assert!(e.contains("skip_bad"), "{e}");
    let e = parse("format = \"image-folder\"\nchannels = 2").unwrap_err();
    assert!(e.contains("channels = 2"), "{e}");
    let e = parse("format = \"image-folder\"\nimage_size = 0").unwrap_err();
    assert!(e.contains("image_size = 0"), "{e}");
    parse("format = \"image-folder\"\nimage_size = 32\nchannels = 1\nskip_bad = true").unwrap();
    let e = VisionRunConfig::from_toml(
        &format!("{base}[data]\nformat = \"image-folder\"\n[eval]\ntest_images = 0"),
        Path::new("x.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("test_images = 0"), "{e}");
}

/// Records the phases a run reports.
#[derive(Default)]
struct Phases(Vec<(String, usize, usize)>);

impl Observer for Phases {
    fn phase(&mut self, name: &str, done: usize, total: usize) {
        self.0.push((name.to_string(), done, total));
    }
}

fn tiny_config(cache: &Path, test_path: Option<&Path>) -> VisionRunConfig {
    let test = test_path
        .map(|p| format!("test_path = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let text = format!(
        r#"
[run]
device = "cpu"
batch_size = 8
threads = 1
[data]
format = "image-folder"
image_size = 16
channels = 3
cache_dir = {cache:?}
{test}
[model]
arch = "small_cnn"
channels = [4, 8]
[method]
name = "simclr"
head = {{ hidden_dim = 16, out_dim = 8, layers = 2, batch_norm = true }}
[trainer]
epochs = 1
seed = 0
optimizer = {{ kind = "sgd", lr = 0.01, momentum = 0.9, weight_decay = 0.0 }}
[eval]
knn = {{ k = 3, temperature = 0.1 }}
knn_every_epoch = true
monitor_images = 8
linear_probe = true
linear = {{ epochs = 2, batch_size = 8 }}
"#,
        cache = cache.display().to_string(),
    );
    VisionRunConfig::from_toml(&text, Path::new("tiny.toml")).unwrap()
}

/// Two classes of 8 images each: dark and light squares with some texture.
fn two_classes(root: &Path, n: u32, salt: u32) {
    for (class, base) in [("dark", 30u32), ("light", 200u32)] {
        for i in 0..n {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                let v = (base + (x * 7 + y * 3 + i * 11 + salt) % 40) as u8;
                image::Rgb([v, v / 2 + 10, 255 - v])
            });
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn pretrain_summary(cfg: &VisionRunConfig, data: &Path, run_dir: PathBuf) -> (RunSummary, Phases) {
    let mut phases = Phases::default();
    let mut log = |_: &str| {};
    let s = pretrain(
        cfg,
        RunOptions {
            data: Some(data.to_path_buf()),
            run_dir,
            resume: false,
            observer: &mut phases,
            stop: Arc::new(AtomicBool::new(false)),
            git_commit: None,
            log: &mut log,
            distributed: None,
        },
    )
    .unwrap();
    (s, phases)
}

fn run(cfg: &VisionRunConfig, data: &Path, run_dir: PathBuf) -> (serde_json::Value, Phases) {
    let (s, phases) = pretrain_summary(cfg, data, run_dir);
    (serde_json::to_value(&s).unwrap(), phases)
}

/// Through core's `Run`: the resolved config is written as `config.toml`
/// (it parses back to the config), the summary as `summary.json` (the
/// returned one, plus the peak memory), and the summary's lines are the
/// terminal's.
#[test]
fn pretrain_writes_config_and_summary_through_the_run() {
    use selfsup_core::workflow::Report;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("train");
    two_classes(&root, 4, 0);
    let cfg = tiny_config(&t.path().join("cache"), None);
    let run_dir = t.path().join("run");
    let (s, _) = pretrain_summary(&cfg, &root, run_dir.clone());
    let written = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert_eq!(written, cfg.to_toml());
    assert_eq!(
        VisionRunConfig::from_toml(&written, Path::new("config.toml")).unwrap(),
        cfg
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["method"], "simclr");
    assert_eq!(json["train_images"], 8);
    assert_eq!(json["steps"], s.steps);
    assert_eq!(json["final_loss"].as_f64(), Some(s.final_loss));
    assert!(json.get("peak_rss_mb").is_some(), "{json}");
    assert!(json.get("knn_k_configured").is_none(), "{json}");
    assert_eq!(s.knn_k_configured, 3);
    let lines = s.lines();
    assert!(
        lines[1].starts_with("selfsup simclr on ") && lines[1].contains("(8 train / 0 test images"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  evaluation skipped: no [data] test_path")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("  exported encoder: {}", run_dir.join("export").display()).as_str())
    );
}

#[test]
fn pretrain_on_a_labelled_folder_with_a_test_folder() {
    let t = tempfile::tempdir().unwrap();
    let (train, test) = (t.path().join("train"), t.path().join("test"));
    two_classes(&train, 8, 0);
    two_classes(&test, 4, 5);
    let cfg = tiny_config(&t.path().join("cache"), Some(&test));
    let (s, phases) = run(&cfg, &train, t.path().join("run"));
    assert_eq!(s["train_images"], 16);
    assert_eq!(s["test_images"], 8);
    // 10 % of each class's 8 training images (one each) is the validation
    // part, held out of the bank; pre-training still saw all 16.
    assert_eq!(s["validation_images"], 2);
    assert_eq!(s["eval_train_images"], 14);
    let knn = s["knn_top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&knn), "{s}");
    for key in ["knn_val_top1", "linear_val_top1"] {
        let v = s[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {s}");
    }
    // The per-epoch records name the validation part; none holds a test
    // split figure.
    let metrics = std::fs::read_to_string(t.path().join("run").join("metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "epoch")
        .unwrap();
    let names: Vec<&str> = epoch["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "baseline: raw-pixel kNN (validation)",
            "kNN top-1 (validation)"
        ],
        "{epoch}"
    );
    assert!(
        s["evaluation"]
            .as_str()
            .unwrap()
            .contains("validation part: 2 other training images"),
        "{s}"
    );
    assert!(s["raw_knn_top1"].as_f64().unwrap() > 0.9, "{s}");
    assert!(s["linear_top1"].as_f64().is_some());
    assert_eq!(s["image_cache"]["hit"], false);
    assert!(
        s["evaluation"].as_str().unwrap().contains("test folder"),
        "{s}"
    );
    let names: Vec<&str> = phases.0.iter().map(|p| p.0.as_str()).collect();
    for want in [
        "reading images",
        "reading test images",
        "raw-pixel kNN baseline",
        "features",
        "kNN",
        "export",
    ] {
        assert!(names.contains(&want), "{want}: {names:?}");
    }
    assert!(phases.0.contains(&("reading images".into(), 16, 16)));
    // Again: the cache is hit.
    let (s, _) = run(&cfg, &train, t.path().join("run2"));
    assert_eq!(s["image_cache"]["hit"], true);
}

#[test]
fn pretrain_on_an_unlabelled_folder_skips_evaluation() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("photos");
    two_classes(&root, 6, 0);
    // Flatten: move every image up into the root.
    for class in ["dark", "light"] {
        for e in std::fs::read_dir(root.join(class)).unwrap() {
            let p = e.unwrap().path();
            let name = format!("{class}-{}", p.file_name().unwrap().to_string_lossy());
            std::fs::rename(&p, root.join(name)).unwrap();
        }
        std::fs::remove_dir(root.join(class)).unwrap();
    }
    let cfg = tiny_config(&t.path().join("cache"), None);
    let (s, phases) = run(&cfg, &root, t.path().join("run"));
    assert_eq!(s["train_images"], 12);
    assert_eq!(s["test_images"], 0);
    assert!(
        s["knn_top1"].is_null() && s["raw_knn_top1"].is_null(),
        "{s}"
    );
    assert!(s["linear_top1"].is_null());
    let why = s["evaluation"].as_str().unwrap();
    assert!(
        why.contains("skipped") && why.contains("unlabelled"),
        "{why}"
    );
    assert!(
        phases
            .0
            .iter()
            .any(|(n, _, t)| *t == 0 && n.contains("unlabelled")),
        "{:?}",
        phases.0
    );
    // The collapse monitors ran: metrics.jsonl has their figures.
    let metrics = std::fs::read_to_string(t.path().join("run/metrics.jsonl")).unwrap();
    assert!(metrics.contains("std_ratio"), "{metrics}");
    assert!(t.path().join("run/export/config.json").exists());
}

/// Two loads building the same cache at once both succeed with the same
/// images (unique temporary names, renames into place), and leave one
/// pixel file and no temporary file behind.
#[test]
fn two_builders_of_one_cache_at_once() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    labelled_tree(&root);
    let o = opts(&t.path().join("cache"), 4, 3);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| load(&root, &o).unwrap().0);
        let b = s.spawn(|| load(&root, &o).unwrap().0);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.len(), 5);
    let (_, r) = load(&root, &o).unwrap();
    assert!(r.hit);
    let names: Vec<String> = std::fs::read_dir(r.pixels_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".u8")).count(), 1);
}
