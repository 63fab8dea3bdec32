//! Speech-text pairs: a spoken clip and its written form.
//!
//! * KLettres (`<lang>/{alpha,syllab}/<form>.ogg`) and KTuberling
//!   (`<lang>/<word id>.ogg`): the written form is the file name
//!   ([`written_form`]); the speaker is the recording folder
//!   (`klettres/en_GB`, `ktuberling/de`: one speaker per language in both
//!   packages).
//! * A pairs CSV (`file,text,speaker` per line; a first line
//!   `file,text,speaker` is a header), files relative to its `audio` folder
//!   (by default the CSV's): a line naming a missing file is an error naming
//!   the CSV and the line, or skipped and counted with `[data] skip_bad`.
//!
//! Names that are no written form (`a-0.ogg`, `ad-16.ogg`: KLettres' numbered
//! Czech / Danish / Hebrew / Arabic recordings; `a1.ogg`, `a2.ogg`: two
//! Hungarian letters told apart by a digit) are left out and counted.
//! Byte-identical recordings (KTuberling's four Serbian locales share their
//! files) are kept once, the first by path, and counted, so that no clip is
//! both trained on and tested. Clips that cannot be decoded or are shorter
//! than the audio tower's receptive field stop the load naming the file, or
//! are skipped and counted with `skip_bad`.
use selfsup_audio::dataset::{list_audio, load_clips, LoadReport};
use selfsup_audio::normalize::zero_mean_unit_var;
use selfsup_audio::read::ReadLimits;
use selfsup_core::eval::split::by_group;
use selfsup_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The most clips one run reads (all sources together).
pub const MAX_CLIPS: usize = 200_000;

/// One source of speech-text pairs (`[[data.sources]]`), tagged by `format`;
/// paths are relative to the data root (`--data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SpeechSource {
    /// KLettres' folder: `<lang>/alpha/*.ogg` (letters), `<lang>/syllab/*.ogg`
    /// (syllables).
    Klettres { path: PathBuf },
    /// KTuberling's sounds folder: `<lang>/<word id>.ogg`.
    Ktuberling { path: PathBuf },
    /// A `file,text,speaker` CSV and its audio folder.
    Pairs {
        file: PathBuf,
        #[serde(default)]
        audio: Option<PathBuf>,
    },
}

impl SpeechSource {
    /// The source's short name (the first part of its speakers' names).
    pub fn name(&self) -> String {
        match self {
            SpeechSource::Klettres { .. } => "klettres".into(),
            SpeechSource::Ktuberling { .. } => "ktuberling".into(),
            SpeechSource::Pairs { file, .. } => file
                .file_stem()
                .map_or_else(|| "pairs".into(), |s| s.to_string_lossy().into_owned()),
        }
    }
}

/// The written form a KLettres / KTuberling file name spells, lower-cased:
/// a leading `NN-` numbering is dropped (`01-az` -> `az`), `_` and `-` become
/// spaces (`egypt_camel` -> `egypt camel`). `None` where the name holds any
/// other digit (`a-0`, `ad-16`, `a1`: an index, not a spelling).
pub fn written_form(stem: &str) -> Option<String> {
    let lower = stem.trim().to_lowercase();
    let body = match lower.split_once('-') {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => lower.as_str(),
    };
    if body.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let form: String = body
        .chars()
        .map(|c| if c == '_' || c == '-' { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!form.is_empty()).then_some(form)
}

/// One listed recording before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: PathBuf,
    pub text: String,
    pub speaker: String,
    /// Index of its source in `[data] sources`.
    pub source: usize,
}

/// What a load read, left out and skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairReport {
    /// Files whose name is no written form (numbered recordings).
    pub no_written_form: usize,
    /// Byte-identical copies of an earlier recording.
    pub duplicates: usize,
    /// Clips shorter than the audio tower's receptive field, skipped.
    pub too_short: usize,
    /// Decoding: files, clips, skipped (with `skip_bad`), seconds.
    pub audio: LoadReport,
    /// CSV lines skipped with `skip_bad` (missing files).
    pub skipped_lines: usize,
    /// The first few reasons for a skip.
    pub examples: Vec<String>,
}

impl PairReport {
    fn note(&mut self, why: String) {
        if self.examples.len() < 5 {
            self.examples.push(why);
        }
    }

    /// Every clip not used, for whatever reason.
    pub fn left_out(&self) -> usize {
        self.no_written_form
            + self.duplicates
            + self.too_short
            + self.audio.skipped
            + self.skipped_lines
    }
}

/// The recordings of one source, sorted by path.
pub fn list_source(
    src: &SpeechSource,
    index: usize,
    root: &Path,
    skip_bad: bool,
    report: &mut PairReport,
) -> Result<Vec<Listed>> {
    let name = src.name();
    let folder = |p: &Path| -> Result<PathBuf> {
        let dir = root.join(p);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::Data(format!(
                "[[data.sources]] {name}: {} is not a folder (fetch it with `cargo xtask fetch \
                 {name}`, or pass --data to the folder holding it)",
                dir.display()
            )))
        }
    };
    let mut out = Vec::new();
    match src {
        SpeechSource::Klettres { path } | SpeechSource::Ktuberling { path } => {
            let dir = folder(path)?;
            for file in list_audio(&dir).map_err(Error::from)? {
                let Ok(rel) = file.strip_prefix(&dir) else {
                    continue;
                };
                let Some(lang) = rel.components().next() else {
                    continue;
                };
                let lang = lang.as_os_str().to_string_lossy().into_owned();
                if rel.components().count() < 2 {
                    continue;
                }
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match written_form(&stem) {
                    Some(text) => out.push(Listed {
                        speaker: format!("{name}/{lang}"),
                        path: file,
                        text,
                        source: index,
                    }),
                    None => report.no_written_form += 1,
                }
            }
        }
        SpeechSource::Pairs { file, audio } => {
            let csv = root.join(file);
            let base = match audio {
                Some(a) => folder(a)?,
                None => csv
                    .parent()
                    .map_or_else(|| root.to_path_buf(), Path::to_path_buf),
            };
            let text = std::fs::read_to_string(&csv).map_err(|e| Error::io(&csv, e))?;
            out = parse_pairs_csv(&text, &csv, &base, index, skip_bad, report)?;
        }
    }
    if out.is_empty() {
        return Err(Error::Data(format!(
            "[[data.sources]] {name}: no recording with a written form under {} ({} named by \
             an index)",
            root.join(match src {
                SpeechSource::Klettres { path } | SpeechSource::Ktuberling { path } => path,
                SpeechSource::Pairs { file, .. } => file,
            })
            .display(),
            report.no_written_form
        )));
    }
    Ok(out)
}

/// `file,text,speaker` lines of `csv` (its text `content`), files inside
/// `base`.
pub fn parse_pairs_csv(
    content: &str,
    csv: &Path,
    base: &Path,
    index: usize,
    skip_bad: bool,
    report: &mut PairReport,
) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line == "file,text,speaker") {
            continue;
        }
        let at = |reason: String| format!("{}: line {}: {reason}", csv.display(), i + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [file, text, speaker] = fields.as_slice() else {
            return Err(Error::Data(at(format!(
                "expected `file,text,speaker`, got '{line}'"
            ))));
        };
        if text.is_empty() || speaker.is_empty() {
            return Err(Error::Data(at(format!(
                "'{file}' has no text or no speaker"
            ))));
        }
        let Some(path) = selfsup_core::inside::join_inside(base, file) else {
            return Err(Error::Data(at(format!(
                "'{file}' leaves the folder {} (absolute, or `..` past it): name files inside it",
                base.display()
            ))));
        };
        if !path.is_file() {
            let why = at(format!(
                "audio file {} does not exist (set [data] skip_bad = true to skip and count \
                 such pairs)",
                path.display()
            ));
            if skip_bad {
                report.skipped_lines += 1;
                report.note(why);
                continue;
            }
            return Err(Error::Data(why));
        }
        out.push(Listed {
            path,
            text: text.to_lowercase(),
            speaker: speaker.to_string(),
            source: index,
        });
    }
    Ok(out)
}

/// Keeps the first of byte-identical recordings (by path order), counting
/// the others.
pub fn drop_duplicates(listed: Vec<Listed>, report: &mut PairReport) -> Result<Vec<Listed>> {
    let mut seen: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut keep: Vec<Listed> = Vec::with_capacity(listed.len());
    let mut bytes_of: Vec<Vec<u8>> = Vec::new();
    for l in listed {
        let bytes = std::fs::read(&l.path).map_err(|e| Error::io(&l.path, e))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let key = (h.finish(), bytes.len() as u64);
        let earlier = seen.entry(key).or_default();
        if earlier.iter().any(|&k| bytes_of[k] == bytes) {
            report.duplicates += 1;
            report.note(format!(
                "{}: a copy of an earlier recording",
                l.path.display()
            ));
            continue;
        }
        earlier.push(keep.len());
        keep.push(l);
        // Only files sharing a hash are compared: keep the bytes of those.
        bytes_of.push(bytes);
    }
    Ok(keep)
}

/// One decoded pair.
#[derive(Debug, Clone)]
pub struct SpeechPair {
    pub path: PathBuf,
    /// 16 kHz mono samples (not normalised).
    pub samples: Vec<f32>,
    pub text: String,
    pub speaker: String,
    pub source: usize,
}

/// Reads every source: listing, written forms, duplicates, decoding, the
/// receptive field. `min_samples` is the audio tower's receptive field.
pub fn read_pairs(
    sources: &[SpeechSource],
    root: &Path,
    skip_bad: bool,
    limits: &ReadLimits,
    min_samples: usize,
) -> Result<(Vec<SpeechPair>, PairReport)> {
    let mut report = PairReport::default();
    let mut listed = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        listed.extend(list_source(s, i, root, skip_bad, &mut report)?);
        if listed.len() > MAX_CLIPS {
            return Err(Error::Data(format!(
                "more than {MAX_CLIPS} recordings in [data] sources: split the data into runs"
            )));
        }
    }
    let listed = drop_duplicates(listed, &mut report)?;
    let files: Vec<(PathBuf, Option<String>)> =
        listed.iter().map(|l| (l.path.clone(), None)).collect();
    let (clips, audio) = load_clips(&files, skip_bad, limits).map_err(|e| {
        Error::Data(format!(
            "{e} (fix or remove the file, or set [data] skip_bad = true to skip and count it)"
        ))
    })?;
    report.audio = audio;
    let by_path: HashMap<&Path, &Listed> = listed.iter().map(|l| (l.path.as_path(), l)).collect();
    let mut pairs = Vec::with_capacity(clips.len());
    for c in clips {
        let Some(l) = by_path.get(c.path.as_path()) else {
            continue;
        };
        if c.samples.len() < min_samples {
            let why = format!(
                "{}: {} samples at 16 kHz, shorter than the audio tower's receptive field of \
                 {min_samples} samples",
                c.path.display(),
                c.samples.len()
            );
            if !skip_bad {
                return Err(Error::Data(format!(
                    "{why} (remove the file, or set [data] skip_bad = true to skip and count it)"
                )));
            }
            report.too_short += 1;
            report.note(why);
            continue;
        }
        pairs.push(SpeechPair {
            path: c.path,
            samples: c.samples,
            text: l.text.clone(),
            speaker: l.speaker.clone(),
            source: l.source,
        });
    }
    Ok((pairs, report))
}

/// Indices of the training, validation and test pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerSplit {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
    pub validation_speakers: Vec<String>,
}

/// Test pairs: the speakers of `test_speakers` (each must have pairs);
/// validation: about `fraction` of the other speakers, whole (core's
/// `by_group`, seeded); training: the rest. `fraction = 0`: no validation.
pub fn split_by_speaker(
    speakers: &[String],
    test_speakers: &[String],
    fraction: f64,
    seed: u64,
) -> Result<SpeakerSplit> {
    let known: BTreeSet<&String> = speakers.iter().collect();
    for t in test_speakers {
        if !known.contains(t) {
            return Err(Error::Config(format!(
                "[data] test_speakers names '{t}', which has no pair; the speakers are: {}",
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let held: BTreeSet<&String> = test_speakers.iter().collect();
    let rest: Vec<usize> = (0..speakers.len())
        .filter(|&i| !held.contains(&speakers[i]))
        .collect();
    if rest.is_empty() {
        return Err(Error::Config(
            "[data] test_speakers holds every speaker: nothing is left to train on".into(),
        ));
    }
    let test: Vec<usize> = (0..speakers.len())
        .filter(|&i| held.contains(&speakers[i]))
        .collect();
    if fraction == 0.0 {
        return Ok(SpeakerSplit {
            train: rest,
            validation: Vec::new(),
            test,
            validation_speakers: Vec::new(),
        });
    }
    let groups: Vec<&String> = rest.iter().map(|&i| &speakers[i]).collect();
    let s = by_group(&groups, fraction, seed, "speaker")?;
    let validation: Vec<usize> = s.validation.iter().map(|&k| rest[k]).collect();
    let vs: BTreeSet<String> = validation.iter().map(|&i| speakers[i].clone()).collect();
    Ok(SpeakerSplit {
        train: s.train.iter().map(|&k| rest[k]).collect(),
        validation,
        test,
        validation_speakers: vs.into_iter().collect(),
    })
}

/// The first `max` samples of a clip, zero mean and unit variance (what
/// evaluation embeds).
pub fn eval_clip(samples: &[f32], max: usize) -> Vec<f32> {
    let mut c = samples[..samples.len().min(max)].to_vec();
    zero_mean_unit_var(&mut c);
    c
}

/// Distinct forms of `idx` in first-seen order and each pair's form index.
pub fn forms_of(pairs: &[SpeechPair], idx: &[usize]) -> (Vec<String>, Vec<i64>) {
    let mut forms: Vec<String> = Vec::new();
    let mut at: BTreeMap<&str, i64> = BTreeMap::new();
    let mut of = Vec::with_capacity(idx.len());
    for &i in idx {
        let t = pairs[i].text.as_str();
        let k = *at.entry(t).or_insert_with(|| {
            forms.push(t.to_string());
            forms.len() as i64 - 1
        });
        of.push(k);
    }
    (forms, of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_become_written_forms_and_indices_are_refused() {
        for (stem, want) in [
            ("A", Some("a")),
            ("ba", Some("ba")),
            ("egypt_camel", Some("egypt camel")),
            ("Frier-Tux", Some("frier tux")),
            ("01-az", Some("az")),
            ("naocare_za_sunce", Some("naocare za sunce")),
            ("a-0", None),
            ("ad-16", None),
            ("a1", None),
            ("", None),
            ("__", None),
        ] {
            assert_eq!(written_form(stem).as_deref(), want, "{stem}");
        }
    }

    fn write_wav(path: &Path, samples: usize, value: i16) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..samples {
            w.write_sample(((i % 50) as i16 - 25) * value).unwrap();
        }
        w.finalize().unwrap();
    }

    /// A KLettres-like folder: numbered names left out, a copy dropped, a
    /// short clip refused naming it (or skipped and counted).
    #[test]
    fn listing_drops_numbered_names_copies_and_short_clips() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("klettres");
        write_wav(&k.join("en/alpha/A.wav"), 2000, 10);
        write_wav(&k.join("en/syllab/ba.wav"), 2000, 20);
        write_wav(&k.join("cs/alpha/a-0.wav"), 2000, 30);
        write_wav(&k.join("de/alpha/A.wav"), 2000, 10); // same bytes as en/alpha/A
        write_wav(&k.join("de/alpha/B.wav"), 300, 40);
        let src = [SpeechSource::Klettres {
            path: "klettres".into(),
        }];
        let limits = ReadLimits::default();
        let err = read_pairs(&src, dir.path(), false, &limits, 400)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("B.wav") && err.contains("receptive field") && err.contains("skip_bad"),
            "{err}"
        );
        let (pairs, report) = read_pairs(&src, dir.path(), true, &limits, 400).unwrap();
        let got: Vec<(String, String)> = pairs
            .iter()
            .map(|p| (p.speaker.clone(), p.text.clone()))
            .collect();
        // Sorted by path, klettres/de/alpha/A comes first: its copy under en leaves.
        let want = [("klettres/de", "a"), ("klettres/en", "ba")]
            .map(|(s, t)| (s.to_string(), t.to_string()));
        assert_eq!(got, want);
        // The 300-sample clip is below the decoder's 400-sample floor.
        assert_eq!(
            (
                report.no_written_form,
                report.duplicates,
                report.audio.skipped
            ),
            (1, 1, 1)
        );
        assert_eq!(report.left_out(), 3);
        // A tower seeing 3000 samples: the 2000-sample clips are too short.
        std::fs::remove_file(k.join("de/alpha/B.wav")).unwrap();
        let err = read_pairs(&src, dir.path(), false, &limits, 3000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("A.wav") && err.contains("3000 samples"),
            "{err}"
        );
        let (pairs, report) = read_pairs(&src, dir.path(), true, &limits, 3000).unwrap();
        assert!(pairs.is_empty());
        assert_eq!(report.too_short, 2);
    }

    /// A pairs CSV naming a missing file: an error naming the CSV and its
    /// line, or a counted skip; a name leaving the folder is refused.
    #[test]
    fn a_pairs_csv_names_its_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        write_wav(&dir.path().join("clips/one.wav"), 1000, 10);
        let csv = dir.path().join("pairs.csv");
        let text = "file,text,speaker\nclips/one.wav,One,alice\nclips/two.wav,two,bob\n";
        let mut report = PairReport::default();
        let err = parse_pairs_csv(text, &csv, dir.path(), 0, false, &mut report)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pairs.csv: line 3")
                && err.contains("two.wav")
                && err.contains("skip_bad"),
            "{err}"
        );
        let got = parse_pairs_csv(text, &csv, dir.path(), 0, true, &mut report).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].text.as_str(), got[0].speaker.as_str()),
            ("one", "alice")
        );
        assert_eq!(report.skipped_lines, 1);
        let err = parse_pairs_csv("../x.wav,a,b\n", &csv, dir.path(), 0, true, &mut report)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("leaves the folder"),
            "{err}"
        );
        let err = parse_pairs_csv("x.wav,a\n", &csv, dir.path(), 0, true, &mut report)
            .unwrap_err()
            .to_string();
        assert!(err.contains("file,text,speaker"), "{err}");
    }

    #[test]
    fn test_speakers_are_held_out_whole_and_validation_comes_from_the_rest() {
        let speakers: Vec<String> = ["a", "a", "b", "c", "c", "d", "e", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = split_by_speaker(&speakers, &["c".into()], 0.3, 7).unwrap();
        assert_eq!(s.test, [3, 4]);
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.validation)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        assert!(!s.validation.is_empty());
        for &v in &s.validation {
            assert!(s.validation_speakers.contains(&speakers[v]));
            assert!(s.train.iter().all(|&t| speakers[t] != speakers[v]));
            assert_ne!(speakers[v], "c");
        }
        let none = split_by_speaker(&speakers, &["c".into()], 0.0, 7).unwrap();
        assert!(none.validation.is_empty());
        assert_eq!(none.train, [0, 1, 2, 5, 6, 7]);
        let err = split_by_speaker(&speakers, &["zz".into()], 0.3, 7)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'zz'") && err.contains("a, b, c, d, e"),
            "{err}"
        );
    }
}
