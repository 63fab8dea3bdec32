//! Multimodal readers: captions files (CSV, TSV, JSON Lines) and the CLIP
//! image decoder.
use crate::engine::Target;
use crate::targets::vision::image_seeds;
use selfsup_multimodal::image_file::decode_rgb;
use selfsup_multimodal::pairs::{parse_captions, resolve_under, CaptionsFormat};
use std::path::Path;

const DICT: &[&[u8]] = &[
    b"image,caption\n",
    b"\"",
    b"\"\"",
    b",",
    b"\t",
    b"{\"image\": \"",
    b"\", \"caption\": \"",
    b"\"}",
    b"../",
    b"/",
    b"\\",
    b"C:\\",
    b"..",
    b"\0",
    b".png",
];

pub const TARGETS: [Target; 4] = [
    Target {
        name: "captions-csv",
        about: "selfsup_multimodal::pairs::parse_captions (CSV) + resolve_under",
        run: run_csv,
        seeds: seeds_csv,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "captions-tsv",
        about: "selfsup_multimodal::pairs::parse_captions (TSV) + resolve_under",
        run: run_tsv,
        seeds: seeds_tsv,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "captions-jsonl",
        about: "selfsup_multimodal::pairs::parse_captions (JSON Lines) + resolve_under",
        run: run_jsonl,
        seeds: seeds_jsonl,
        dict: DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "clip-image",
        about: "selfsup_multimodal::image_file::decode_rgb (PNG / JPEG)",
        run: run_image,
        seeds: image_seeds,
        dict: &[
            b"\x89PNG\r\n\x1a\n",
            b"IHDR",
            b"IDAT",
            b"IEND",
            b"PLTE",
            b"tRNS",
            b"\xff\xd8\xff\xe0",
            b"\xff\xc0",
            b"\xff\xc4",
            b"\xff\xda",
            b"\xff\xd9",
        ],
        max_len: 128 << 10,
    },
];

fn run(data: &[u8], format: CaptionsFormat, name: &str) -> Result<(), String> {
    let records = parse_captions(data, format, Path::new(name)).map_err(|e| e.to_string())?;
    let root = Path::new("/data/images");
    for r in &records {
        if let Some(p) = resolve_under(root, &r.image) {
            assert!(
                p.starts_with(root),
                "{:?} resolved outside the root: {p:?}",
                r.image
            );
        }
    }
    Ok(())
}

fn run_csv(data: &[u8]) -> Result<(), String> {
    run(data, CaptionsFormat::Csv, "fuzz.csv")
}

fn run_tsv(data: &[u8]) -> Result<(), String> {
    run(data, CaptionsFormat::Tsv, "fuzz.tsv")
}

fn run_jsonl(data: &[u8]) -> Result<(), String> {
    run(data, CaptionsFormat::JsonLines, "fuzz.jsonl")
}

fn seeds_csv() -> Vec<Vec<u8>> {
    vec![
        b"image,caption\ncats/1.png,a cat on a red sofa\n\"dogs/2.png\",\"a dog, running\"\n"
            .to_vec(),
        b"a.png,\"quoted \"\"inner\"\" text\"\nb.jpg,unquoted, with commas\n".to_vec(),
    ]
}

fn seeds_tsv() -> Vec<Vec<u8>> {
    vec![b"image\tcaption\ncats/1.png\ta cat\nsub/dir/x.jpeg\tanother caption\n".to_vec()]
}

fn seeds_jsonl() -> Vec<Vec<u8>> {
    vec![
        b"{\"image\": \"cats/1.png\", \"caption\": \"a cat on a red sofa\"}\n{\"image\": \"b.png\", \"caption\": \"x\"}\n"
            .to_vec(),
    ]
}

fn run_image(data: &[u8]) -> Result<(), String> {
    let size = [8, 1, 13][data.len() % 3];
    let out = decode_rgb(data, size).map_err(|e| format!("{e:?}"))?;
    assert_eq!(out.len(), size * size * 3, "wrong decoded size");
    Ok(())
}
