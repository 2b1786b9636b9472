//! The `weak` policy: a soft cache whose capacity follows the memory left
//! on the host or in the container, so that the cache gives memory back
//! under pressure instead of getting the process OOM-killed (DESIGN §4).
//!
//! **Order.** Weak is a controller around another policy: `[weak] order`
//! (default `lru`) names any registered policy, which is built as usual (its
//! own section applies, e.g. `[lru] shards`) and decides *which* items go.
//! Weak only decides *how many bytes* may stay, by setting that policy's
//! capacity ([`Policy::set_capacity`]).
//!
//! **Memory.** Every `interval_ms` the controller reads the memory left
//! ([`memory`]: cgroup v2 `memory.max` against `memory.stat` anon inside a
//! limited container, else the host's `MemAvailable`). With `total` the
//! memory there is and `avail` what is left, it keeps
//! `reserve = free × total` free, with a band of `band × total` above it:
//!
//! - `avail < reserve` (pressure): the limit drops to
//!   `used + avail − (reserve + band/2)`, so evicting brings `avail` back to
//!   the middle of the band;
//! - `avail > reserve + band` (room): the limit moves to the same formula,
//!   letting the cache grow into what is free;
//! - inside the band nothing changes (hysteresis: no flapping between
//!   evicting and growing);
//!
//! and the limit is always kept within `[floor, ceiling]`, where the
//! ceiling is `[weak] ceiling` or else the core's `capacity` (`-capacity`;
//! 0 = no ceiling), and never 0 (which would mean unlimited).
//!
//! **Evicting.** Standalone (local eviction) the store evicts down to a lower
//! limit at once. In the server the store never evicts by itself: a lower
//! limit leaves it over capacity, and the leader's evictor, which looks both
//! when an applied write leaves the store over capacity and every 250 ms,
//! proposes the removal of the order's victims as a log entry (DESIGN §3).
//! So in a cluster it is the leader's memory that decides; followers apply
//! the same removals.
//!
//! **Metrics** ([`Policy::stats`]): `gerdu_weak_limit_bytes` (the live limit,
//! also `gerdu_capacity_bytes`), `gerdu_weak_memory_total_bytes`,
//! `gerdu_weak_memory_available_bytes`, `gerdu_weak_shrinks_total` (times
//! pressure lowered the limit) and `gerdu_weak_pressure_evictions_total`
//! (items chosen for eviction while memory, not the ceiling, set the limit;
//! counted by the node that chooses them: the leader, or a standalone store).

#![warn(missing_docs)]

pub mod memory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use gerdu_api::size::ByteSize;
use gerdu_api::{
    Capture, Item, ItemRef, PluginError, Policy, PolicyPlugin, PolicySettings, PolicyStat, Update, register_policy,
};
use parking_lot::Mutex;

pub use memory::{Memory, MemorySource};

/// How the limit follows memory (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Lowest limit pressure may set, in charged bytes.
    pub floor: u64,
    /// Highest limit (0 = none).
    pub ceiling: u64,
    /// Fraction of the memory kept free.
    pub free: f64,
    /// Width of the band above the reserve, as a fraction of the memory.
    pub band: f64,
}

impl Limits {
    /// The limit after a reading of `mem`, with `used` charged bytes stored
    /// and the limit `current` now.
    pub fn next(&self, mem: Memory, used: u64, current: u64) -> u64 {
        let reserve = (self.free * mem.total as f64) as u64;
        let band = (self.band * mem.total as f64) as u64;
        let outside = mem.available < reserve || mem.available > reserve + band;
        let limit =
            if outside || current == 0 { (used + mem.available).saturating_sub(reserve + band / 2) } else { current };
        self.clamp(limit)
    }

    fn clamp(&self, limit: u64) -> u64 {
        let limit = limit.max(self.floor);
        let limit = if self.ceiling == 0 { limit } else { limit.min(self.ceiling) };
        limit.max(1)
    }
}

/// What the controller last saw.
#[derive(Debug)]
struct State {
    limits: Limits,
    memory: Memory,
    shrinks: u64,
    /// The last reading failed (logged once until it works again).
    failing: bool,
}

/// The weak policy: an inner policy whose capacity follows memory.
pub struct WeakPolicy {
    inner: Arc<dyn Policy>,
    source: Box<dyn MemorySource>,
    state: Mutex<State>,
    pressure_evictions: AtomicU64,
}

impl WeakPolicy {
    /// Wraps `inner`, reading memory from `source`, and sets the first limit
    /// from a reading now.
    pub fn new(inner: Arc<dyn Policy>, source: Box<dyn MemorySource>, limits: Limits) -> Self {
        let weak = WeakPolicy {
            inner,
            source,
            state: Mutex::new(State { limits, memory: Memory::default(), shrinks: 0, failing: false }),
            pressure_evictions: AtomicU64::new(0),
        };
        // Setting the first limit is not pressure.
        weak.adjust(false);
        weak
    }

    /// Reads memory once and moves the limit; returns the limit. Evicted
    /// keys (local eviction only) are counted as pressure evictions.
    pub fn tick(&self) -> u64 {
        self.adjust(true)
    }

    /// [`WeakPolicy::tick`]; a lower limit counts as a shrink if `count`.
    fn adjust(&self, count: bool) -> u64 {
        let mut state = self.state.lock();
        let limits = state.limits;
        let current = self.inner.capacity();
        let memory = match self.source.read() {
            Ok(m) => {
                state.failing = false;
                m
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!("weak: cannot read {}: {e}; the limit stays", self.source.describe());
                    state.failing = true;
                }
                return current;
            }
        };
        state.memory = memory;
        let limit = limits.next(memory, self.inner.used_bytes(), current);
        if limit != current {
            if count && limit < current && current != 0 {
                state.shrinks += 1;
            }
            let mut evicted = Vec::new();
            self.inner.set_capacity(limit, &mut evicted);
            self.pressure_evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        }
        limit
    }

    /// Whether memory rather than the ceiling sets the limit now.
    fn pressured(&self) -> bool {
        let ceiling = self.state.lock().limits.ceiling;
        ceiling == 0 || self.inner.capacity() < ceiling
    }

    fn count(&self, evicted: &[Bytes], before: usize) {
        if evicted.len() > before && self.pressured() {
            self.pressure_evictions.fetch_add((evicted.len() - before) as u64, Ordering::Relaxed);
        }
    }

    /// Runs [`WeakPolicy::tick`] every `interval` on a thread of its own
    /// until the policy is dropped.
    pub fn watch(this: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(this);
        let spawned = std::thread::Builder::new().name("gerdu-weak".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                match weak.upgrade() {
                    Some(policy) => {
                        policy.tick();
                    }
                    None => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("weak: no controller thread ({e}); the limit stays where it is");
        }
    }
}

impl Policy for WeakPolicy {
    fn get(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        self.inner.get(key, now_ms)
    }

    fn peek(&self, key: &[u8]) -> Option<Item> {
        self.inner.peek(key)
    }

    fn prefetch(&self, key: &[u8], step: usize) {
        self.inner.prefetch(key, step)
    }

    fn batch(&self, n: usize, run: &mut dyn FnMut()) {
        self.inner.batch(n, run)
    }

    fn insert(&self, key: Bytes, item: Item, evicted: &mut Vec<Bytes>) -> Option<Item> {
        let before = evicted.len();
        let old = self.inner.insert(key, item, evicted);
        self.count(evicted, before);
        old
    }

    fn remove(&self, key: &[u8]) -> Option<Item> {
        self.inner.remove(key)
    }

    fn update<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<&Item>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        let before = evicted.len();
        let old = self.inner.update(key, f, evicted);
        self.count(evicted, before);
        old
    }

    fn update_in_place<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<ItemRef<'_>>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) {
        let before = evicted.len();
        self.inner.update_in_place(key, f, evicted);
        self.count(evicted, before);
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn used_bytes(&self) -> u64 {
        self.inner.used_bytes()
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// Sets the ceiling; the limit follows at once (without a new reading).
    fn set_capacity(&self, bytes: u64, evicted: &mut Vec<Bytes>) {
        let limit = {
            let mut state = self.state.lock();
            state.limits.ceiling = bytes;
            state.limits.clamp(self.inner.capacity())
        };
        self.inner.set_capacity(limit, evicted);
    }

    fn entry_overhead(&self) -> usize {
        self.inner.entry_overhead()
    }

    fn victims(&self, bytes: u64, out: &mut Vec<Bytes>) {
        let before = out.len();
        self.inner.victims(bytes, out);
        self.count(out, before);
    }

    fn scan(&self, cursor: u64, f: &mut dyn FnMut(&Bytes, &Item) -> bool) -> u64 {
        self.inner.scan(cursor, f)
    }

    fn expired(&self, cursor: u64, now_ms: u64, budget: usize, out: &mut Vec<Bytes>) -> (u64, usize) {
        self.inner.expired(cursor, now_ms, budget, out)
    }

    fn random_key(&self, seed: u64) -> Option<Bytes> {
        self.inner.random_key(seed)
    }

    fn begin_capture(&self) -> Box<dyn Capture> {
        self.inner.begin_capture()
    }

    fn stats(&self, f: &mut dyn FnMut(PolicyStat)) {
        self.inner.stats(f);
        let (memory, shrinks) = {
            let s = self.state.lock();
            (s.memory, s.shrinks)
        };
        let gauge = |name, help, value| PolicyStat { name, help, value, counter: false };
        let counter = |name, help, value| PolicyStat { name, help, value, counter: true };
        f(gauge("gerdu_weak_limit_bytes", "Capacity the weak policy set from the memory left", self.inner.capacity()));
        f(gauge("gerdu_weak_memory_total_bytes", "Memory of the host or container", memory.total));
        f(gauge("gerdu_weak_memory_available_bytes", "Memory left on the host or in the container", memory.available));
        f(counter("gerdu_weak_shrinks_total", "Times memory pressure lowered the limit", shrinks));
        f(counter(
            "gerdu_weak_pressure_evictions_total",
            "Items chosen for eviction while memory, not the ceiling, set the limit",
            self.pressure_evictions.load(Ordering::Relaxed),
        ));
    }
}

/// `[weak]` (documented in `gerdu.toml`).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeakConfig {
    /// The policy whose order decides which items go.
    pub order: String,
    /// Lowest limit.
    pub floor: ByteSize,
    /// Highest limit; 0 = the core `capacity`.
    pub ceiling: ByteSize,
    /// Fraction of memory kept free.
    pub free: f64,
    /// Hysteresis band above the reserve, as a fraction of memory.
    pub band: f64,
    /// Time between readings.
    pub interval_ms: u64,
    /// `auto` (cgroup v2 if limited, else meminfo), `cgroup` or `meminfo`.
    pub source: String,
    /// The meminfo file.
    pub meminfo: PathBuf,
    /// The cgroup v2 directory for `source = "cgroup"` (default: this process's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

impl Default for WeakConfig {
    fn default() -> Self {
        WeakConfig {
            order: "lru".into(),
            floor: ByteSize(0),
            ceiling: ByteSize(0),
            free: 0.10,
            band: 0.05,
            interval_ms: 1000,
            source: "auto".into(),
            meminfo: "/proc/meminfo".into(),
            cgroup: None,
        }
    }
}

fn build(config: &gerdu_api::Config, settings: &PolicySettings) -> Result<Arc<dyn Policy>, PluginError> {
    let cfg: WeakConfig = gerdu_api::plugin::section(config, "weak")?;
    let bad = |m: String| PluginError::Config(format!("weak.{m}"));
    if cfg.order == "weak" {
        return Err(bad("order: weak cannot wrap itself".into()));
    }
    if !(0.0..1.0).contains(&cfg.free) || !(0.0..1.0).contains(&cfg.band) || cfg.free + cfg.band >= 1.0 {
        return Err(bad(format!(
            "free {} and band {}: fractions of memory that add up to less than 1",
            cfg.free, cfg.band
        )));
    }
    if cfg.interval_ms == 0 {
        return Err(bad("interval_ms: must be at least 1".into()));
    }
    let ceiling = if cfg.ceiling.0 != 0 { cfg.ceiling.0 } else { settings.capacity };
    if ceiling != 0 && cfg.floor.0 > ceiling {
        return Err(bad(format!("floor: {} is above the ceiling {}", cfg.floor, ByteSize(ceiling))));
    }
    let source: Box<dyn MemorySource> = match (cfg.source.as_str(), cfg.cgroup) {
        ("auto", _) => memory::detect(&cfg.meminfo),
        ("meminfo", _) => Box::new(memory::MemInfo { path: cfg.meminfo }),
        ("cgroup", dir) => {
            let dir = dir
                .or_else(|| memory::own_cgroup("/sys/fs/cgroup".as_ref(), "/proc/self/cgroup".as_ref()))
                .ok_or_else(|| bad("source: cgroup, but this process has no cgroup v2 memory limit".into()))?;
            Box::new(memory::Cgroup2 { dir, host: memory::MemInfo { path: cfg.meminfo } })
        }
        (other, _) => return Err(bad(format!("source: {other:?} is none of auto, cgroup, meminfo"))),
    };
    source.read().map_err(|e| bad(format!("source: cannot read {}: {e}", source.describe())))?;
    let order = gerdu_api::plugin::find_policy(&cfg.order).map_err(|e| bad(format!("order: {e}")))?;
    let inner = (order.build)(config, settings)?;
    let limits = Limits { floor: cfg.floor.0, ceiling, free: cfg.free, band: cfg.band };
    let described = source.describe();
    let policy = Arc::new(WeakPolicy::new(inner, source, limits));
    tracing::info!(source = %described, limit = %ByteSize(policy.capacity()), order = %cfg.order, "weak: the limit follows memory");
    WeakPolicy::watch(&policy, Duration::from_millis(cfg.interval_ms));
    Ok(policy)
}

register_policy!(PolicyPlugin {
    name: "weak",
    description: "soft cache: another policy's order, with a capacity that follows the memory left (cgroup v2 or MemAvailable)",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_policy_lru::Lru;

    /// An injected memory reading the test moves by hand.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Memory>>);

    impl Fake {
        fn new(total: u64, available: u64) -> Self {
            Fake(Arc::new(Mutex::new(Memory { total, available })))
        }
        fn set_available(&self, available: u64) {
            self.0.lock().available = available;
        }
    }

    impl MemorySource for Fake {
        fn read(&self) -> std::io::Result<Memory> {
            Ok(*self.0.lock())
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    const MB: u64 = 1 << 20;
    /// 1000 MB of memory: reserve 100 MB, band 100..150 MB, middle 125 MB.
    const LIMITS: Limits = Limits { floor: 0, ceiling: 0, free: 0.10, band: 0.05 };

    fn weak(local: bool, fake: &Fake, limits: Limits) -> WeakPolicy {
        WeakPolicy::new(Arc::new(Lru::new(0, 1, local)), Box::new(fake.clone()), limits)
    }

    fn fill(p: &WeakPolicy, n: usize, value: usize) {
        let mut evicted = Vec::new();
        for i in 0..n {
            let item = Item { value: Bytes::from(vec![b'v'; value]), cas: 1, ..Item::default() };
            p.insert(Bytes::from(format!("k{i:05}")), item, &mut evicted);
        }
    }

    fn stat(p: &WeakPolicy, name: &str) -> u64 {
        let mut found = None;
        p.stats(&mut |s| {
            if s.name == name {
                found = Some(s.value);
            }
        });
        found.unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn conformance_with_plenty_of_memory() {
        // Ample memory: the ceiling (the kit's capacity) is what binds.
        let plenty = Fake::new(1 << 40, 1 << 39);
        let build = |local: bool| {
            let plenty = plenty.clone();
            move |cap| -> Arc<dyn Policy> {
                let limits = Limits { ceiling: cap, ..LIMITS };
                Arc::new(WeakPolicy::new(Arc::new(Lru::new(cap, 8, local)), Box::new(plenty.clone()), limits))
            }
        };
        gerdu_api::testkit::check_policy(&build(true));
        gerdu_api::testkit::check_replicated_eviction(&build(false));
    }

    #[test]
    fn the_limit_follows_memory_with_hysteresis() {
        let l = LIMITS;
        let mem = |available| Memory { total: 1000 * MB, available: available * MB };
        // Room: grow so that filling up leaves the middle of the band free.
        assert_eq!(l.next(mem(600), 200 * MB, 300 * MB), 675 * MB);
        // Inside the band [100, 150]: nothing changes either way.
        assert_eq!(l.next(mem(140), 200 * MB, 300 * MB), 300 * MB);
        assert_eq!(l.next(mem(100), 200 * MB, 300 * MB), 300 * MB);
        // Pressure: shrink by what is missing up to the middle of the band.
        assert_eq!(l.next(mem(50), 200 * MB, 300 * MB), 125 * MB);
        // Floor and ceiling bound it; it is never 0 (= unlimited).
        let bounded = Limits { floor: 150 * MB, ceiling: 400 * MB, ..l };
        assert_eq!(bounded.next(mem(50), 200 * MB, 300 * MB), 150 * MB);
        assert_eq!(bounded.next(mem(900), 200 * MB, 300 * MB), 400 * MB);
        assert_eq!(l.next(mem(0), 10 * MB, 300 * MB), 1);
    }

    #[test]
    fn pressure_evicts_in_the_orders_order_and_room_grows_again() {
        let fake = Fake::new(1000 * MB, 500 * MB);
        let p = weak(true, &fake, LIMITS);
        // 500 MB free, nothing stored: the limit is 500 - 125 = 375 MB.
        assert_eq!(p.capacity(), 375 * MB);
        fill(&p, 1000, 100_000);
        let used = p.used_bytes();
        assert!(used > 90 * MB && p.len() == 1000, "nothing evicted with room: {used}");
        // Someone else takes memory: 60 MB left, under the 100 MB reserve.
        fake.set_available(60 * MB);
        let limit = p.tick();
        assert_eq!(limit, used - 65 * MB, "shrinks by what is missing to the band's middle");
        assert!(p.used_bytes() <= limit, "evicted down to the new limit");
        assert!(p.peek(b"k00000").is_none(), "oldest first");
        assert!(p.peek(b"k00999").is_some(), "newest kept");
        let gone = 1000 - p.len() as u64;
        assert_eq!(stat(&p, "gerdu_weak_pressure_evictions_total"), gone);
        assert_eq!(stat(&p, "gerdu_weak_shrinks_total"), 1);
        assert_eq!(stat(&p, "gerdu_weak_limit_bytes"), limit);
        assert_eq!(stat(&p, "gerdu_weak_memory_available_bytes"), 60 * MB);
        // The eviction freed memory: inside the band, nothing moves.
        fake.set_available(120 * MB);
        assert_eq!(p.tick(), limit);
        // Memory comes back: the limit grows again, nothing more is evicted.
        fake.set_available(400 * MB);
        let used = p.used_bytes();
        assert_eq!(p.tick(), used + 275 * MB);
        assert_eq!(1000 - p.len() as u64, gone);
        assert_eq!(stat(&p, "gerdu_weak_shrinks_total"), 1);
    }

    #[test]
    fn in_the_server_a_lower_limit_names_victims_instead_of_evicting() {
        let fake = Fake::new(1000 * MB, 500 * MB);
        let p = weak(false, &fake, LIMITS);
        fill(&p, 1000, 100_000);
        fake.set_available(60 * MB);
        let limit = p.tick();
        assert_eq!(p.len(), 1000, "no local eviction: the leader proposes removals");
        let over = p.used_bytes() - limit;
        let mut keys = Vec::new();
        p.victims(over, &mut keys);
        assert_eq!(keys.first().map(|k| &k[..]), Some(&b"k00000"[..]), "in LRU order");
        assert_eq!(stat(&p, "gerdu_weak_pressure_evictions_total"), keys.len() as u64);
    }

    #[test]
    fn the_ceiling_binds_without_pressure_and_a_failed_reading_keeps_the_limit() {
        let fake = Fake::new(1000 * MB, 900 * MB);
        let p = weak(true, &fake, Limits { ceiling: MB, ..LIMITS });
        assert_eq!(p.capacity(), MB);
        fill(&p, 100, 100_000);
        assert!(p.used_bytes() <= MB);
        assert_eq!(stat(&p, "gerdu_weak_pressure_evictions_total"), 0, "the ceiling evicted, not memory");
        // set_capacity moves the ceiling.
        p.set_capacity(2 * MB, &mut Vec::new());
        assert_eq!(p.capacity(), MB, "the limit only grows with a reading");
        assert_eq!(p.tick(), 2 * MB);
        let broken = WeakPolicy::new(
            Arc::new(Lru::new(0, 1, true)),
            Box::new(memory::MemInfo { path: "/nonexistent/meminfo".into() }),
            LIMITS,
        );
        assert_eq!(broken.capacity(), 0, "no reading: the store keeps its own capacity");
    }
}
