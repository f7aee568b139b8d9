//! Bounded fuzzing on the stable toolchain, as ordinary tests: no coverage
//! instrumentation, a mutation loop over seed inputs that runs for a time
//! budget per target, so CI can afford it.
//!
//! - `FEDHUB_FUZZ_SECS`: seconds per target (default 2; raise it for long
//!   local runs, e.g. `FEDHUB_FUZZ_SECS=600 cargo test -p fedhub --test fuzz`).
//! - `FEDHUB_FUZZ_SEED`: the RNG seed (default: from the clock). Each run
//!   prints its seed, so a failure can be replayed exactly.
//!
//! Every input in `fuzz/regressions/<target>/` (workspace root) is checked
//! first, on every run. A failing input found by the loop is written there
//! (`crash-<hash>`) before the test fails naming the file: it becomes a
//! regression test as soon as it is committed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A small, fast PRNG (xorshift64*), deterministic from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// An RNG from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Bytes and tokens that tend to break parsers of JSON, TOML, base64, query
/// strings and numbers.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"=",
    b"&",
    b"%",
    b"%ff",
    b"%00",
    b"\0",
    b"\n",
    b"\r\n",
    b" ",
    b"-",
    b"+",
    b".",
    b"e",
    b"E",
    b"~",
    b"@",
    b"0",
    b"1e999",
    b"-0",
    b"NaN",
    b"Infinity",
    b"null",
    b"true",
    b"1.5",
    b"9223372036854775808",
    b"\\ud800",
    b"\\u0000",
    b"\xff",
    b"\xc3\xa9",
    b"\xf0\x9f\x92\xa9",
    b"[[[[[[[[",
    b"{\"a\":",
    b"\"\"\"",
    b"'''",
    b"[x]\n",
    b"a.b.c",
    b"==",
    b"====",
    b"LS0t",
    b"\t",
];

/// Applies 1 to 4 random edits to `input` (bit flips, token inserts, byte
/// deletions, range duplication, splices from `other`, truncation).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, token.iter().copied());
            }
            2 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                out.drain(at..end);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let copy: Vec<u8> = out[at..end].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, copy);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                let at = rng.below(len + 1);
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if len > 0 => {
                let at = rng.below(len);
                out[at] = TOKENS[rng.below(TOKENS.len())][0];
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, rng.next_u64() as u8);
            }
        }
    }
    out
}

/// Where a target's regression inputs live.
pub fn regressions_dir(target: &str) -> PathBuf {
    crate::workspace_root()
        .join("fuzz/regressions")
        .join(target)
}

fn budget() -> Duration {
    let secs = std::env::var("FEDHUB_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("FEDHUB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// What a fuzzing run did.
#[derive(Debug, Clone, Copy)]
pub struct FuzzReport {
    /// Regression inputs replayed.
    pub regressions: usize,
    /// Mutated inputs run.
    pub executions: u64,
}

/// Fuzzes `check` (which panics, or fails an assertion, on a bug): replays
/// the target's regression inputs, then mutates `seeds` for the time budget.
/// A failing input is saved as a regression and the test fails naming it.
pub fn fuzz(target: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8])) -> FuzzReport {
    assert!(!seeds.is_empty(), "fuzz target {target} needs seed inputs");
    let dir = regressions_dir(target);
    let mut regressions = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
            if let Err(payload) = outcome {
                panic!(
                    "fuzz target {target}: regression {} fails again: {}",
                    path.display(),
                    panic_text(&*payload)
                );
            }
            regressions += 1;
        }
    }
    for seed_input in seeds {
        check(seed_input);
    }
    let seed = seed();
    let budget = budget();
    eprintln!(
        "fuzz {target}: seed {seed} (FEDHUB_FUZZ_SEED), {} s (FEDHUB_FUZZ_SECS), {regressions} regressions",
        budget.as_secs_f64()
    );
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = seeds.to_vec();
    let began = Instant::now();
    let mut executions = 0u64;
    // Panics are expected and reported below; keep the default hook quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    while began.elapsed() < budget {
        for _ in 0..64 {
            let base = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            let input = mutate(&mut rng, base, other);
            executions += 1;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
            if let Err(payload) = outcome {
                failure = Some((input, panic_text(&*payload)));
                break;
            }
            if pool.len() < 512 {
                pool.push(input);
            } else if rng.below(4) == 0 {
                let at = rng.below(pool.len());
                pool[at] = input;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    std::panic::set_hook(hook);
    if let Some((input, message)) = failure {
        std::fs::create_dir_all(&dir).unwrap();
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = dir.join(format!("crash-{hash:016x}"));
        std::fs::write(&path, &input).unwrap();
        panic!(
            "fuzz target {target} failed after {executions} inputs (seed {seed}): {message}\n\
             input kept as {} (commit it: it is replayed on every run)",
            path.display()
        );
    }
    eprintln!("fuzz {target}: {executions} inputs, no failure");
    FuzzReport {
        regressions,
        executions,
    }
}
