//! `matmul-job`: an example headless job (`tensorwasm:platform/tensor-job`),
//! run with `tensor-wasm run matmul_job.wasm -- N [WEIGHTS]`.
//!
//! It multiplies two N×N integer-valued matrices on the host's tensor
//! backend and prints the sum of the product (exact in f32 for small N), the
//! tensors of the granted weights named WEIGHTS if given, and how much of its
//! budget is left. Exits non-zero on a bad argument or a tensor error (WASI
//! 0.2 reports only success or failure, so `tensor-wasm run` exits 1).

use tensorwasm_sdk::{Tensor, Weights, scheduler};

fn run(n: u32, weights: Option<&str>) -> tensorwasm_sdk::Result<()> {
    let idx = |k: usize| ((k / n as usize), (k % n as usize));
    let a: Vec<f32> = (0..(n * n) as usize)
        .map(|k| {
            let (i, j) = idx(k);
            ((i * j) % 7) as f32 - 3.0
        })
        .collect();
    let b: Vec<f32> = (0..(n * n) as usize)
        .map(|k| {
            let (i, j) = idx(k);
            ((i + 2 * j) % 5) as f32 - 2.0
        })
        .collect();
    let a = Tensor::from_f32(&a, &[n, n])?;
    let b = Tensor::from_f32(&b, &[n, n])?;
    let c = a.matmul(&b)?;
    let sum: f64 = c.to_f32()?.iter().map(|&x| x as f64).sum();
    println!("checksum {}", sum as i64);
    let ids = Tensor::from_i64(&[0, 1, 2], &[3])?;
    println!("dtype {:?} shape {:?}", ids.dtype(), c.shape());
    if let Some(name) = weights {
        let w = Weights::open(name)?;
        for info in w.tensors() {
            println!("weight {} {:?} {:?}", info.name, info.shape, info.dtype);
        }
    }
    let status = scheduler::yield_();
    println!(
        "scheduler {status:?} remaining {:?}",
        scheduler::remaining()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = match args.get(1).map(|s| s.parse::<u32>()) {
        None => 64,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: matmul-job [N] [WEIGHTS]  (N a positive integer)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(n, args.get(2).map(String::as_str)) {
        eprintln!("tensor error: {e}");
        std::process::exit(3);
    }
}
