//! A folder of recordings: every `.wav` / `.ogg` below it (sorted by path),
//! decoded, mixed down to mono and resampled to 16 kHz, with an optional
//! labels CSV (`file,label` per line, file relative to the folder; a first
//! line `file,label` / `path,label` is a header). Without a CSV a clip's
//! label is its file stem, lower-cased (`A.ogg` -> `a`).
//!
//! A file that cannot be used (truncated, corrupt, empty, an unsupported
//! sample format, shorter than the receptive field) or a CSV line naming a
//! missing file stops the load with an error naming the file, or, with
//! `skip_bad`, is skipped and counted in the [`LoadReport`].
use crate::error::{AudioError, Result};
use crate::read::{is_audio, read_audio, ReadLimits};
use crate::resample::{resample, TARGET_RATE};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The receptive field of wav2vec 2.0's feature encoder (one frame), in samples.
pub const RECEPTIVE_FIELD: usize = 400;

/// One decoded clip at 16 kHz (not normalised).
#[derive(Debug, Clone)]
pub struct Clip {
    pub path: PathBuf,
    pub samples: Vec<f32>,
    pub label: Option<String>,
}

/// How many files a load read and skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub files: usize,
    pub clips: usize,
    /// Files or CSV lines skipped with `skip_bad`.
    pub skipped: usize,
    /// The first few skip reasons (file and why).
    pub skipped_examples: Vec<String>,
    /// Clips whose file was not at 16 kHz.
    pub resampled: usize,
    /// Total duration of the clips, seconds.
    pub seconds: f64,
}

impl LoadReport {
    fn skip(&mut self, why: String) {
        self.skipped += 1;
        if self.skipped_examples.len() < 5 {
            self.skipped_examples.push(why);
        }
    }

    /// Adds another report's counts.
    pub fn merge(&mut self, other: &LoadReport) {
        self.files += other.files;
        self.clips += other.clips;
        self.resampled += other.resampled;
        self.seconds += other.seconds;
        self.skipped += other.skipped;
        for w in &other.skipped_examples {
            if self.skipped_examples.len() < 5 {
                self.skipped_examples.push(w.clone());
            }
        }
    }
}

/// Every audio file below `root`, sorted by path.
pub fn list_audio(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| AudioError::io(dir, e))?;
        for e in entries {
            let e = e.map_err(|e| AudioError::io(dir, e))?;
            let path = e.path();
            let ty = e.file_type().map_err(|err| AudioError::io(&path, err))?;
            if ty.is_dir() {
                walk(&path, out)?;
            } else if is_audio(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Decodes one file to mono 16 kHz samples; refuses clips shorter than the
/// receptive field or longer than `limits` (checked from the header, before
/// decoding). Also says whether it was resampled.
pub fn load_clip(path: &Path, limits: &ReadLimits) -> Result<(Vec<f32>, bool)> {
    let d = read_audio(path, limits)?;
    let resampled = d.sample_rate != TARGET_RATE;
    let samples = resample(&d.samples, d.sample_rate, TARGET_RATE).map_err(|reason| {
        AudioError::Resample {
            path: path.to_path_buf(),
            from: d.sample_rate,
            reason,
        }
    })?;
    if samples.len() < RECEPTIVE_FIELD {
        return Err(AudioError::TooShort {
            path: path.to_path_buf(),
            samples: samples.len(),
            min: RECEPTIVE_FIELD,
        });
    }
    Ok((samples, resampled))
}

/// Decodes `files` (in parallel, order kept): `(path, label)` pairs.
pub fn load_clips(
    files: &[(PathBuf, Option<String>)],
    skip_bad: bool,
    limits: &ReadLimits,
) -> Result<(Vec<Clip>, LoadReport)> {
    let decoded: Vec<Result<(Vec<f32>, bool)>> = files
        .par_iter()
        .map(|(p, _)| load_clip(p, limits))
        .collect();
    let mut report = LoadReport {
        files: files.len(),
        ..LoadReport::default()
    };
    let mut clips = Vec::with_capacity(files.len());
    for ((path, label), r) in files.iter().zip(decoded) {
        match r {
            Ok((samples, resampled)) => {
                report.resampled += usize::from(resampled);
                report.seconds += samples.len() as f64 / TARGET_RATE as f64;
                clips.push(Clip {
                    path: path.clone(),
                    samples,
                    label: label.clone(),
                });
            }
            Err(e) if skip_bad => report.skip(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    report.clips = clips.len();
    Ok((clips, report))
}

/// The audio files below `root`, unlabelled.
pub fn unlabelled_files(root: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    if !root.is_dir() {
        return Err(AudioError::NoAudio(format!(
            "{} is not a folder (fetch the data with `cargo xtask fetch <dataset>` or pass --data)",
            root.display()
        )));
    }
    Ok(list_audio(root)?.into_iter().map(|p| (p, None)).collect())
}

/// The labelled files of `root`: from `labels_csv` when given (skipping and
/// counting lines that name missing files with `skip_bad`), else every audio
/// file labelled by its lower-cased file stem.
pub fn labelled_files(
    root: &Path,
    labels_csv: Option<&Path>,
    skip_bad: bool,
    report: &mut LoadReport,
) -> Result<Vec<(PathBuf, Option<String>)>> {
    let Some(csv) = labels_csv else {
        return Ok(unlabelled_files(root)?
            .into_iter()
            .map(|(p, _)| {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                (p, Some(stem))
            })
            .collect());
    };
    let text = std::fs::read_to_string(csv).map_err(|e| AudioError::io(csv, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && matches!(line, "file,label" | "path,label")) {
            continue;
        }
        let bad = |reason: String| AudioError::Labels {
            path: csv.to_path_buf(),
            line: i + 1,
            reason,
        };
        let Some((file, label)) = line.split_once(',') else {
            return Err(bad(format!("expected `file,label`, got '{line}'")));
        };
        let (file, label) = (file.trim(), label.trim());
        if label.is_empty() {
            return Err(bad(format!("no label for '{file}'")));
        }
        let Some(path) = selfsup_core::inside::join_inside(root, file) else {
            let e = bad(format!(
                "'{file}' leaves the folder {} (absolute, or `..` past it): name files inside it",
                root.display()
            ));
            if skip_bad {
                report.skip(e.to_string());
                continue;
            }
            return Err(e);
        };
        if !path.is_file() {
            let e = bad(format!("names {}, which does not exist", path.display()));
            if skip_bad {
                report.skip(e.to_string());
                continue;
            }
            return Err(e);
        }
        out.push((path, Some(label.to_string())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, samples: &[i16], rate: u32) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn bad_files_are_named_or_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let good: Vec<i16> = (0..8000)
            .map(|i| ((i as f32 * 0.05).sin() * 1e4) as i16)
            .collect();
        write_wav(&dir.path().join("a.wav"), &good, 16_000);
        write_wav(&dir.path().join("short.wav"), &good[..100], 16_000);
        write_wav(&dir.path().join("empty.wav"), &[], 16_000);
        std::fs::write(dir.path().join("junk.ogg"), b"not an ogg stream at all").unwrap();
        let files = unlabelled_files(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let err = load_clips(&files, false, &ReadLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("empty.wav") && err.contains("no audio"),
            "{err}"
        );
        let (clips, report) = load_clips(&files, true, &ReadLimits::default()).unwrap();
        assert_eq!(clips.len(), 1);
        assert_eq!(report.skipped, 3);
        let all = report.skipped_examples.join("\n");
        assert!(
            all.contains("short.wav") && all.contains("receptive field"),
            "{all}"
        );
        assert!(all.contains("junk.ogg") && all.contains("Ogg"), "{all}");
    }

    #[test]
    fn too_long_clips_are_named_or_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        write_wav(&dir.path().join("a.wav"), &[100; 8000], 16_000);
        write_wav(&dir.path().join("long.wav"), &[100; 40_000], 16_000);
        let files = unlabelled_files(dir.path()).unwrap();
        let limits = ReadLimits { max_seconds: 2.0 };
        let err = load_clips(&files, false, &limits).unwrap_err().to_string();
        assert!(
            err.contains("long.wav") && err.contains("max_seconds = 2"),
            "{err}"
        );
        let (clips, report) = load_clips(&files, true, &limits).unwrap();
        assert_eq!((clips.len(), report.skipped), (1, 1));
    }

    #[test]
    fn labels_csv_lines_naming_files_outside_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("spk");
        std::fs::create_dir(&sub).unwrap();
        write_wav(&dir.path().join("x.wav"), &[100; 1000], 16_000);
        write_wav(&sub.join("a.wav"), &[100; 1000], 16_000);
        let csv = sub.join("labels.csv");
        std::fs::write(&csv, "a.wav,a\n../x.wav,x\n").unwrap();
        let mut report = LoadReport::default();
        let err = labelled_files(&sub, Some(&csv), false, &mut report)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("leaves the folder"),
            "{err}"
        );
        let files = labelled_files(&sub, Some(&csv), true, &mut report).unwrap();
        assert_eq!((files.len(), report.skipped), (1, 1));
    }

    #[test]
    fn labels_come_from_the_csv_or_the_stem() {
        let dir = tempfile::tempdir().unwrap();
        let good: Vec<i16> = vec![100; 1000];
        write_wav(&dir.path().join("B.wav"), &good, 8_000);
        let mut report = LoadReport::default();
        let files = labelled_files(dir.path(), None, false, &mut report).unwrap();
        assert_eq!(files[0].1.as_deref(), Some("b"));
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "file,label\nB.wav,bee\nmissing.wav,x\n").unwrap();
        let err = labelled_files(dir.path(), Some(&csv), false, &mut report)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("labels.csv") && err.contains("line 3") && err.contains("missing.wav"),
            "{err}"
        );
        let files = labelled_files(dir.path(), Some(&csv), true, &mut report).unwrap();
        assert_eq!(
            files,
            vec![(dir.path().join("B.wav"), Some("bee".to_string()))]
        );
        assert_eq!(report.skipped, 1);
        let (clips, r) = load_clips(&files, false, &ReadLimits::default()).unwrap();
        assert_eq!(r.resampled, 1);
        assert_eq!(clips[0].samples.len(), 2000);
    }
}
