//! The CI smoke of every fuzz target: each runs over its committed corpus
//! (`fuzz/corpus/NAME/`), then over a few thousand mutations of it
//! (deterministic: the same inputs every run). A target that stops building,
//! or fails on its corpus, fails this test; the failing input is written to
//! `target/fuzz-smoke/NAME-crash` to replay with `fuzz/run.sh`.
//! The long, coverage-guided runs are `fuzz/run.sh` (docs/SECURITY.md).

use std::path::{Path, PathBuf};
use tensor_wasm_fuzz::{TARGETS, Target};

/// Mutated inputs per target.
const MUTATIONS: usize = 3000;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every target needs a seed corpus)", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`, with `other` to splice from: flips, inserts of
/// interesting bytes, deletions, duplications and splices.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let b = [
                    0u8, 0xff, 0x7f, 0x80, b'"', b'[', b'{', b'\n', b'=', b'/', b'9',
                ][rng.below(11)];
                out.insert(at, b);
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                let v = rng.next().to_le_bytes();
                out.splice(at..at, v[..1 + rng.below(8)].iter().copied());
            }
        }
    }
    out
}

fn run_one(target: &Target, input: &[u8]) {
    let outcome = std::panic::catch_unwind(|| (target.run)(input));
    if outcome.is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-smoke");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{}-crash", target.name));
        let _ = std::fs::write(&file, input);
        panic!(
            "fuzz target {} failed on an input saved to {}",
            target.name,
            file.display()
        );
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    for target in TARGETS {
        let seeds = corpus(target.name);
        assert!(!seeds.is_empty(), "{}: empty corpus", target.name);
        for seed in &seeds {
            run_one(target, seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.name.len() as u64);
        for _ in 0..MUTATIONS {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            run_one(target, &mutate(&mut rng, seed, other));
        }
    }
}

#[test]
fn every_corpus_folder_names_a_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            tensor_wasm_fuzz::target(&name).is_some(),
            "fuzz/corpus/{name} has no target"
        );
    }
}
