//! A tiny dataset in Fashion-MNIST's files, for the vision CLI tests.
use std::io::Write;
use std::path::Path;

const CLASSES: usize = 4;

/// Writes `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`: class `c` is a
/// bright square at one of four corners, on seeded noise.
pub fn write_fixture(dir: &Path, train: usize, test: usize) {
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    for (split, n) in [("train", train), ("t10k", test)] {
        let mut images = vec![0u8, 0, 8, 3];
        images.extend((n as u32).to_be_bytes());
        images.extend(28u32.to_be_bytes());
        images.extend(28u32.to_be_bytes());
        let mut labels = vec![0u8, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let c = i % CLASSES;
            let (oy, ox) = [(2, 2), (2, 16), (16, 2), (16, 16)][c];
            for y in 0..28 {
                for x in 0..28 {
                    let inside = (oy..oy + 10).contains(&y) && (ox..ox + 10).contains(&x);
                    let noise = (next() % 60) as u8;
                    images.push(if inside { 190 + noise / 2 } else { noise });
                }
            }
            labels.push(c as u8);
        }
        for (name, bytes) in [
            (format!("{split}-images-idx3-ubyte.gz"), images),
            (format!("{split}-labels-idx1-ubyte.gz"), labels),
        ] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap();
        }
    }
}
