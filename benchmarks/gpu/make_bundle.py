#!/usr/bin/env python3
"""Assemble the GPU kit: one folder (at most 64 MiB) that runs every check of
`run.sh` on a bare machine that has Python with torch but no Rust.

Usage (`cargo xtask gpu-kit` calls it; so does crates/selfsup-cli/tests/gpu_kit.rs):

    python3 benchmarks/gpu/make_bundle.py --out target/gpu-kit \
        --binary target/release/selfsup --datasets ~/.cache/selfsup/datasets

The folder holds:
  selfsup                  the binary, a stripped copy (`strip`; an unstripped
                           copy when `strip` is missing, which may break the budget)
  run.sh, kit.py, *.py     the orchestrator and the PyTorch peers / export checks
                           (benchmarks/gpu/*.py and the export checks of benchmarks/)
  configs/presets/...      the presets the kit derives its runs from (copied
                           from configs/ now, so later preset edits need a new kit)
  configs/kit/*.toml       the kit's runs: `include` a preset, shorten it
  data/fashion-mnist       the first --fmnist-train training images (fewer when
                           the kit would pass --fit-mib: as many as fit) and
                           --fmnist-test test images, re-encoded as IDX .gz
  data/fashion-mnist-tiny  1024 / 512 of them (the --tiny runs)
  data/text                a slice of State of the Union and of the Brown corpus
  data/klettres            the spoken-letter folders of KLettres (wav2vec 2.0)
  data/graspologic         the Drosophila connectome (GRACE, DGI)
  data/emoji-google        --emoji images and their emoji.json records (CLIP)
  MANIFEST.json            every part with its size

Refuses (exit 1, listing the biggest parts) when the folder would exceed
--max-mib. Only the Python standard library is used.
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Presets the kit's configs include, relative to configs/.
PRESETS = [
    "vision/simclr-gpu.toml",
    "vision/byol-gpu.toml",
    "vision/dino-gpu.toml",
    "vision/mae-cpu.toml",
    "text/mlm-gpu.toml",
    "audio/gpu.toml",
    "graph/grace-cpu.toml",
    "graph/dgi-cpu.toml",
    "multimodal/clip-gpu.toml",
]

# Scripts copied next to run.sh: the kit's own and the export checks it reuses.
KIT_SCRIPTS = ["run.sh", "kit.py", "simclr_peer.py", "mlm_peer.py", "export_checks.py"]
REUSED_SCRIPTS = ["check_torchvision_export.py", "check_hf_clip_export.py"]

# KLettres folders of the spoken-letter probe (configs/audio/gpu.toml's first
# task) and a few syllable folders for more pre-training clips.
KLETTRES_DIRS = [
    "en/alpha", "es/alpha", "it/alpha", "de/alpha", "nds/alpha", "en_GB/alpha", "pt_BR/alpha",
    "en/syllab", "de/syllab", "nds/syllab", "fr/syllab", "cs/syllab", "da/syllab",
]

# State of the Union addresses (one file each) and Brown files per genre.
SOTU_FILES = 60
BROWN_PER_GENRE = 8


def die(message):
    print(f"make_bundle: {message}", file=sys.stderr)
    sys.exit(1)


def read_idx_gz(path):
    """(dims, payload bytes) of an IDX file (gzip)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        die(f"{path}: not an IDX file (shorter than its 4-byte magic)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        die(f"{path}: IDX header cut short")
    dims = list(struct.unpack(f">{ndim}I", data[4:header]))
    return dims, data[header:]


def write_idx_gz(path, magic, dims, payload):
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(magic + struct.pack(f">{len(dims)}I", *dims) + payload)


def subset_fashion_mnist(src, dst, n_train, n_test):
    """The first n images (and labels) of each split, as IDX .gz."""
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{split}-{kind}.gz"
            path = src / name
            if not path.is_file():
                die(f"{path} is missing: run `cargo xtask fetch fashion-mnist`")
            dims, payload = read_idx_gz(path)
            if not dims:
                die(f"{path}: IDX file without dimensions")
            total = dims[0]
            keep = min(n, total)
            per_item = len(payload) // max(total, 1)
            with gzip.open(path, "rb") as f:
                magic = f.read(4)
            write_idx_gz(dst / name, magic, [keep] + dims[1:], payload[: keep * per_item])


def copy_tree_files(src, dst, files):
    for rel in files:
        s, d = src / rel, dst / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)


def text_slice(datasets, dst):
    sotu = datasets / "sotu"
    brown = datasets / "brown"
    for d in (sotu, brown):
        if not d.is_dir():
            die(f"{d} is missing: run `cargo xtask fetch {d.name}`")
    # The latest addresses: modern English, the longest files.
    addresses = sorted(p.name for p in sotu.iterdir() if p.suffix == ".txt")[-SOTU_FILES:]
    copy_tree_files(sotu, dst / "sotu", addresses)
    by_genre = {}
    for p in sorted(brown.iterdir()):
        name = p.name
        if len(name) >= 4 and name[0] == "c" and name[2:].isdigit():
            by_genre.setdefault(name[:2], []).append(name)
    keep = [n for names in by_genre.values() for n in names[:BROWN_PER_GENRE]]
    extra = [n for n in ("cats.txt", "CONTENTS", "README") if (brown / n).is_file()]
    copy_tree_files(brown, dst / "brown", keep + extra)


def klettres_slice(datasets, dst):
    src = datasets / "klettres"
    files = []
    for rel in KLETTRES_DIRS:
        d = src / rel
        if not d.is_dir():
            die(f"{d} is missing: run `cargo xtask fetch klettres`")
        files += [str(p.relative_to(src)) for p in sorted(d.iterdir()) if p.is_file()]
    copy_tree_files(src, dst, files)


def emoji_slice(datasets, dst, count):
    src = datasets / "emoji-google"
    index = src / "emoji.json"
    if not index.is_file():
        die(f"{index} is missing: run `cargo xtask fetch emoji-google`")
    records = json.loads(index.read_text())
    kept = [r for r in records if (src / "img" / str(r.get("image", ""))).is_file()]
    # Every k-th record: all categories stay represented.
    step = max(1, len(kept) // max(count, 1))
    kept = kept[::step][:count]
    copy_tree_files(src, dst, [f"img/{r['image']}" for r in kept])
    (dst / "emoji.json").write_text(json.dumps(kept))


def strip_copy(binary, dst):
    shutil.copy2(binary, dst)
    strip = shutil.which("strip")
    if strip is None:
        print("make_bundle: `strip` not found: the binary is copied unstripped", file=sys.stderr)
        return False
    subprocess.run([strip, str(dst)], check=True)
    return True


def sizes(out):
    parts = {}
    for p in out.rglob("*"):
        if p.is_file():
            rel = p.relative_to(out)
            top = rel.parts[0] if len(rel.parts) == 1 else "/".join(rel.parts[:2])
            parts[top] = parts.get(top, 0) + p.stat().st_size
    return parts


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--binary", required=True, type=Path)
    p.add_argument("--datasets", required=True, type=Path, help="~/.cache/selfsup/datasets")
    p.add_argument("--fmnist-train", type=int, default=60000)
    p.add_argument("--fmnist-test", type=int, default=10000)
    p.add_argument("--emoji", type=int, default=400)
    p.add_argument("--max-mib", type=float, default=64.0, help="refuse a kit above this")
    p.add_argument("--fit-mib", type=float, default=62.0,
                   help="cut the Fashion-MNIST training images so the kit stays under this")
    a = p.parse_args()

    if not a.binary.is_file():
        die(f"--binary {a.binary}: no such file (build it: cargo build --release -p selfsup-cli)")
    out = a.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stripped = strip_copy(a.binary, out / "selfsup")
    for name in KIT_SCRIPTS:
        shutil.copy2(HERE / name, out / name)
    for name in REUSED_SCRIPTS:
        shutil.copy2(ROOT / "benchmarks" / name, out / name)
    os.chmod(out / "run.sh", 0o755)
    for rel in PRESETS:
        d = out / "configs/presets" / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "configs" / rel, d)
    shutil.copytree(HERE / "configs", out / "configs/kit")

    data = out / "data"
    fm = a.datasets / "fashion-mnist"
    subset_fashion_mnist(fm, data / "fashion-mnist-tiny", 1024, 512)
    text_slice(a.datasets, data / "text")
    klettres_slice(a.datasets, data / "klettres")
    graph = a.datasets / "graspologic/drosophila"
    if not graph.is_dir():
        die(f"{graph} is missing: run `cargo xtask fetch graspologic`")
    shutil.copytree(graph, data / "graspologic/drosophila")
    emoji_slice(a.datasets, data / "emoji-google", a.emoji)

    # Fashion-MNIST last, sized to what is left under --fit-mib: as many of
    # the first training images as fit (all 10000 test images stay).
    fit = int(a.fit_mib * 1024 * 1024)
    n_train = a.fmnist_train
    for _ in range(4):
        subset_fashion_mnist(fm, data / "fashion-mnist", n_train, a.fmnist_test)
        total = sum(sizes(out).values())
        if total <= fit or n_train <= 1000:
            break
        train_bytes = (data / "fashion-mnist/train-images-idx3-ubyte.gz").stat().st_size
        per_image = train_bytes / max(n_train, 1)
        n_train = max(1000, int(n_train - (total - fit) / per_image * 1.02) // 1000 * 1000)
    a.fmnist_train = n_train

    parts = sizes(out)
    total = sum(parts.values())
    limit = int(a.max_mib * 1024 * 1024)
    manifest = {
        "total_bytes": total,
        "limit_bytes": limit,
        "binary_stripped": stripped,
        "fashion_mnist": {"train": a.fmnist_train, "test": a.fmnist_test},
        "emoji": a.emoji,
        "parts": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    biggest = sorted(parts.items(), key=lambda kv: -kv[1])[:8]
    listing = "\n".join(f"  {v / 2**20:7.2f} MiB  {k}" for k, v in biggest)
    if total > limit:
        die(
            f"{out}: {total / 2**20:.2f} MiB is over the {a.max_mib} MiB the device carries; "
            f"biggest parts:\n{listing}\n(lower --fmnist-train or --emoji, or strip the binary)"
        )
    print(f"gpu kit: {out} ({total / 2**20:.2f} MiB of {a.max_mib} MiB; Fashion-MNIST "
          f"{a.fmnist_train} training + {a.fmnist_test} test images)\n{listing}")


if __name__ == "__main__":
    main()
