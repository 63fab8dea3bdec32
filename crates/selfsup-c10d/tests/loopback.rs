//! Two Gloo ranks on loopback, as two threads of this test process (each with
//! its own TCPStore client and process group, exactly as two processes).
use std::time::{Duration, Instant};

use selfsup_c10d::{Backend, C10dCollective, Launch, Launcher, ProcessGroup};
use selfsup_core::distributed::{Collective, SingleProcess};
use selfsup_core::loss::{InfoNce, InfoNceConfig};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn launch(rank: usize, world_size: usize, port: u16) -> Launch {
    Launch {
        rank,
        world_size,
        local_rank: rank,
        local_world_size: world_size,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        launcher: Launcher::Torchrun,
    }
}

/// Runs `f(rank, collective)` on `world` ranks, one thread each.
fn on_ranks<T: Send + 'static>(
    world: usize,
    timeout: Duration,
    f: impl Fn(usize, C10dCollective) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || {
                let pg = ProcessGroup::join(&launch(rank, world, port), Backend::Gloo, timeout)
                    .expect("join");
                f(rank, C10dCollective::new(pg, 64))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_broadcast_and_barrier() {
    let out = on_ranks(2, Duration::from_secs(30), |rank, comm| {
        let mut t = vec![
            Tensor::from_slice(&[1.0f32 + rank as f32, 10.0]),
            Tensor::from_slice(&[rank as f32; 40]),
        ];
        comm.all_reduce_mean_(&mut t);
        let mut b = vec![Tensor::from_slice(&[rank as f32 * 7.0, 3.0])];
        comm.broadcast_(&mut b, 1);
        comm.barrier();
        comm.check().unwrap();
        (
            Vec::<f32>::try_from(&t[0]).unwrap(),
            Vec::<f32>::try_from(&t[1]).unwrap(),
            Vec::<f32>::try_from(&b[0]).unwrap(),
        )
    });
    for (a, c, b) in out {
        assert_eq!(a, vec![1.5, 10.0]);
        assert_eq!(c, vec![0.5; 40]); // 40 floats: a bucket of its own at 64 bytes
        assert_eq!(b, vec![7.0, 3.0]);
    }
}

/// The gradient of NT-Xent over a batch split between two ranks (local loss,
/// gather with grad, then the trainer's gradient mean) equals the gradient of
/// one process with the whole batch (to float32 precision: the loss
/// normalises in float32).
#[test]
fn split_nt_xent_gradient_equals_the_single_process_gradient() {
    tch::manual_seed(3);
    let z1 = Tensor::randn([8, 5], (Kind::Double, tch::Device::Cpu));
    let z2 = Tensor::randn([8, 5], (Kind::Double, tch::Device::Cpu));
    let loss = InfoNce::new(InfoNceConfig { temperature: 0.3 });

    let (a, b) = (z1.set_requires_grad(true), z2.set_requires_grad(true));
    let single = loss.nt_xent(&a, &b, &SingleProcess);
    single.backward();
    let (ga, gb) = (a.grad(), b.grad());

    let z1v = Vec::<f64>::try_from(&z1.reshape([-1])).unwrap();
    let z2v = Vec::<f64>::try_from(&z2.reshape([-1])).unwrap();
    let parts = on_ranks(2, Duration::from_secs(30), move |rank, comm| {
        let loss = InfoNce::new(InfoNceConfig { temperature: 0.3 });
        let rows = |v: &[f64]| Tensor::from_slice(&v[rank * 20..(rank + 1) * 20]).reshape([4, 5]);
        let a = rows(&z1v).set_requires_grad(true);
        let b = rows(&z2v).set_requires_grad(true);
        let l = loss.nt_xent(&a, &b, &comm);
        l.backward();
        // The trainer averages parameter gradients over ranks: here the
        // "parameters" are the inputs, each held by one rank, so the mean
        // is this rank's gradient divided by the world size.
        comm.check().unwrap();
        let half = |g: Tensor| Vec::<f64>::try_from(&(g / 2.0).reshape([-1])).unwrap();
        (l.double_value(&[]), half(a.grad()), half(b.grad()))
    });
    let mean_loss = (parts[0].0 + parts[1].0) / 2.0;
    assert!((mean_loss - single.double_value(&[])).abs() < 1e-6);
    let joined = |i: usize| {
        let v: Vec<f64> = parts
            .iter()
            .flat_map(|p| if i == 1 { p.1.clone() } else { p.2.clone() })
            .collect();
        Tensor::from_slice(&v).reshape([8, 5])
    };
    let (ga2, gb2) = (joined(1), joined(2));
    let diff = (&ga2 - &ga).abs().max().double_value(&[]);
    assert!(
        ga2.allclose(&ga, 1e-5, 1e-7, false),
        "max difference {diff}"
    );
    assert!(gb2.allclose(&gb, 1e-5, 1e-7, false));
}

/// A rank that exits makes the survivor's next collective fail with an error,
/// well within the timeout, instead of hanging.
#[test]
fn a_rank_that_exits_fails_the_others_with_a_clear_error() {
    let timeout = Duration::from_secs(20);
    let out = on_ranks(2, timeout, |rank, comm| {
        let mut t = vec![Tensor::ones([4], (Kind::Float, tch::Device::Cpu))];
        comm.all_reduce_mean_(&mut t);
        comm.check().unwrap();
        if rank == 1 {
            drop(comm); // the process group closes its connections
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        for _ in 0..3 {
            comm.all_reduce_mean_(&mut t);
        }
        let g = comm.all_gather_with_grad(&t[0].reshape([1, 4]));
        Some((
            start.elapsed(),
            comm.check().unwrap_err().to_string(),
            g.size(),
        ))
    });
    let (elapsed, msg, gathered) = out[0].clone().unwrap();
    assert!(elapsed < timeout, "took {elapsed:?}");
    assert!(
        msg.contains("rank 0 of 2") && msg.contains("all_reduce failed"),
        "{msg}"
    );
    // After the failure, a gather keeps its shape so the loss can finish.
    assert_eq!(gathered, vec![2, 4]);
}

#[test]
fn a_missing_peer_fails_the_join_after_the_timeout() {
    let port = free_port();
    let start = Instant::now();
    let e = ProcessGroup::join(&launch(0, 2, port), Backend::Gloo, Duration::from_secs(2))
        .err()
        .expect("rank 1 never comes");
    assert!(start.elapsed() < Duration::from_secs(30));
    let msg = e.to_string();
    assert!(
        msg.contains("rank 0 of 2 could not join the run at 127.0.0.1"),
        "{msg}"
    );
}
