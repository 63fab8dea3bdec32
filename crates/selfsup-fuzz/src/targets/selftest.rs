//! Targets that fail on purpose, to test the engine itself (not in `all`):
//! an odd first byte panics, asks for 2 GiB, or never returns.
use crate::engine::Target;

fn odd(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 1 == 1)
}

fn run_panic(data: &[u8]) -> Result<(), String> {
    if odd(data) {
        panic!("selftest panic on {:02x}", data[0]);
    }
    Ok(())
}

fn run_alloc(data: &[u8]) -> Result<(), String> {
    if odd(data) {
        let v = vec![1u8; 2 << 30];
        return Err(format!("{}", v.len()));
    }
    Ok(())
}

fn run_big(data: &[u8]) -> Result<(), String> {
    if odd(data) {
        // Over the warning cap (256 MiB), under the hard cap; never touched.
        let v: Vec<u8> = Vec::with_capacity(300 << 20);
        return Err(format!("{}", v.capacity()));
    }
    Ok(())
}

fn run_hang(data: &[u8]) -> Result<(), String> {
    if odd(data) {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    vec![vec![0, 0]]
}

pub const TARGETS: [Target; 4] = [
    Target {
        name: "selftest-panic",
        about: "panics on an odd first byte",
        run: run_panic,
        seeds,
        dict: &[],
        max_len: 16,
    },
    Target {
        name: "selftest-alloc",
        about: "allocates 2 GiB on an odd first byte",
        run: run_alloc,
        seeds,
        dict: &[],
        max_len: 16,
    },
    Target {
        name: "selftest-big",
        about: "reserves 300 MiB on an odd first byte",
        run: run_big,
        seeds,
        dict: &[],
        max_len: 16,
    },
    Target {
        name: "selftest-hang",
        about: "never returns on an odd first byte",
        run: run_hang,
        seeds,
        dict: &[],
        max_len: 16,
    },
];
