//! Vision's entry in the `selfsup` binary's registry: its method names, its
//! config parser ([`VisionPlan`]), and `eval` / `export` on one of its
//! checkpoints (the checkpoint carries its resolved config, so neither needs
//! a config file).
use crate::config::VisionRunConfig;
use crate::evaluate::{EvalData, Part};
use crate::finetune::{finetune, Row, Splits};
use crate::pretrain::pretrain;
use crate::vision_method::{build_method, export, VisionMethod};
use selfsup_core::checkpoint;
use selfsup_core::eval::result_file_name;
use selfsup_core::run::{Common, RunOptions};
use selfsup_core::workflow::{EvalRequest, Modality, Plan, Report};
use selfsup_core::{Error, Result};
use std::path::{Path, PathBuf};

/// The evaluations `selfsup eval` offers on a vision checkpoint: kNN and
/// the linear probe on the frozen encoder, fine-tuning end to end against
/// the same network from scratch, robustness of the frozen features to
/// corrupted test images ([`crate::robustness`]).
pub const EVALUATIONS: [&str; 4] = ["knn", "linear", "finetune", "robustness"];

/// The fine-tuning table `selfsup eval finetune` writes beside the checkpoint.
pub const FINETUNE_FILE: &str = "finetune.json";

/// Vision in the registry: the sixteen image methods.
pub struct VisionModality;

/// A parsed, checked vision run config, ready to pre-train.
pub struct VisionPlan {
    cfg: VisionRunConfig,
}

impl VisionPlan {
    /// A plan of `cfg` (checked again when it trains).
    pub fn new(cfg: VisionRunConfig) -> Self {
        Self { cfg }
    }

    /// The config, with any command-line overrides applied.
    pub fn config(&self) -> &VisionRunConfig {
        &self.cfg
    }
}

impl Plan for VisionPlan {
    fn common(&mut self) -> Common<'_> {
        self.cfg.run.common(&mut self.cfg.trainer)
    }

    fn to_toml(&self) -> String {
        self.cfg.to_toml()
    }

    /// Every rank trains its shard of each global batch.
    fn data_parallel(&self) -> bool {
        true
    }

    fn pretrain(&self, opts: RunOptions<'_>) -> Result<Box<dyn Report>> {
        Ok(Box::new(pretrain(&self.cfg, opts)?))
    }
}

impl Modality for VisionModality {
    fn name(&self) -> &'static str {
        "vision"
    }

    fn methods(&self) -> &'static [&'static str] {
        &crate::methods::NAMES
    }

    fn parse(&self, text: &str, origin: &Path) -> Result<Box<dyn Plan>> {
        Ok(Box::new(VisionPlan::new(VisionRunConfig::from_toml(
            text, origin,
        )?)))
    }

    fn evaluations(&self) -> &'static [&'static str] {
        &EVALUATIONS
    }

    /// kNN (`knn`) or linear-probe (`linear`) top-1 of the checkpoint's
    /// frozen encoder on the validation part of its training images and on
    /// the test split of its dataset, a line each (`--data` overrides the
    /// config's `[data] path`), with the config's `[eval]` settings;
    /// `finetune`: [`crate::finetune`] with `[eval.finetune]`, one line per
    /// fraction, the rows also written to `finetune.json` beside the
    /// checkpoint.
    fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Vec<String>> {
        if !EVALUATIONS.contains(&request.protocol) {
            return Err(Error::Config(format!(
                "no evaluation '{}' for vision checkpoints: give one of {}",
                request.protocol,
                EVALUATIONS.join(", ")
            )));
        }
        let cfg = stored_config(request.checkpoint, request.config_toml)?;
        let dir = dataset_folder(&cfg, request.data)?;
        let device = request.device.resolve()?;
        let method = restore(request.checkpoint, &cfg, device)?;
        if request.protocol == "finetune" {
            let out = result_file_name(FINETUNE_FILE, request.data);
            return finetune_report(
                request.checkpoint,
                &out,
                &cfg,
                method.as_ref(),
                &dir,
                device,
            );
        }
        if request.protocol == "robustness" {
            let ckpt = request.checkpoint;
            let out = result_file_name(crate::robustness::ROBUSTNESS_FILE, request.data);
            return crate::robustness::report(ckpt, &out, &cfg, method.as_ref(), &dir, device);
        }
        let data = EvalData::load(&cfg, &dir)?;
        let features = data.features(method.as_ref());
        let score = |part: Part| match request.protocol {
            "knn" => data.knn_on(part, &features, &cfg.eval.knn),
            _ => data.linear_on(part, &features, &cfg.eval.linear),
        };
        let (validation, test) = (score(Part::Validation)?, score(Part::Test)?);
        let name = match request.protocol {
            "knn" => "kNN top-1",
            _ => "linear probe top-1",
        };
        Ok(vec![
            format!(
                "{name} on the validation part ({} training images held out of the {} in the \
                 bank, [eval] validation_fraction {} split_seed {}): {:.2}%",
                data.validation.len(),
                data.train.len(),
                cfg.eval.validation_fraction,
                cfg.eval.split_seed,
                validation * 100.0
            ),
            format!(
                "{name} on the test split ({} images): {:.2}%",
                data.test.len(),
                test * 100.0
            ),
        ])
    }

    /// The checkpoint's encoder, rebuilt on the CPU, in the layout of a
    /// run's `export/` folder.
    fn export(&self, checkpoint: &Path, config_toml: &str, out: &Path) -> Result<String> {
        let cfg = stored_config(checkpoint, config_toml)?;
        let method = restore(checkpoint, &cfg, tch::Device::Cpu)?;
        export(
            &cfg,
            method.as_ref(),
            cfg.data.channels(),
            out,
            serde_json::json!({}),
        )?;
        Ok(format!("exported the encoder to {}", out.display()))
    }
}

/// Fine-tunes, writes `file` beside the checkpoint, and returns
/// the lines to print (progress goes to stderr as each model finishes).
fn finetune_report(
    checkpoint: &Path,
    file: &str,
    cfg: &VisionRunConfig,
    method: &dyn VisionMethod,
    dir: &Path,
    device: tch::Device,
) -> Result<Vec<String>> {
    let start = std::time::Instant::now();
    let splits = Splits::load(cfg, dir)?;
    let ft = &cfg.eval.finetune;
    let rows = finetune(cfg, method, &splits, device, &mut |l| eprintln!("{l}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "method": method.name(),
        "data": dir.display().to_string(),
        "train_images": splits.train.len(),
        "scored_on": splits.scored_on,
        format!("{}_images", splits.scored_on.as_str()): splits.test.len(),
        "settings": ft,
        "rows": rows,
        "seconds": seconds,
    });
    let out = selfsup_core::eval::write_beside(checkpoint, file, &json)?;
    let mut lines = vec![format!(
        "fine-tuning end to end vs the same network from scratch: {} steps of {} images, {} \
         top-1 on {} images, mean ± std over seeds",
        ft.steps,
        ft.batch_size,
        splits.scored_on.as_str(),
        splits.test.len()
    )];
    lines.extend(rows.iter().map(Row::line));
    lines.push(format!("wrote {} ({seconds:.0} s)", out.display()));
    Ok(lines)
}

/// The config a checkpoint carries, parsed and checked; errors name the
/// checkpoint.
fn stored_config(checkpoint: &Path, config_toml: &str) -> Result<VisionRunConfig> {
    let origin = PathBuf::from(format!("{} (its stored config)", checkpoint.display()));
    VisionRunConfig::from_toml(config_toml, &origin)
}

/// The method of `cfg` on `device` with the checkpoint's weights.
fn restore(
    checkpoint: &Path,
    cfg: &VisionRunConfig,
    device: tch::Device,
) -> Result<Box<dyn VisionMethod>> {
    let method = build_method(cfg, device, cfg.data.channels())?;
    checkpoint::restore_model(checkpoint, method.var_store(), method.name())?;
    Ok(method)
}

/// The dataset folder to evaluate on: `--data`, else the config's
/// `[data] path`; a missing one names `--data`.
fn dataset_folder(cfg: &VisionRunConfig, flag: Option<&Path>) -> Result<PathBuf> {
    let (dir, whence) =
        match (flag, &cfg.data.path) {
            (Some(d), _) => (d.to_path_buf(), "--data"),
            (None, Some(p)) => (p.clone(), "the checkpoint's [data] path"),
            (None, None) => return Err(Error::Config(
                "the checkpoint's config has no [data] path: give the dataset folder with --data \
                 DIR"
                .into(),
            )),
        };
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such dataset folder ({whence}); give the dataset folder with --data DIR",
            dir.display()
        )));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_core::device::DeviceChoice;

    #[test]
    fn methods_and_evaluations_are_listed() {
        let m = VisionModality;
        assert_eq!(m.name(), "vision");
        assert_eq!(m.methods().len(), 19);
        assert!(m.methods().contains(&"deepcluster") && m.methods().contains(&"dinov2"));
        assert!(m.methods().contains(&"barlow_twins"));
        assert_eq!(m.evaluations(), ["knn", "linear", "finetune", "robustness"]);
    }

    #[test]
    fn a_config_parses_into_a_data_parallel_plan_and_flags_override_it() {
        let text = "[method]\nname = \"byol\"\n[run]\nbatch_size = 64\n";
        let mut plan = VisionModality.parse(text, Path::new("b.toml")).unwrap();
        assert!(plan.data_parallel());
        selfsup_core::workflow::Overrides {
            epochs: Some(2),
            batch_size: Some(16),
            ..Default::default()
        }
        .apply(plan.common())
        .unwrap();
        let back = VisionRunConfig::from_toml(&plan.to_toml(), Path::new("back.toml")).unwrap();
        assert_eq!(
            (back.method.name(), back.run.batch_size, back.trainer.epochs),
            ("byol", 16, 2)
        );
        let err = VisionModality
            .parse(
                "[method]\nname = \"byol\"\n[run]\nbatch = 3\n",
                Path::new("c.toml"),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("batch"), "{err}");
    }

    #[test]
    fn a_missing_dataset_folder_names_the_flag() {
        let cfg = VisionRunConfig::default();
        let err = dataset_folder(&cfg, None).unwrap_err().to_string();
        assert!(err.contains("--data"), "{err}");
        let err = dataset_folder(&cfg, Some(Path::new("/no/such/fm")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/such/fm") && err.contains("--data"),
            "{err}"
        );
        let t = tempfile::tempdir().unwrap();
        assert_eq!(dataset_folder(&cfg, Some(t.path())).unwrap(), t.path());
    }

    #[test]
    fn stored_config_errors_name_the_checkpoint() {
        let err = stored_config(
            Path::new("run/checkpoint.safetensors"),
            "[run]\nthreads = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("run/checkpoint.safetensors") && err.contains("threads = 0"),
            "{err}"
        );
    }

    /// An unknown protocol is refused before the checkpoint is read, listing
    /// the offered ones.
    #[test]
    fn an_unknown_protocol_is_refused_listing_the_offered_ones() {
        let request = EvalRequest {
            protocol: "probe",
            checkpoint: Path::new("missing.safetensors"),
            config_toml: "",
            data: None,
            device: DeviceChoice::Cpu,
        };
        let err = VisionModality.evaluate(&request).unwrap_err().to_string();
        assert!(
            err.contains("'probe'") && err.contains("knn, linear, finetune"),
            "{err}"
        );
    }

    /// Writes an IDX pair (`{prefix}-images-idx3-ubyte`, `-labels-idx1-ubyte`)
    /// of 8x8 images into `dir`.
    fn write_idx(dir: &Path, prefix: &str, px: &[u8], labels: &[i64]) {
        let n = labels.len() as u32;
        let mut images = [0x0803u32, n, 8, 8]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        images.extend_from_slice(px);
        let mut lab = [0x0801u32, n]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        lab.extend(labels.iter().map(|&l| l as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }

    /// `selfsup eval finetune` on a tiny SimCLR checkpoint: one line per
    /// fraction and finetune.json beside the checkpoint with both arms of
    /// every seed; an unlabelled image folder is refused naming it.
    #[test]
    fn finetune_on_a_tiny_checkpoint_reports_and_writes_its_rows() {
        use selfsup_core::optim::{OptimConfig, Params};
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("fm");
        std::fs::create_dir(&data).unwrap();
        let (px, labels) = crate::finetune::tests::stripes(10, 1);
        write_idx(&data, "train", &px, &labels);
        let (px, labels) = crate::finetune::tests::stripes(4, 2);
        write_idx(&data, "t10k", &px, &labels);
        let cfg = crate::finetune::tests::tiny_config();
        let method = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
        let opt = OptimConfig::default().build(&Params::of(method.var_store()));
        let ckpt = t.path().join("run").join("checkpoint.safetensors");
        std::fs::create_dir(t.path().join("run")).unwrap();
        let meta = checkpoint::CheckpointMeta {
            step: 1,
            steps_per_epoch: 1,
            seed: 0,
            method: "simclr".into(),
            config: cfg.to_toml(),
            git_commit: None,
            loss: 0.0,
            samples_per_step: 8,
        };
        checkpoint::save(&ckpt, method.var_store(), opt.as_ref(), &meta).unwrap();
        let request = EvalRequest {
            protocol: "finetune",
            checkpoint: &ckpt,
            config_toml: &meta.config,
            data: Some(&data),
            device: DeviceChoice::Cpu,
        };
        let lines = VisionModality.evaluate(&request).unwrap();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].contains("8 steps of 8 images"), "{}", lines[0]);
        assert!(
            lines[1].starts_with("fine-tuning on 20% of the labels (6 images, 2 seeds)"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("fine-tuning on 100% of the labels (30 images, 2 seeds)"),
            "{}",
            lines[2]
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                t.path()
                    .join("run")
                    .join(result_file_name(FINETUNE_FILE, Some(&data))),
            )
            .unwrap(),
        )
        .unwrap();
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["fraction"], 0.2);
        assert_eq!(rows[1]["scratch"].as_array().unwrap().len(), 2);
        assert_eq!(json["settings"]["steps"], 8);
        assert_eq!(json["test_images"], 12);

        // Scored on the validation part: a tenth of each class (1 of 10)
        // held out of the 30 training images, the subsets drawn from the
        // other 27, the test split unread.
        let mut on_validation = cfg.clone();
        on_validation.eval.finetune.scored_on = selfsup_core::eval::finetune::ScoredOn::Validation;
        let toml = on_validation.to_toml();
        let lines = VisionModality
            .evaluate(&EvalRequest {
                config_toml: &toml,
                ..request
            })
            .unwrap();
        assert!(
            lines[0].contains("validation top-1 on 3 images"),
            "{}",
            lines[0]
        );
        assert!(lines[2].contains("(27 images, 2 seeds)"), "{}", lines[2]);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                t.path()
                    .join("run")
                    .join(result_file_name(FINETUNE_FILE, Some(&data))),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                &json["scored_on"],
                &json["validation_images"],
                &json["train_images"]
            ),
            (
                &serde_json::json!("validation"),
                &serde_json::json!(3),
                &serde_json::json!(27)
            )
        );
        assert!(json.get("test_images").is_none());

        // An unlabelled image folder: the error names it and what is needed.
        let folder = t.path().join("unlabelled");
        std::fs::create_dir(&folder).unwrap();
        for i in 0..3 {
            image::GrayImage::from_pixel(8, 8, image::Luma([i * 60]))
                .save(folder.join(format!("{i}.png")))
                .unwrap();
        }
        let mut folder_cfg = cfg.clone();
        folder_cfg.data.format = crate::config::DataFormat::ImageFolder;
        folder_cfg.data.image_size = Some(8);
        folder_cfg.data.channels = Some(1);
        folder_cfg.data.cache_dir = Some(t.path().join("cache"));
        let err = crate::finetune::Splits::load(&folder_cfg, &folder)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unlabelled") && err.contains("fine-tuning needs labels"),
            "{err}"
        );
    }

    /// `selfsup eval knn|linear`: a line for the validation part and one
    /// for the test split, the validation part's size, fraction and seed
    /// named; a split seed of the stored config picks another part.
    #[test]
    fn knn_and_linear_report_the_validation_part_and_the_test_split() {
        use selfsup_core::optim::{OptimConfig, Params};
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("fm");
        std::fs::create_dir(&data).unwrap();
        let (px, labels) = crate::finetune::tests::stripes(10, 1);
        write_idx(&data, "train", &px, &labels);
        let (px, labels) = crate::finetune::tests::stripes(4, 2);
        write_idx(&data, "t10k", &px, &labels);
        let mut cfg = crate::finetune::tests::tiny_config();
        cfg.eval.validation_fraction = 0.2;
        cfg.eval.linear.epochs = 5;
        let method = build_method(&cfg, tch::Device::Cpu, 1).unwrap();
        let opt = OptimConfig::default().build(&Params::of(method.var_store()));
        let ckpt = t.path().join("checkpoint.safetensors");
        let meta = checkpoint::CheckpointMeta {
            step: 1,
            steps_per_epoch: 1,
            seed: 0,
            method: "simclr".into(),
            config: cfg.to_toml(),
            git_commit: None,
            loss: 0.0,
            samples_per_step: 8,
        };
        checkpoint::save(&ckpt, method.var_store(), opt.as_ref(), &meta).unwrap();
        let percent = |line: &str| -> f64 {
            let tail = line.rsplit(": ").next().unwrap();
            tail.trim_end_matches('%').parse().unwrap()
        };
        for (protocol, name) in [("knn", "kNN top-1"), ("linear", "linear probe top-1")] {
            let request = EvalRequest {
                protocol,
                checkpoint: &ckpt,
                config_toml: &meta.config,
                data: Some(&data),
                device: DeviceChoice::Cpu,
            };
            let lines = VisionModality.evaluate(&request).unwrap();
            assert_eq!(lines.len(), 2, "{lines:?}");
            // 20 % of each class's 10 training images: 6 held out, 24 in the bank.
            assert!(
                lines[0].starts_with(&format!(
                    "{name} on the validation part (6 training images held out of the 24 in \
                     the bank, [eval] validation_fraction 0.2 split_seed 0): "
                )),
                "{}",
                lines[0]
            );
            assert!(
                lines[1].starts_with(&format!("{name} on the test split (12 images): ")),
                "{}",
                lines[1]
            );
            // The figures are the parts' own: 6 validation images score in
            // sixths, 12 test images in twelfths.
            let (v, s) = (percent(&lines[0]), percent(&lines[1]));
            assert!(
                (v * 6.0 / 100.0 - (v * 6.0 / 100.0).round()).abs() < 1e-3,
                "{v}"
            );
            assert!(
                (s * 12.0 / 100.0 - (s * 12.0 / 100.0).round()).abs() < 1e-3,
                "{s}"
            );
        }
        // The stored split seed is read: another seed holds other images out.
        let mut other = cfg.clone();
        other.eval.split_seed = 9;
        let a = EvalData::load(&cfg, &data).unwrap();
        let b = EvalData::load(&other, &data).unwrap();
        assert_eq!(a.validation.len(), b.validation.len());
        assert_ne!(a.validation_indices, b.validation_indices);
    }
}
