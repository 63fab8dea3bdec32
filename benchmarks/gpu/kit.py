#!/usr/bin/env python3
"""The GPU kit's checks, run by run.sh (which sets LD_LIBRARY_PATH first):

    python3 kit.py OUT_DIR [--device cuda|cpu] [--tiny] [--budget SECONDS] [--keep-weights] [--pack]

a. every modality trains on the device: SimCLR, BYOL, DINO (multi-crop), MAE,
   MLM, wav2vec 2.0, GRACE, DGI, CLIP, each a kit config (configs/kit/: a
   preset `include`d and shortened); a row per run: the device summary.json
   says was used (a CPU run when cuda was asked is a FAIL), first / last loss
   (mean of the first / last quarter of the steps: it must fall), non-finite
   steps, steps/s, wall time, GPU busy % and memory (nvidia-smi samples);
   then exports loaded back by PyTorch: the SimCLR ResNet-18 by torchvision
   (kNN top-1 reproduced), the MLM BERT by transformers' BertForMaskedLM, the
   CLIP text tower by transformers' BertModel (`selfsup embed --texts`
   reproduced).
b. throughput, same device, same call: SimCLR ResNet-18 batch 512 bf16:
   selfsup vs simclr_peer.py eager vs simclr_peer.py with torch.compile
   (images/s, GPU busy %, peak GPU memory, process CPU cores); MLM BERT-small
   batch 64 x 128: selfsup vs mlm_peer.py (transformers), tokens/s.
c. time to accuracy: configs/kit/tta.toml (the SimCLR gpu preset, all
   images, kNN k=200 every epoch) until kNN top-1 >= 92 % or the time left.

--tiny: every step in a tiny form (small models, a few steps) so the whole
kit runs on a 2-core CPU in minutes. Every step is time-boxed; a failing step
is a FAIL row with its stderr tail, and the kit goes on. results.json and
results.md are rewritten after every step, so a cut-off run still reports.
Exit status 0 when every row is ok, 1 otherwise.
"""
import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

KIT = Path(__file__).resolve().parent
TTA_TARGET = 0.92


def tail(text, n=1500):
    return text[-n:] if text else ""


class GpuSampler:
    """nvidia-smi utilization.gpu and memory.used every 0.5 s while open."""

    def __init__(self, enabled):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples = []  # (unix time, busy %, memory used MiB)
        self.proc = None

    def __enter__(self):
        if self.enabled:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "500", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.time(), float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return False

    def figures(self, window=None):
        """Mean busy % over `window` (unix start, end: the training steps)
        when it holds samples, else over the whole process; peak memory.used."""
        if not self.samples:
            return {}
        inside = [s for s in self.samples if window and window[0] <= s[0] <= window[1]]
        busy = inside or self.samples
        return {
            "gpu_busy_pct": round(statistics.mean(s[1] for s in busy), 1),
            "gpu_busy_over": "training steps" if inside else "whole process",
            "gpu_mem_used_peak_mb": max(s[2] for s in self.samples),
        }


class Kit:
    def __init__(self, a):
        self.out = Path(a.out).resolve()
        self.device = a.device
        self.tiny = a.tiny
        self.only = [p for p in getattr(a, "only", "").split(",") if p]
        self.cuda = a.device.startswith("cuda")
        self.python = sys.executable
        self.bin = str(KIT / "selfsup")
        self.start = time.monotonic()
        self.deadline = self.start + a.budget
        self.rows = []
        self.machine = {}
        self.threads = max(1, min(os.cpu_count() or 2, 2)) if not self.cuda else None
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "runs").mkdir(parents=True, exist_ok=True)

    def left(self):
        return self.deadline - time.monotonic()

    # ---- results ----
    def add(self, row):
        self.rows.append(row)
        self.write()
        shown = {k: v for k, v in row.items() if k not in ("stderr_tail", "curve")}
        print(f"[kit] {row['status']:4} {row['name']}: {json.dumps(shown)[:400]}", flush=True)

    def write(self):
        doc = {
            "device_requested": self.device,
            "tiny": self.tiny,
            "only": self.only or "every step",
            "machine": self.machine,
            "elapsed_s": round(time.monotonic() - self.start, 1),
            "all_ok": all(r["status"] == "ok" for r in self.rows),
            "rows": self.rows,
        }
        (self.out / "results.json").write_text(json.dumps(doc, indent=1))
        (self.out / "results.md").write_text(markdown(doc))

    # ---- processes ----
    def run(self, name, argv, timeout, env=None, cwd=None, watch=None):
        """Runs argv time-boxed; (rc, stdout, stderr, wall, cpu_cores, timed_out).
        `watch(proc)` is polled every second and may return True to stop it."""
        timeout = max(1.0, min(timeout, self.left()))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out_path, err_path = self.out / "logs" / f"{name}.out", self.out / "logs" / f"{name}.err"
        t0 = time.monotonic()
        timed_out = False
        with open(out_path, "w") as fo, open(err_path, "w") as fe:
            proc = subprocess.Popen(argv, stdout=fo, stderr=fe, env=env, cwd=cwd)
            while True:
                try:
                    proc.wait(1.0)
                    break
                except subprocess.TimeoutExpired:
                    timed_out = time.monotonic() - t0 > timeout
                    if not timed_out and (watch is None or not watch(proc)):
                        continue
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return (proc.returncode, out_path.read_text(errors="replace"),
                err_path.read_text(errors="replace"), wall, cpu / max(wall, 1e-9), timed_out)

    def guarded(self, name, group, fn):
        """Runs one step; any exception is a FAIL row with its message. A
        step that --only leaves out is not run and gets no row."""
        if self.only and not any(name.startswith(p) for p in self.only):
            return None
        if self.left() < 5:
            self.add({"name": name, "group": group, "status": "FAIL",
                      "error": "the kit's time budget was spent before this step"})
            return None
        try:
            row = fn()
        except Exception as e:  # one step's failure must not stop the kit
            row = {"status": "FAIL", "error": f"{type(e).__name__}: {e}"}
        row = {"name": name, "group": group, **row}
        self.add(row)
        return row

    # ---- selfsup runs ----
    def pretrain(self, name, config, data, sets, timeout, watch=None):
        run_dir = self.out / "runs" / name
        argv = [self.bin, "pretrain", "--config", str(KIT / "configs/kit" / config),
                "--data", str(KIT / data), "--run-dir", str(run_dir), "--device", self.device,
                "--overwrite"]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        for s in sets:
            argv += ["--set", s]
        metrics = run_dir / "metrics.jsonl"
        seen = {"steps": 0, "first": None, "last": None}

        def tracking(proc):
            # When steps are being logged: the window GPU busy % is averaged over.
            if metrics.is_file():
                n = metrics.read_text(errors="replace").count('"kind":"step"')
                if n > seen["steps"]:
                    now = time.time()
                    seen["first"] = seen["first"] or now - 1.0
                    seen["last"], seen["steps"] = now, n
            return watch(proc) if watch else False

        with GpuSampler(self.cuda) as gpu:
            rc, out, err, wall, cores, timed_out = self.run(name, argv, timeout, watch=tracking)
        window = (seen["first"], seen["last"]) if seen["first"] else None
        return run_dir, rc, out, err, wall, cores, timed_out, gpu.figures(window)

    def train_row(self, name, config, data, sets, timeout):
        run_dir, rc, out, err, wall, cores, timed_out, gpu = self.pretrain(name, config, data, sets, timeout)
        row = {"wall_s": round(wall, 1), "cpu_cores": round(cores, 2), **gpu}
        if rc != 0 or timed_out:
            why = f"timed out after {wall:.0f} s" if timed_out else f"selfsup exited with {rc}"
            return {**row, "status": "FAIL", "error": why, "stderr_tail": tail(err)}
        summary = json.loads((run_dir / "summary.json").read_text())
        losses, epochs = read_metrics(run_dir / "metrics.jsonl")
        device = str(summary.get("device", "?"))
        steps = summary.get("steps") or len(losses)
        train_s = summary.get("train_seconds")
        finite = [v for v in losses if v is not None and math.isfinite(v)]
        w = max(1, len(finite) // 4)
        first = statistics.mean(finite[:w]) if finite else None
        last = statistics.mean(finite[-w:]) if finite else None
        row.update({
            "device_used": device,
            "steps": steps,
            "first_loss": first,
            "last_loss": last,
            "non_finite_steps": len(losses) - len(finite),
            "steps_per_s": round(steps / train_s, 2) if train_s else round(steps / wall, 2),
            "last_epoch_samples_per_s": epochs[-1].get("samples_per_s") if epochs else None,
        })
        problems = []
        if self.cuda and not device.startswith("cuda"):
            problems.append(f"asked for {self.device}, ran on {device} (silent fallback)")
        if not finite:
            problems.append("no finite step loss in metrics.jsonl")
        elif not last < first:
            problems.append(f"loss did not fall: first {first:.4f}, last {last:.4f}")
        if row["non_finite_steps"]:
            problems.append(f"{row['non_finite_steps']} non-finite steps")
        row["status"] = "FAIL" if problems else "ok"
        if problems:
            row["error"] = "; ".join(problems)
        return row

    def python_row(self, name, argv, timeout, gpu_sample=False):
        """Runs a Python script whose last stdout line is JSON."""
        with GpuSampler(self.cuda and gpu_sample) as gpu:
            rc, out, err, wall, cores, timed_out = self.run(name, [self.python] + argv, timeout)
        lines = [l for l in out.splitlines() if l.strip().startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
        window = (result.get("timed_start_unix"), result.get("timed_end_unix"))
        row = {"wall_s": round(wall, 1), "cpu_cores": round(cores, 2),
               **gpu.figures(window if all(window) else None), **result}
        if rc != 0 or timed_out or not lines:
            why = f"timed out after {wall:.0f} s" if timed_out else f"exit {rc}"
            return {**row, "status": "FAIL", "error": why, "stderr_tail": tail(err or out)}
        row["status"] = "ok" if row.get("ok", True) else "FAIL"
        return row


def read_metrics(path):
    losses, epochs = [], []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "step":
            v = r.get("loss")
            losses.append(float(v) if isinstance(v, (int, float)) else None)
        elif r.get("kind") == "epoch":
            epochs.append(r)
    return losses, epochs


def knn_of(epoch):
    for name, value in epoch.get("metrics", []):
        if name in ("kNN top-1 (validation)", "kNN top-1"):
            return value
    return None


# ---- the steps ----
VISION = ["simclr", "byol", "dino", "mae"]


def tiny_sets(kind):
    """--set overrides of the tiny (CPU) form of each kit run."""
    common = ["trainer.mixed_precision=false"]
    if kind in ("simclr", "byol", "dino"):
        heads = {
            "simclr": 'method.head={hidden_dim=32,out_dim=16,layers=2,batch_norm=true}',
            "byol": 'method.projector={hidden_dim=32,out_dim=16,layers=2,batch_norm=true}',
            "dino": 'method.head={layers=2,hidden_dim=32,bottleneck_dim=16,out_dim=64,batch_norm=true}',
        }
        extra = ['method.predictor={hidden_dim=32,out_dim=16,layers=2,batch_norm=true}'] if kind == "byol" else []
        lr = {"simclr": "trainer.optimizer.lr=0.3", "byol": "trainer.optimizer.lr=0.5",
              "dino": "trainer.optimizer.lr=0.1"}[kind]
        return common + ['model={arch="small_cnn",channels=[8,16]}', "run.batch_size=32",
                         "data.train_images=512", "trainer.epochs=1", "eval.monitor_images=64",
                         "trainer.schedule.warmup_epochs=0.0", heads[kind], lr] + extra
    if kind == "mae":
        return common + ["model.embed_dim=32", "model.depth=1", "model.heads=2", "method.decoder_embed_dim=16",
                         "method.decoder_depth=1", "method.decoder_heads=2", "run.batch_size=32",
                         "data.train_images=512", "trainer.epochs=3", "eval.monitor_images=64",
                         "trainer.schedule.warmup_epochs=0.0", "trainer.optimizer.lr=0.03"]
    if kind == "mlm":
        return common + ['model={size="tiny",layers=1,hidden=32,heads=2,intermediate=64,max_len=32}',
                         "tokenizer.vocab_size=600", "run.batch_size=16", "data.max_train_sequences=320",
                         "trainer.epochs=1", "eval.val_sequences=32", "eval.monitor_sequences=16",
                         "trainer.optimizer.lr=0.003", "trainer.schedule.warmup_epochs=0.0",
                         "eval.probe.epochs=5", "eval.downstream=[]"]
    if kind == "wav2vec2":
        return common + ["model.conv_dim=[16,16,16,16,16,16,16]", "model.hidden_size=32",
                         "model.num_hidden_layers=1", "model.num_attention_heads=2",
                         "model.intermediate_size=64", "model.num_conv_pos_embeddings=8",
                         "model.num_conv_pos_embedding_groups=2", "model.num_codevectors_per_group=8",
                         "model.codevector_dim=16", "model.proj_codevector_dim=16", "model.num_negatives=5",
                         "run.batch_size=8", "data.crop_seconds=0.5", "data.monitor_clips=8",
                         "trainer.epochs=1", "trainer.schedule.warmup_epochs=0.0", "eval.probe.epochs=5",
                         "eval.max_seconds=1.0"]
    if kind in ("grace", "dgi"):
        return common + ["run.steps_per_epoch=10", "trainer.epochs=2", "eval.splits=2", "eval.epoch_splits=1"]
    if kind == "clip":
        return common + [
            'model.vision={arch="small_cnn",channels=[8,16]}',
            'model.text={size="tiny",layers=1,hidden=32,heads=2,intermediate=64,max_len=12,max_position=16,dropout=0.0}',
            "model.embed_dim=16", "data.image_size=16", "run.batch_size=32", "tokenizer.vocab_size=400",
            'data.sources=[{format="emoji",path="emoji-google"},{format="fashion-mnist",path="fashion-mnist-tiny",'
            'train_images=256,test_images=128,captions=["a photo of a {}","a {}"]}]',
            "trainer.epochs=2", "trainer.schedule.warmup_epochs=0.0", "trainer.optimizer.lr=0.003",
            "eval.monitor_pairs=32", "eval.seen_images=64",
        ]
    raise ValueError(kind)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep the runs' checkpoints and exports (*.safetensors); by default they "
                        "are removed at the end so OUT_DIR stays small enough to copy back")
    p.add_argument("--pack", action="store_true",
                   help="at the end, pack logs/ and runs/ into OUT_DIR/details.tar.gz (few files to copy back)")
    p.add_argument("--only", default="",
                   help="comma-separated step names or prefixes to run (e.g. train-,export-torchvision); "
                        "default: every step")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole kit (default 540 on cuda, 900 with --tiny)")
    a = p.parse_args()
    if a.budget is None:
        a.budget = 900.0 if a.tiny else 540.0
    kit = Kit(a)
    tiny = a.tiny
    fm = "data/fashion-mnist-tiny" if tiny else "data/fashion-mnist"
    kit.machine = machine_info(kit)
    kit.write()

    # a. every modality on the device, then the exports.
    step_timeout = 150 if tiny else 90
    data_of = {"mlm": "data/text", "wav2vec2": "data", "grace": "data", "dgi": "data", "clip": "data"}
    for kind in VISION + ["mlm", "wav2vec2", "grace", "dgi", "clip"]:
        sets = tiny_sets(kind) if tiny else []
        # wav2vec 2.0: on an H200, 7 s of training and ~70 s of evaluation
        # (per-epoch monitors, a probe of every layer).
        limit = step_timeout + (60 if kind == "wav2vec2" else 0)
        kit.guarded(f"train-{kind}", "a", lambda k=kind, s=sets, t=limit: kit.train_row(
            f"train-{k}", f"{k}.toml", data_of.get(k, fm), s, t))

    runs = kit.out / "runs"
    dev = ["--device", "cuda" if kit.cuda else "cpu"]
    kit.guarded("export-torchvision", "a", lambda: kit.python_row(
        "export-torchvision", [str(KIT / "export_checks.py"), "vision", str(runs / "train-simclr"),
                               str(KIT / fm)] + dev + ([] if tiny else ["--tolerance", "0.01"]), 120))
    kit.guarded("export-transformers-mlm", "a", lambda: kit.python_row(
        "export-transformers-mlm", [str(KIT / "export_checks.py"), "mlm", str(runs / "train-mlm"),
                                    str(sorted((KIT / "data/text/sotu").glob("*.txt"))[-1])] + dev, 120))
    kit.guarded("export-transformers-clip-bert", "a", lambda: clip_text_check(kit))

    # b. throughput beside the PyTorch peers.
    simclr_row = next((r for r in kit.rows if r["name"] == "train-simclr"), {})
    kit.guarded("throughput-simclr-selfsup", "b", lambda: {
        "status": simclr_row.get("status", "FAIL"),
        "error": simclr_row.get("error"),
        "images_per_s": simclr_row.get("last_epoch_samples_per_s"),
        "gpu_busy_pct": simclr_row.get("gpu_busy_pct"),
        "gpu_mem_used_peak_mb": simclr_row.get("gpu_mem_used_peak_mb"),
        "cpu_cores": simclr_row.get("cpu_cores"),
        "note": "the train-simclr run" + (" (tiny)" if tiny else " (batch 512, bf16, ResNet-18 CIFAR stem)")
                + ": its last epoch's images/s",
    })
    if tiny:
        peer = ["--batch-size", "8", "--steps", "2", "--warmup", "1", "--workers", "1",
                "--train-images", "64", "--threads", "2", "--device", "cpu"]
    else:
        peer = ["--batch-size", "512", "--steps", "150", "--warmup", "10",
                "--workers", str(min(8, max(1, (os.cpu_count() or 2) - 2))), "--device", "cuda"]
    peer_script = [str(KIT / "simclr_peer.py"), "--data", str(KIT / fm)]
    kit.guarded("throughput-simclr-torch-eager", "b", lambda: kit.python_row(
        "throughput-simclr-torch-eager", peer_script + peer, 150, gpu_sample=True))
    backend = ["--compile-backend", "aot_eager"] if tiny else []
    kit.guarded("throughput-simclr-torch-compile", "b", lambda: kit.python_row(
        "throughput-simclr-torch-compile", peer_script + peer + ["--compile"] + backend, 240, gpu_sample=True))

    mlm_sets = (tiny_sets("mlm") if tiny else ["run.batch_size=64", "trainer.epochs=1", "eval.downstream=[]",
                                                 "eval.val_sequences=64", "eval.monitor_sequences=64"])
    mlm_row = kit.guarded("throughput-mlm-selfsup", "b", lambda: mlm_throughput(kit, mlm_sets))
    vocab = str((mlm_row or {}).get("vocab_size") or 16384)
    if tiny:
        mlm_peer = ["--layers", "1", "--hidden", "32", "--heads", "2", "--intermediate", "64",
                    "--max-len", "32", "--batch-size", "16", "--steps", "2", "--warmup", "1",
                    "--threads", "2", "--device", "cpu"]
    else:
        mlm_peer = ["--layers", "4", "--hidden", "512", "--heads", "8", "--intermediate", "2048",
                    "--max-len", "128", "--batch-size", "64", "--steps", "300", "--warmup", "10", "--device", "cuda"]
    kit.guarded("throughput-mlm-transformers", "b", lambda: kit.python_row(
        "throughput-mlm-transformers", [str(KIT / "mlm_peer.py"), "--vocab-size", vocab] + mlm_peer, 150,
        gpu_sample=True))

    # c. time to accuracy with whatever time is left (at most 6 minutes).
    tta_sets = tiny_sets("simclr") + ["trainer.epochs=2", "eval.knn_every_epoch=true"] if tiny else []
    kit.guarded("time-to-accuracy", "c", lambda: time_to_accuracy(kit, fm, tta_sets))

    if not a.keep_weights:
        for f in (kit.out / "runs").rglob("*.safetensors"):
            f.unlink()
    kit.write()
    if a.pack:
        with tarfile.open(kit.out / "details.tar.gz", "w:gz") as tar:
            for d in ("logs", "runs"):
                tar.add(kit.out / d, arcname=d)
        for d in ("logs", "runs"):
            shutil.rmtree(kit.out / d)
    print(f"[kit] results: {kit.out / 'results.md'}")
    sys.exit(0 if all(r["status"] == "ok" for r in kit.rows) else 1)


def machine_info(kit):
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            # torch.compile's inductor builds Triton launchers with a C compiler.
            "c_compiler": shutil.which("cc") or shutil.which("gcc") or "none"}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda_available"] = torch.cuda.is_available()
    except ImportError as e:
        info["torch"] = f"missing: {e}"
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["gpu"] = q.stdout.strip()
        full = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        (kit.out / "logs/nvidia-smi.txt").write_text(full.stdout + full.stderr)
        print(full.stdout, flush=True)
    else:
        info["gpu"] = "no nvidia-smi"
    return info


def clip_text_check(kit):
    """`selfsup embed --texts` on the CLIP export, reproduced by transformers' BertModel."""
    export = kit.out / "runs/train-clip/export"
    texts = kit.out / "logs/clip-texts.txt"
    texts.write_text("\n".join(["a photo of a sneaker", "an emoji of a red heart", "a black and white photo of a bag",
                                "grinning face", "a trouser"]) + "\n")
    emb = kit.out / "logs/clip-text-embeddings.jsonl"
    argv = [kit.bin, "embed", "--checkpoint", str(export), "--texts", str(texts), "--out", str(emb),
            "--device", "cuda" if kit.cuda else "cpu"]
    rc, out, err, wall, _, timed_out = kit.run("clip-embed", argv, 60)
    if rc != 0 or timed_out:
        return {"status": "FAIL", "error": f"selfsup embed exited with {rc}", "stderr_tail": tail(err)}
    return kit.python_row("export-transformers-clip-bert",
                          [str(KIT / "check_hf_clip_export.py"), str(export), "--texts", str(texts),
                           "--text-embeddings", str(emb)], 120)


def mlm_throughput(kit, sets):
    name = "throughput-mlm-selfsup"
    run_dir, rc, out, err, wall, cores, timed_out, gpu = kit.pretrain(name, "mlm.toml", "data/text", sets, 150)
    if rc != 0 or timed_out:
        return {"status": "FAIL", "error": f"exit {rc}, timed out {timed_out}", "stderr_tail": tail(err)}
    s = json.loads((run_dir / "summary.json").read_text())
    ok = (not kit.cuda) or str(s.get("device", "")).startswith("cuda")
    return {
        "status": "ok" if ok else "FAIL",
        "error": None if ok else f"ran on {s.get('device')}",
        "device_used": s.get("device"),
        "tokens_per_s": s.get("train_tokens_per_s"),
        "batch_size": s.get("batch_size"),
        "max_len": s.get("max_len"),
        "vocab_size": s.get("vocab_size"),
        "wall_s": round(wall, 1),
        "cpu_cores": round(cores, 2),
        **gpu,
    }


def time_to_accuracy(kit, fm, sets):
    name = "time-to-accuracy"
    metrics = kit.out / "runs" / name / "metrics.jsonl"
    t0 = time.monotonic()
    curve = []

    def watch(_proc):
        if metrics.is_file():
            _, epochs = read_metrics(metrics)
            for e in epochs[len(curve):]:
                curve.append({"epoch": e.get("epoch"), "minutes": round((time.monotonic() - t0) / 60, 2),
                              "knn_top1": knn_of(e)})
        return any((c["knn_top1"] or 0) >= TTA_TARGET for c in curve)

    limit = min(360.0, kit.left() - 5)
    run_dir, rc, out, err, wall, cores, timed_out, gpu = kit.pretrain(name, "tta.toml", fm, sets, limit, watch=watch)
    watch(None)
    reached = next((c for c in curve if (c["knn_top1"] or 0) >= TTA_TARGET), None)
    row = {
        "target_knn_top1": TTA_TARGET,
        "reached": reached is not None,
        "minutes_to_target": reached["minutes"] if reached else None,
        "best_knn_top1": max((c["knn_top1"] or 0 for c in curve), default=None),
        "epochs_done": len(curve),
        "limit_minutes": round(limit / 60, 2),
        "wall_s": round(wall, 1),
        "curve": curve,
        **gpu,
    }
    # Stopped by the target or the limit is expected; no epoch at all is not.
    if not curve:
        return {**row, "status": "FAIL", "error": f"no epoch finished (exit {rc})", "stderr_tail": tail(err)}
    if rc not in (0, None) and not (timed_out or reached):
        return {**row, "status": "FAIL", "error": f"selfsup exited with {rc}", "stderr_tail": tail(err)}
    return {**row, "status": "ok"}


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(doc):
    lines = [f"# GPU kit results ({doc['device_requested']}{', tiny' if doc['tiny'] else ''})", "",
             f"machine: {json.dumps(doc['machine'])}", f"elapsed: {doc['elapsed_s']} s, all ok: {doc['all_ok']}", ""]
    groups = {
        "a": ("a. every modality on the device, exports loaded back",
              ["status", "device_used", "steps", "first_loss", "last_loss", "non_finite_steps", "steps_per_s",
               "wall_s", "gpu_busy_pct", "gpu_mem_used_peak_mb", "torch_knn_top1", "selfsup_knn_top1",
               "torch_masked_accuracy", "selfsup_val_accuracy", "text_min_cosine", "error"]),
        "b": ("b. throughput, same device",
              ["status", "images_per_s", "tokens_per_s", "gpu_busy_pct", "peak_gpu_mb", "gpu_mem_used_peak_mb",
               "cpu_cores", "compile_seconds", "wall_s", "error"]),
        "c": ("c. time to accuracy (kNN k=200)",
              ["status", "reached", "minutes_to_target", "best_knn_top1", "epochs_done", "limit_minutes", "error"]),
    }
    for g, (title, cols) in groups.items():
        rows = [r for r in doc["rows"] if r.get("group") == g]
        if not rows:
            continue
        lines += [f"## {title}", "", "| step | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join(fmt(r.get(c)).replace("|", "/") for c in cols) + " |")
        lines.append("")
    for r in doc["rows"]:
        if r.get("curve"):
            lines += ["kNN curve: " + ", ".join(f"e{c['epoch']} {c['minutes']} min {fmt(c['knn_top1'])}"
                                                  for c in r["curve"]), ""]
        if r["status"] != "ok" and r.get("stderr_tail"):
            lines += [f"### {r['name']} stderr (tail)", "```", r["stderr_tail"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
