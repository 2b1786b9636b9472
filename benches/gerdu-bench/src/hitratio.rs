//! `gerdu-bench hitratio`: miss ratios of every policy on real traces and
//! seeded Zipf workloads, beside libCacheSim's reference figures.
//!
//! The policies run in-process through the [`Policy`] trait, exactly as the
//! server stores items: one shard, evicting on writes. Every key is an
//! 8-byte block number with an empty value, so every item is charged the
//! same bytes and a cache of N items is a capacity of N charges (the
//! reference figures count objects of size 1). A request is a `get`; a miss
//! is followed by an `insert`.
//!
//! Traces (`--traces DIR`, see `shared/traces/README.md`): `OLTP.lis.zst`
//! and `P3.lis.zst`, each line `start nblocks ignored id` expanded to
//! `nblocks` requests of consecutive blocks. Zipf workloads: `--zipf-keys`
//! keys, `--zipf-requests` requests, α 0.8, 1.0 and 1.2, and α 1.0 with a
//! scan of as many never-seen keys as the key space has in the middle.
//! Cache sizes are 1%, 5% and 10% of the unique keys of each workload.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use gerdu_api::store::{Order, Sharded};
use gerdu_api::{Item, Policy};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::Distribution;

/// `hitratio` options.
#[derive(Parser, Debug, Clone)]
pub struct HitArgs {
    /// Directory with OLTP.lis.zst and P3.lis.zst (traces missing there are skipped).
    #[arg(long, default_value = "../shared/traces")]
    traces: PathBuf,
    /// Policies to run, comma-separated.
    #[arg(long, default_value = "lru,lfu,s3fifo,wtinylfu", value_delimiter = ',')]
    policies: Vec<String>,
    /// Keys of the Zipf workloads.
    #[arg(long, default_value_t = 100_000)]
    zipf_keys: u64,
    /// Requests of each Zipf workload.
    #[arg(long, default_value_t = 1_000_000)]
    zipf_requests: usize,
    /// Seed of the Zipf workloads and of the stores' key hash.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Cache sizes in percent of the unique keys, comma-separated.
    #[arg(long, default_value = "1,5,10", value_delimiter = ',')]
    sizes: Vec<u32>,
    /// Exit with failure when a target is missed.
    #[arg(long)]
    check: bool,
    /// One JSON object per row instead of the table.
    #[arg(long)]
    json: bool,
}

/// Reference miss ratios (libCacheSim 0.3.5, shared/traces/README.md):
/// trace, size %, LRU, ARC, W-TinyLFU, S3-FIFO, SIEVE.
const REFERENCE: &[(&str, u32, [f64; 5])] = &[
    ("OLTP", 1, [0.584, 0.546, 0.631, 0.535, 0.597]),
    ("OLTP", 5, [0.399, 0.390, 0.416, 0.379, 0.400]),
    ("OLTP", 10, [0.335, 0.327, 0.362, 0.323, 0.333]),
    ("P3", 1, [0.984, 0.962, 0.957, 0.958, 0.971]),
    ("P3", 5, [0.957, 0.824, 0.808, 0.809, 0.880]),
    ("P3", 10, [0.832, 0.677, 0.699, 0.661, 0.752]),
];
const REFERENCE_NAMES: [&str; 5] = ["LRU", "ARC", "W-TinyLFU", "S3-FIFO", "SIEVE"];

struct Workload {
    name: String,
    keys: Vec<u64>,
    unique: usize,
}

fn read_trace(path: &Path) -> Result<Vec<u64>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for line in BufReader::new(decoder).lines() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let mut fields = line.split_whitespace();
        let (Some(start), Some(n)) = (fields.next(), fields.next()) else { continue };
        let (Ok(start), Ok(n)) = (start.parse::<u64>(), n.parse::<u64>()) else {
            return Err(format!("{}: bad line {line:?}", path.display()));
        };
        keys.extend(start..start + n);
    }
    Ok(keys)
}

fn zipf(keys: u64, requests: usize, alpha: f64, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let z = rand_distr::Zipf::new(keys as f64, alpha).expect("zipf parameters");
    // Ranks map to scattered keys so that hot keys are not neighbours.
    (0..requests).map(|_| (z.sample(&mut rng) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect()
}

fn workloads(args: &HitArgs) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for name in ["OLTP", "P3"] {
        let path = args.traces.join(format!("{name}.lis.zst"));
        if !path.exists() {
            eprintln!("hitratio: {} not found, skipped", path.display());
            continue;
        }
        let keys = read_trace(&path)?;
        out.push(Workload { name: name.into(), unique: unique(&keys), keys });
    }
    let (n, r) = (args.zipf_keys, args.zipf_requests);
    for (i, alpha) in [0.8, 1.0, 1.2].into_iter().enumerate() {
        let keys = zipf(n, r, alpha, args.seed + i as u64);
        out.push(Workload { name: format!("zipf {alpha:.1}"), unique: unique(&keys), keys });
    }
    let mut keys = zipf(n, r / 2, 1.0, args.seed + 10);
    keys.extend((0..n).map(|k| u64::MAX - k));
    keys.extend(zipf(n, r / 2, 1.0, args.seed + 11));
    out.push(Workload { name: "zipf 1.0+scan".into(), unique: unique(&keys), keys });
    Ok(out)
}

fn unique(keys: &[u64]) -> usize {
    keys.iter().collect::<HashSet<_>>().len()
}

fn store<O: Order>(items: u64, seed: u64) -> Arc<dyn Policy> {
    let charge = 8 + gerdu_api::store::overhead::<O>() as u64;
    Arc::new(Sharded::<O>::with_seed(items * charge, 1, true, seed))
}

fn build(policy: &str, items: u64, seed: u64) -> Result<Arc<dyn Policy>, String> {
    Ok(match policy {
        "lru" => store::<gerdu_policy_lru::LruOrder>(items, seed),
        "lfu" => store::<gerdu_policy_lfu::LfuOrder>(items, seed),
        "s3fifo" => store::<gerdu_policy_s3fifo::S3FifoOrder>(items, seed),
        "wtinylfu" => store::<gerdu_policy_wtinylfu::WTinyLfuOrder>(items, seed),
        other => return Err(format!("unknown policy {other:?}")),
    })
}

/// Replays `keys` against `policy`; returns the miss ratio.
fn replay(policy: &dyn Policy, keys: &[u64]) -> f64 {
    let mut misses = 0usize;
    let mut evicted = Vec::new();
    for &k in keys {
        let key = k.to_be_bytes();
        if policy.get(&key, 0).is_none() {
            misses += 1;
            policy.insert(Bytes::copy_from_slice(&key), Item::default(), &mut evicted);
            evicted.clear();
        }
    }
    misses as f64 / keys.len().max(1) as f64
}

struct Row {
    workload: String,
    size: u32,
    items: u64,
    ours: Vec<f64>,
    reference: Option<[f64; 5]>,
}

/// Runs the benchmark; `Err` names the targets missed when `--check`.
pub fn run(args: HitArgs) -> Result<(), String> {
    for p in &args.policies {
        build(p, 1, 0)?;
    }
    let loads = workloads(&args)?;
    let mut rows = Vec::new();
    for w in &loads {
        for &size in &args.sizes {
            let items = (w.unique as u64 * u64::from(size) / 100).max(1);
            // Policies run on both cores.
            let ours: Vec<f64> = std::thread::scope(|scope| {
                let handles: Vec<_> = args
                    .policies
                    .iter()
                    .map(|p| {
                        let keys = &w.keys;
                        scope.spawn(move || replay(&*build(p, items, args.seed).expect("checked"), keys))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("replay")).collect()
            });
            let reference = REFERENCE.iter().find(|r| r.0 == w.name && r.1 == size).map(|r| r.2);
            let row = Row { workload: w.name.clone(), size, items, ours, reference };
            print_row(&args, &row, rows.is_empty());
            rows.push(row);
        }
    }
    let missed = verdicts(&args, &rows);
    if args.check && !missed.is_empty() {
        return Err(format!("targets missed: {}", missed.join("; ")));
    }
    Ok(())
}

fn print_row(args: &HitArgs, row: &Row, first: bool) {
    if args.json {
        let ours: serde_json::Map<String, serde_json::Value> =
            args.policies.iter().zip(&row.ours).map(|(p, m)| (p.clone(), (*m).into())).collect();
        let reference: serde_json::Map<String, serde_json::Value> = row
            .reference
            .map(|r| REFERENCE_NAMES.iter().zip(r).map(|(n, m)| (n.to_string(), m.into())).collect())
            .unwrap_or_default();
        let v = serde_json::json!({
            "workload": row.workload, "size_percent": row.size, "items": row.items,
            "miss_ratio": ours, "reference": reference,
        });
        println!("{v}");
        return;
    }
    if first {
        print!("{:<15} {:>4} {:>8} ", "workload", "size", "items");
        for p in &args.policies {
            print!("{p:>9} ");
        }
        print!("|");
        for n in REFERENCE_NAMES {
            print!(" {n:>9}");
        }
        println!();
    }
    print!("{:<15} {:>3}% {:>8} ", row.workload, row.size, row.items);
    for m in &row.ours {
        print!("{m:>9.3} ");
    }
    print!("|");
    match row.reference {
        Some(r) => r.iter().for_each(|m| print!(" {m:>9.3}")),
        None => print!(" {:>9}", "-"),
    }
    println!();
}

/// Checks the targets on the trace rows: lru within ±0.005 of LRU, s3fifo
/// within ±0.01 of S3-FIFO, and the best policy at or below the best
/// reference. Prints one line per target; returns the missed ones.
fn verdicts(args: &HitArgs, rows: &[Row]) -> Vec<String> {
    let mut missed = Vec::new();
    let pos = |name: &str| args.policies.iter().position(|p| p == name);
    for row in rows {
        let Some(r) = row.reference else { continue };
        let label = format!("{} {}%", row.workload, row.size);
        let mut checks = Vec::new();
        if let Some(i) = pos("lru") {
            checks.push((
                format!("lru {:.3} vs LRU {:.3} (±0.005)", row.ours[i], r[0]),
                (row.ours[i] - r[0]).abs() <= 0.005,
            ));
        }
        if let Some(i) = pos("s3fifo") {
            checks.push((
                format!("s3fifo {:.3} vs S3-FIFO {:.3} (±0.01)", row.ours[i], r[3]),
                (row.ours[i] - r[3]).abs() <= 0.01,
            ));
        }
        let (best, best_name) = row
            .ours
            .iter()
            .zip(&args.policies)
            .min_by(|a, b| a.0.total_cmp(b.0))
            .map(|(m, p)| (*m, p.as_str()))
            .unwrap_or((1.0, "-"));
        let best_ref = r.iter().copied().fold(f64::INFINITY, f64::min);
        // The reference figures have three decimals.
        let ok = (best * 1000.0).round() <= (best_ref * 1000.0).round();
        checks.push((format!("best {best_name} {best:.3} vs best reference {best_ref:.3}"), ok));
        for (what, ok) in checks {
            if !args.json {
                println!("{} {label}: {what}", if ok { "ok  " } else { "MISS" });
            }
            if !ok {
                missed.push(format!("{label}: {what}"));
            }
        }
    }
    missed
}
