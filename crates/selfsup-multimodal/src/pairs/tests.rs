//! Tests of `pairs`.
use super::*;

fn png(dir: &Path, name: &str, rgb: [u8; 3]) {
    let img = image::RgbImage::from_pixel(6, 6, image::Rgb(rgb));
    img.save(dir.join(name)).unwrap();
}

fn opts(skip_bad: bool) -> ReadOptions {
    ReadOptions {
        image_size: 4,
        skip_bad,
    }
}

#[test]
fn csv_with_header_quotes_and_several_captions() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", [255, 0, 0]);
    png(dir.path(), "b.png", [0, 0, 255]);
    let f = dir.path().join("captions.csv");
    std::fs::write(
        &f,
        "image,caption\na.png,a red square\n\"a.png\",\"red, \"\"bright\"\"\"\nb.png,a blue square, small\n",
    )
    .unwrap();
    let p = read_captions(&f, None, opts(false)).unwrap();
    assert_eq!(p.keys, vec!["a.png", "b.png"]);
    assert_eq!(p.captions[0], vec!["a red square", "red, \"bright\""]);
    assert_eq!(p.captions[1], vec!["a blue square, small"]);
    assert_eq!(p.images.len(), 2);
    assert_eq!(&p.images.image(1)[0..3], &[0, 0, 255]);
    assert_eq!(p.pair_count(), 3);
}

#[test]
fn jsonl_records_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", [0, 255, 0]);
    let f = dir.path().join("c.jsonl");
    std::fs::write(&f, "{\"image\": \"a.png\", \"caption\": \"green\"}\n\n").unwrap();
    assert_eq!(read_captions(&f, None, opts(false)).unwrap().len(), 1);
    std::fs::write(
        &f,
        "{\"image\": \"a.png\", \"caption\": \"green\"}\n{\"image\": \"a.png\"}\n",
    )
    .unwrap();
    let e = read_captions(&f, None, opts(false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.jsonl: line 2") && e.contains("caption"),
        "{e}"
    );
}

#[test]
fn bad_pairs_name_file_and_line_or_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", [0, 255, 0]);
    std::fs::write(dir.path().join("broken.png"), b"nope").unwrap();
    std::fs::write(dir.path().join("x.bmp"), b"BM").unwrap();
    let f = dir.path().join("c.csv");
    let lines = [
        "a.png,green",       // 1 ok
        "gone.png,missing",  // 2 missing image
        "a.png,   ",         // 3 empty caption
        "a.png,green",       // 4 duplicate of 1
        "x.bmp,bitmap",      // 5 unsupported
        "broken.png,broken", // 6 unreadable
    ];
    std::fs::write(&f, lines.join("\n")).unwrap();
    let e = read_captions(&f, None, opts(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.csv: line 3: empty caption"), "{e}");
    let only = |keep: &[usize]| {
        let text: Vec<&str> = keep.iter().map(|&i| lines[i - 1]).collect();
        std::fs::write(&f, text.join("\n")).unwrap();
        read_captions(&f, None, opts(false))
            .unwrap_err()
            .to_string()
    };
    let e = only(&[1, 2]);
    assert!(
        e.contains("line 2: image") && e.contains("gone.png") && e.contains("does not exist"),
        "{e}"
    );
    let e = only(&[1, 4]);
    assert!(
        e.contains("line 2: duplicate pair") && e.contains("line 1"),
        "{e}"
    );
    let e = only(&[1, 5]);
    assert!(
        e.contains("line 2: image") && e.contains("x.bmp") && e.contains("not a supported format"),
        "{e}"
    );
    let e = only(&[1, 6]);
    assert!(
        e.contains("line 2: image") && e.contains("broken.png") && e.contains("cannot be read"),
        "{e}"
    );
    std::fs::write(&f, lines.join("\n")).unwrap();
    let p = read_captions(&f, None, opts(true)).unwrap();
    assert_eq!(p.pair_count(), 1);
    let r = &p.report;
    assert_eq!(
        (
            r.missing_images,
            r.empty_captions,
            r.duplicate_pairs,
            r.unsupported_images,
            r.unreadable_images
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(r.total(), 5);
}

#[test]
fn images_outside_the_images_folder_are_refused_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    png(&images, "a.png", [0, 255, 0]);
    png(dir.path(), "secret.png", [1, 2, 3]);
    let f = images.join("c.csv");
    let abs = dir.path().join("secret.png");
    for (bad, line) in [
        ("../secret.png".to_string(), 2),
        ("sub/../../secret.png".to_string(), 2),
        (abs.display().to_string(), 2),
    ] {
        std::fs::write(&f, format!("a.png,green\n{bad},stolen\n")).unwrap();
        let e = read_captions(&f, None, opts(false))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("c.csv: line {line}")) && e.contains("leaves the images folder"),
            "{bad}: {e}"
        );
        let p = read_captions(&f, None, opts(true)).unwrap();
        assert_eq!(
            (p.len(), p.report.outside_images, p.report.total()),
            (1, 1, 1)
        );
    }
    // `..` that stays inside is fine.
    std::fs::write(&f, "sub/../a.png,green\n").unwrap();
    assert_eq!(read_captions(&f, None, opts(false)).unwrap().len(), 1);
    assert_eq!(
        resolve_under(Path::new("r"), "./x/../y.png"),
        Some(PathBuf::from("r/y.png"))
    );
    assert_eq!(resolve_under(Path::new("r"), "x/.."), None);
}

#[test]
fn tsv_is_tab_separated_and_unknown_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a, b.png", [255, 0, 0]);
    let f = dir.path().join("c.tsv");
    std::fs::write(&f, "image\tcaption\na, b.png\ta \"red\", square\n").unwrap();
    let p = read_captions(&f, None, opts(false)).unwrap();
    assert_eq!(p.keys, vec!["a, b.png"]);
    assert_eq!(p.captions[0], vec!["a \"red\", square"]);
    std::fs::write(&f, "a, b.png,no tab\n").unwrap();
    let e = read_captions(&f, None, opts(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.tsv: line 1") && e.contains("tab"), "{e}");
    let x = dir.path().join("c.xlsx");
    std::fs::write(&x, "a.png,red\n").unwrap();
    let e = read_captions(&x, None, opts(false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.xlsx") && e.contains(".xlsx") && e.contains(".tsv") && e.contains(".jsonl"),
        "{e}"
    );
}

#[test]
fn captions_parse_from_memory_in_every_format() {
    let name = Path::new("mem");
    let want = vec![CaptionRecord {
        line: 2,
        image: "a.png".into(),
        caption: "red".into(),
    }];
    let cases: [(&[u8], CaptionsFormat); 3] = [
        (b"image,caption\na.png,red\n", CaptionsFormat::Csv),
        (b"image\tcaption\na.png\tred\n", CaptionsFormat::Tsv),
        (
            b"\n{\"image\": \"a.png\", \"caption\": \"red\"}",
            CaptionsFormat::JsonLines,
        ),
    ];
    for (bytes, fmt) in cases {
        assert_eq!(parse_captions(bytes, fmt, name).unwrap(), want, "{fmt:?}");
    }
    for (bytes, fmt) in [
        (&b"a.png,\"open"[..], CaptionsFormat::Csv),
        (&b"\""[..], CaptionsFormat::Csv),
        (&b"ok,x\n\xff\xfe"[..], CaptionsFormat::Csv),
        (&b"{\"image\": 1}"[..], CaptionsFormat::JsonLines),
    ] {
        let e = parse_captions(bytes, fmt, name).unwrap_err().to_string();
        assert!(e.starts_with("mem: line "), "{e}");
    }
}

#[test]
fn the_split_is_stable_and_near_its_fraction() {
    let keys: Vec<String> = (0..2000).map(|i| format!("img/{i}.png")).collect();
    let held = keys.iter().filter(|k| is_held_out(k, 0.1)).count();
    assert!((150..250).contains(&held), "{held}");
    assert!(keys
        .iter()
        .all(|k| is_held_out(k, 0.1) == is_held_out(k, 0.1)));
    assert!(!keys.iter().any(|k| is_held_out(k, 0.0)));
}
