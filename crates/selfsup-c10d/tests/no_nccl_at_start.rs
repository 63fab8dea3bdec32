//! The c10d shim links no CUDA: a binary using it starts without
//! libtorch_cuda, NCCL or the CUDA runtime, which are loaded only when a run
//! asks for NCCL (`Backend::nccl_available`, `ProcessGroup::join` with NCCL).
//! One test in its own binary: nothing else may load them first.
use selfsup_c10d::{Backend, Launch, ProcessGroup};
use std::time::Duration;

fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.contains(name))
}

#[test]
fn nccl_and_cuda_are_loaded_only_on_demand() {
    // The shim is linked in (a Gloo group of one), and libtorch_cpu with it.
    let one = Launch {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        local_world_size: 1,
        master_addr: "127.0.0.1".into(),
        master_port: std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        launcher: selfsup_c10d::Launcher::Torchrun,
    };
    let pg = ProcessGroup::join(&one, Backend::Gloo, Duration::from_secs(30)).unwrap();
    assert_eq!(pg.world_size(), 1);
    assert!(mapped("libtorch_cpu"));
    // (The wheel's libtorch_cpu itself needs libcudart: not ours to avoid.)
    for lib in ["libnccl", "libtorch_cuda", "libselfsup_c10d_nccl"] {
        assert!(!mapped(lib), "{lib} is loaded by a Gloo run");
    }
    // Asking for NCCL loads it where the build has it (and says why not otherwise).
    let available = Backend::nccl_available();
    if Backend::nccl_built() && available {
        assert!(mapped("libselfsup_c10d_nccl") && mapped("libnccl"));
    }
    if !Backend::nccl_built() {
        assert!(!available);
    }
}
