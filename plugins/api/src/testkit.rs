//! The policy conformance kit.
//!
//! Every policy crate runs [`check_policy`] in its tests. The kit drives the
//! policy through the real executor ([`crate::exec`]), so it checks both the
//! store contract (accounting, eviction, iteration) and that the command
//! semantics hold on top of it. A failure panics with the name of the check.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::command::{Command, Condition, Delta, ExpireCondition, Expiry, SetCommand};
use crate::exec::{ApplyState, apply, apply_all, read, read_all};
use crate::policy::Policy;
use crate::reply::{CommandError, Item, Number, Reply, Ttl};

/// Builds a fresh policy with the given capacity in charged bytes (0 = unlimited).
pub type Builder<'a> = &'a dyn Fn(u64) -> Arc<dyn Policy>;

struct Harness {
    store: Arc<dyn Policy>,
    st: ApplyState,
}

impl Harness {
    fn new(build: Builder<'_>, capacity: u64) -> Self {
        Harness { store: build(capacity), st: ApplyState { now_ms: 1_000_000, ..Default::default() } }
    }
    fn w(&mut self, cmd: Command) -> Reply {
        apply(&*self.store, &cmd, &mut self.st)
    }
    fn r(&self, cmd: Command) -> Reply {
        read(&*self.store, &cmd, self.st.now_ms)
    }
    fn set(&mut self, k: &str, v: &str) -> Reply {
        self.w(Command::Set(SetCommand::new(k.to_string(), v.to_string())))
    }
    fn get(&self, k: &str) -> Option<Item> {
        match self.r(Command::Get { keys: vec![Bytes::from(k.to_string())] }) {
            Reply::Values(mut v) => v.pop().flatten(),
            other => panic!("get answered {other:?}"),
        }
    }
    fn value(&self, k: &str) -> Option<String> {
        self.get(k).map(|i| String::from_utf8(i.value.to_vec()).unwrap())
    }
}

fn key(k: &str) -> Bytes {
    Bytes::from(k.to_string())
}

/// Runs every check against policies made by `build`.
pub fn check_policy(build: Builder<'_>) {
    basic_crud(build);
    conditions_and_cas(build);
    expiry(build);
    sweep(build);
    counters(build);
    append_and_ranges(build);
    rename_copy(build);
    accounting(build);
    eviction_by_bytes(build);
    victims_free_enough_and_remove_nothing(build);
    shrinking_capacity(build);
    scan_and_random(build);
    flush(build);
    capture_is_point_in_time(build);
    memcached_meta(build);
    batches_match_one_by_one(build);
    batches_serve_every_call_and_other_threads(build);
}

/// Inside [`Policy::batch`] (which may hold the store's locks) every store
/// call still works on the batch's thread, the whole-store ones included
/// (a log entry may hold a flush or a scan); meanwhile another thread's
/// calls wait for the batch and then see its writes whole.
fn batches_serve_every_call_and_other_threads(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let st = &mut h.st;
    let store = h.store.clone();
    let writes: Vec<Command> = (0..64).map(|i| Command::Set(SetCommand::new(format!("b{i}"), "v"))).collect();
    let mut answers = Vec::new();
    store.batch(writes.len(), &mut || {
        answers = apply_all(&*store, &writes, st);
        answers.push(apply(&*store, &Command::Set(SetCommand::new("one", "1")), st));
        answers.push(read(&*store, &Command::Size, st.now_ms));
        answers.push(read(&*store, &Command::Scan { cursor: 0, pattern: None, count: 1000 }, st.now_ms));
        answers.push(read(&*store, &Command::RandomKey, st.now_ms));
        let mut evicted = Vec::new();
        store.victims(64, &mut evicted);
        answers.push(Reply::Count(evicted.len() as u64));
        answers.push(Reply::Count(u64::from(store.used_bytes() > 0)));
        answers.push(apply(&*store, &Command::Flush, st));
        answers.push(read(&*store, &Command::Size, st.now_ms));
        // A batch of another store inside this one, then this one's calls again.
        let (other, mut ost) = (build(0), ApplyState { now_ms: st.now_ms, ..Default::default() });
        apply_all(&*other, &writes, &mut ost);
        answers.push(read(&*other, &Command::Size, st.now_ms));
        answers.push(apply(&*store, &Command::Set(SetCommand::new("after", "1")), st));
    });
    let n = writes.len();
    assert!(answers[..=n].iter().all(|r| matches!(r, Reply::Stored { created: true, .. })), "batch: writes");
    assert_eq!(answers[n + 1], Reply::Count(65), "batch: size inside");
    assert!(matches!(&answers[n + 2], Reply::Keys { keys, .. } if keys.len() == 65), "batch: scan inside");
    assert!(matches!(answers[n + 3], Reply::Key(Some(_))), "batch: random key inside");
    assert!(!matches!(answers[n + 4], Reply::Count(0)), "batch: victims inside");
    assert_eq!(answers[n + 5], Reply::Count(1), "batch: bytes inside");
    assert_eq!(answers[n + 7], Reply::Count(0), "batch: flush inside");
    assert_eq!(answers[n + 8], Reply::Count(64), "batch: another store's batch inside");
    assert!(matches!(answers[n + 9], Reply::Stored { created: true, .. }), "batch: this store after it");

    // Another thread writes and reads keys of its own while this one runs
    // batches: neither blocks for good, and neither loses a write.
    let other = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut st = ApplyState { now_ms: 1_000_000, ..Default::default() };
            for i in 0..2000 {
                let k = format!("o{i}");
                apply(&*store, &Command::Set(SetCommand::new(k.clone(), "x")), &mut st);
                let got = read(&*store, &Command::Exists { keys: vec![key(&k)] }, st.now_ms);
                assert_eq!(got, Reply::Count(1), "batch: the other thread reads its own write");
            }
        })
    };
    for round in 0..200 {
        let batch: Vec<Command> = (0..16)
            .map(|k| {
                let k = key(&format!("r{k}"));
                if round % 2 == 0 { Command::Set(SetCommand::new(k, "y")) } else { Command::Delete { keys: vec![k] } }
            })
            .collect();
        let mut replies = Vec::new();
        store.batch(batch.len(), &mut || {
            replies = apply_all(&*store, &batch, st);
        });
        assert_eq!(replies.len(), 16, "batch: replies in round {round}");
    }
    other.join().expect("batch: the other thread");
    // The last round (odd) removed the batches' keys; "after" stays.
    assert_eq!(store.len(), 2001, "batch: the other thread's keys all stored, the batches' gone");
}

/// The batch executor ([`apply_all`], [`read_all`]), which hints the keys
/// ahead to the store, answers and leaves exactly what running the same
/// commands one at a time does: with the index growing and entries removed
/// between a key's hints and its turn. (Without a capacity: two stores of a
/// sharded policy split it by their own hash seeds, so they would evict
/// differently whatever the executor.)
fn batches_match_one_by_one(build: Builder<'_>) {
    let (batched, single) = (Harness::new(build, 0), Harness::new(build, 0));
    let (mut bst, mut sst) = (batched.st, single.st);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..40u64 {
        let batch: Vec<Command> = (0..64)
            .map(|_| {
                // The key space widens each round, so the index keeps growing.
                let k = key(&format!("k{}", next(50 + round * 40)));
                match next(6) {
                    0 | 1 => Command::Set(SetCommand::new(k, "v".repeat(next(300) as usize))),
                    2 => Command::Delete { keys: vec![k] },
                    3 => Command::Incr { key: k, delta: Delta::Signed(1) },
                    4 => Command::Append {
                        key: k,
                        value: key("+"),
                        prepend: false,
                        create: Some(Expiry::Never),
                        cas: None,
                    },
                    _ => Command::Get { keys: vec![k] },
                }
            })
            .collect();
        let (writes, reads): (Vec<Command>, Vec<Command>) = batch.into_iter().partition(Command::is_write);
        let got = apply_all(&*batched.store, &writes, &mut bst);
        let want: Vec<Reply> = writes.iter().map(|c| apply(&*single.store, c, &mut sst)).collect();
        assert_eq!(got, want, "batches: write replies in round {round}");
        let got = read_all(&*batched.store, &reads, bst.now_ms, |_| None);
        let want: Vec<Reply> = reads.iter().map(|c| read(&*single.store, c, sst.now_ms)).collect();
        assert_eq!(got, want, "batches: read replies in round {round}");
        assert_eq!(batched.store.len(), single.store.len(), "batches: size in round {round}");
    }
    assert!(batched.store.len() > 300, "batches: the key space grew");
}

fn basic_crud(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    assert!(h.get("a").is_none(), "basic: empty store has no key");
    assert!(matches!(h.set("a", "1"), Reply::Stored { created: true, .. }), "basic: first set creates");
    assert_eq!(h.value("a").as_deref(), Some("1"), "basic: read back");
    assert!(matches!(h.set("a", "2"), Reply::Stored { created: false, .. }), "basic: second set updates");
    assert_eq!(h.value("a").as_deref(), Some("2"), "basic: overwrite");
    assert_eq!(h.store.len(), 1, "basic: one item");
    assert_eq!(h.w(Command::Delete { keys: vec![key("a"), key("zz")] }), Reply::Count(1), "basic: delete counts");
    assert!(h.get("a").is_none(), "basic: deleted key is gone");
    assert_eq!(h.store.len(), 0, "basic: empty again");
    assert_eq!(h.store.used_bytes(), 0, "basic: no bytes after delete");
    let multi = h.r(Command::Get { keys: vec![key("x"), key("a"), key("x")] });
    assert_eq!(multi, Reply::Values(vec![None, None, None]), "basic: multi-get misses");
    h.set("x", "9");
    assert_eq!(h.r(Command::Exists { keys: vec![key("x"), key("x"), key("q")] }), Reply::Count(2), "basic: exists");
    let mut s = SetCommand::new("f", "v");
    s.flags = 0xdead_beef;
    h.w(Command::Set(s));
    assert_eq!(h.get("f").unwrap().flags, 0xdead_beef, "basic: flags kept");
    assert!(matches!(h.w(Command::GetDelete { key: key("f") }), Reply::Value(Some(_))), "basic: getdel");
    assert!(h.get("f").is_none(), "basic: getdel removed");
}

fn conditions_and_cas(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let cond = |k: &str, v: &str, c| {
        let mut s = SetCommand::new(k.to_string(), v.to_string());
        s.condition = c;
        Command::Set(s)
    };
    assert!(matches!(h.w(cond("k", "1", Condition::IfPresent)), Reply::NotStored { .. }), "cas: replace missing");
    assert!(matches!(h.w(cond("k", "1", Condition::IfAbsent)), Reply::Stored { .. }), "cas: add missing");
    assert!(matches!(h.w(cond("k", "2", Condition::IfAbsent)), Reply::NotStored { .. }), "cas: add present");
    assert_eq!(h.value("k").as_deref(), Some("1"));
    let cas1 = h.get("k").unwrap().cas;
    assert!(matches!(h.w(cond("k", "3", Condition::IfPresent)), Reply::Stored { .. }), "cas: replace present");
    let cas2 = h.get("k").unwrap().cas;
    assert_ne!(cas1, cas2, "cas: every write changes the cas");
    assert_eq!(h.w(cond("k", "4", Condition::IfCas(cas1))), Reply::Exists, "cas: stale cas refused");
    assert!(matches!(h.w(cond("k", "4", Condition::IfCas(cas2))), Reply::Stored { .. }), "cas: current cas stores");
    assert_eq!(h.w(cond("nope", "4", Condition::IfCas(1))), Reply::NotFound, "cas: missing key");
    let mut s = SetCommand::new("k", "5");
    s.return_old = true;
    match h.w(Command::Set(s)) {
        Reply::Stored { old: Some(old), .. } => {
            assert_eq!(&old.value[..], b"4", "cas: old value returned")
        }
        other => panic!("cas: set GET answered {other:?}"),
    }
    // The old item whole (a store may keep a long value apart), flags and
    // deadline included.
    let long = "L".repeat(3 * crate::reply::READ_COPY_LIMIT);
    let mut s = SetCommand::new("k", long.clone());
    (s.flags, s.expiry) = (7, Expiry::In(60_000));
    h.w(Command::Set(s));
    for next in ["short", "again"] {
        let mut s = SetCommand::new("k", next);
        s.return_old = true;
        match h.w(Command::Set(s)) {
            Reply::Stored { old: Some(old), .. } if next == "short" => {
                assert_eq!((&old.value[..], old.flags), (long.as_bytes(), 7), "cas: a long old value returned");
                assert_eq!(old.expires_at, h.st.now_ms + 60_000, "cas: the old deadline returned");
            }
            Reply::Stored { old: Some(old), .. } => assert_eq!(&old.value[..], b"short", "cas: old value returned"),
            other => panic!("cas: set GET answered {other:?}"),
        }
    }
    assert_eq!(
        h.w(Command::SetMany {
            items: vec![SetCommand::new("n1", "a"), SetCommand::new("k", "b")],
            only_if_none_exist: true
        }),
        Reply::Bool(false),
        "cas: msetnx refuses when one exists"
    );
    assert!(h.get("n1").is_none(), "cas: msetnx stored nothing");
}

fn expiry(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let t0 = h.st.now_ms;
    let mut s = SetCommand::new("t", "v");
    s.expiry = Expiry::In(1000);
    h.w(Command::Set(s));
    assert_eq!(
        h.r(Command::Ttl { key: key("t") }),
        Reply::Ttl(Ttl::Expires { at_ms: t0 + 1000, remaining_ms: 1000 }),
        "expiry: ttl"
    );
    h.st.now_ms = t0 + 999;
    assert!(h.get("t").is_some(), "expiry: alive before the deadline");
    h.st.now_ms = t0 + 1000;
    assert!(h.get("t").is_none(), "expiry: gone at the deadline");
    assert_eq!(h.r(Command::Exists { keys: vec![key("t")] }), Reply::Count(0), "expiry: exists hides it");
    assert_eq!(h.r(Command::Ttl { key: key("t") }), Reply::Ttl(Ttl::Missing), "expiry: ttl missing");
    // A write meeting the expired item removes it and treats it as absent.
    let mut add = SetCommand::new("t", "new");
    add.condition = Condition::IfAbsent;
    assert!(matches!(h.w(Command::Set(add)), Reply::Stored { created: true, .. }), "expiry: add over expired");
    assert!(h.st.expired >= 1, "expiry: counted");
    assert_eq!(h.r(Command::Ttl { key: key("t") }), Reply::Ttl(Ttl::Persistent), "expiry: no ttl");
    // touch / persist / conditions
    let touch = |e, c| Command::Touch { key: key("t"), expiry: e, condition: c };
    assert_eq!(h.w(touch(Expiry::In(50), ExpireCondition::IfSome)), Reply::Bool(false), "expiry: XX without ttl");
    assert_eq!(h.w(touch(Expiry::In(50), ExpireCondition::IfNone)), Reply::Bool(true), "expiry: NX without ttl");
    assert_eq!(h.w(touch(Expiry::In(10), ExpireCondition::IfGreater)), Reply::Bool(false), "expiry: GT smaller");
    assert_eq!(h.w(touch(Expiry::In(10), ExpireCondition::IfLess)), Reply::Bool(true), "expiry: LT smaller");
    assert_eq!(h.w(touch(Expiry::Never, ExpireCondition::Always)), Reply::Bool(true), "expiry: persist");
    assert_eq!(h.w(touch(Expiry::Never, ExpireCondition::Always)), Reply::Bool(false), "expiry: persist twice");
    let mut keep = SetCommand::new("t", "kept");
    keep.expiry = Expiry::Keep;
    h.w(touch(Expiry::In(500), ExpireCondition::Always));
    h.w(Command::Set(keep));
    assert!(matches!(h.r(Command::Ttl { key: key("t") }), Reply::Ttl(Ttl::Expires { .. })), "expiry: KEEPTTL");
    assert_eq!(h.w(touch(Expiry::At(1), ExpireCondition::Always)), Reply::Bool(true), "expiry: past deadline");
    assert!(h.get("t").is_none(), "expiry: past deadline deletes");
    h.set("g", "v");
    let gat = h.w(Command::GetAndTouch { keys: vec![key("g"), key("none")], expiry: Expiry::In(5) });
    assert!(matches!(&gat, Reply::Values(v) if v[0].is_some() && v[1].is_none()), "expiry: gat");
    h.st.now_ms += 5;
    assert!(h.get("g").is_none(), "expiry: gat set the deadline");
    // A refused conditional set and a delete that meet expired items remove
    // them as well (and say the key was absent).
    for k in ["e1", "e2"] {
        let mut e = SetCommand::new(k, "v");
        e.expiry = Expiry::In(1);
        h.w(Command::Set(e));
    }
    h.st.now_ms += 1;
    let (len, expired) = (h.store.len(), h.st.expired);
    let mut xx = SetCommand::new("e1", "x");
    xx.condition = Condition::IfPresent;
    assert!(matches!(h.w(Command::Set(xx)), Reply::NotStored { .. }), "expiry: replace over expired refused");
    assert_eq!(h.w(Command::Delete { keys: vec![key("e2")] }), Reply::Count(0), "expiry: delete of expired is 0");
    assert_eq!(h.store.len(), len - 2, "expiry: expired items met by writes are removed");
    assert_eq!(h.st.expired, expired + 2, "expiry: and counted");
}

/// The background sweep's part: `Policy::expired` names exactly the expired
/// items over one pass of cursors, and `Sweep` removes only those still
/// expired when it applies.
fn sweep(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let t0 = h.st.now_ms;
    for i in 0..300 {
        let mut s = SetCommand::new(format!("s{i}"), "v");
        // Every third key lives 10 ms, every third 10 s, the rest forever.
        s.expiry = match i % 3 {
            0 => Expiry::In(10),
            1 => Expiry::In(10_000),
            _ => Expiry::Never,
        };
        h.w(Command::Set(s));
    }
    let names = |h: &Harness, budget| {
        let (mut cursor, mut keys, mut rounds) = (0, Vec::new(), 0);
        loop {
            let (next, seen) = h.store.expired(cursor, t0 + 10, budget, &mut keys);
            assert!(seen <= budget.max(1), "sweep: examines at most its budget");
            rounds += 1;
            assert!(rounds <= 1000, "sweep: the cursor comes back to 0");
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    };
    let want: HashSet<Bytes> = (0..300).step_by(3).map(|i| key(&format!("s{i}"))).collect();
    for budget in [1, 7, 1000] {
        let got = names(&h, budget);
        assert_eq!(got.len(), want.len(), "sweep: each expired key named once (budget {budget})");
        assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), want, "sweep: exactly the expired keys");
    }
    assert!(h.store.expired(0, t0 + 9, 1000, &mut Vec::new()).1 > 0, "sweep: sees items");
    let mut found = Vec::new();
    h.store.expired(0, t0 + 9, 1000, &mut found);
    assert!(found.is_empty(), "sweep: nothing is expired before the deadline");
    // s0 is written again (no ttl) after the sweep named it: it stays.
    let keys = names(&h, 64);
    h.st.now_ms = t0 + 10;
    h.set("s0", "again");
    let (len, expired) = (h.store.len(), h.st.expired);
    let mut sweep_keys = keys.clone();
    sweep_keys.push(key("s1"));
    assert_eq!(h.w(Command::Sweep { keys: sweep_keys }), Reply::Count(99), "sweep: removes the still-expired keys");
    assert_eq!(h.store.len(), len - 99, "sweep: removed");
    assert_eq!(h.st.expired, expired + 99, "sweep: counted as expirations");
    assert_eq!(h.value("s0").as_deref(), Some("again"), "sweep: a rewritten key stays");
    assert!(h.get("s1").is_some() && h.get("s2").is_some(), "sweep: live keys stay");
    assert_eq!(h.w(Command::Sweep { keys }), Reply::Count(0), "sweep: twice removes nothing");
}

fn counters(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let incr = |k: &str, d| Command::Incr { key: key(k), delta: d };
    assert_eq!(h.w(incr("c", Delta::Signed(5))), Reply::Number(Number::Signed(5)), "incr: missing counts as 0");
    assert_eq!(h.w(incr("c", Delta::Signed(-7))), Reply::Number(Number::Signed(-2)), "incr: decr");
    h.set("s", "abc");
    assert!(matches!(h.w(incr("s", Delta::Signed(1))), Reply::Error(_)), "incr: not an integer");
    h.set("m", &i64::MAX.to_string());
    assert!(matches!(h.w(incr("m", Delta::Signed(1))), Reply::Error(_)), "incr: overflow");
    assert_eq!(h.w(incr("nope", Delta::Unsigned { by: 1, decr: false })), Reply::NotFound, "incr: memcached missing");
    h.set("u", &u64::MAX.to_string());
    assert_eq!(
        h.w(incr("u", Delta::Unsigned { by: 2, decr: false })),
        Reply::Number(Number::Unsigned(1)),
        "incr: memcached wraps"
    );
    assert_eq!(
        h.w(incr("u", Delta::Unsigned { by: 5, decr: true })),
        Reply::Number(Number::Unsigned(0)),
        "incr: memcached decr floors at 0"
    );
    assert_eq!(
        h.w(incr("f", Delta::Float(10.5))),
        Reply::Number(Number::Float(Bytes::from_static(b"10.5"))),
        "incr: float"
    );
    assert_eq!(
        h.w(incr("f", Delta::Float(0.5))),
        Reply::Number(Number::Float(Bytes::from_static(b"11"))),
        "incr: float integral"
    );
}

fn append_and_ranges(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let app = |v: &str, prepend, create: bool| Command::Append {
        key: key("a"),
        value: Bytes::from(v.to_string()),
        prepend,
        create: create.then_some(Expiry::Never),
        cas: None,
    };
    assert_eq!(h.w(app("x", false, false)), Reply::NotStored { old: None }, "append: memcached missing");
    assert_eq!(h.w(app("mid", false, true)), Reply::Count(3), "append: redis creates");
    assert_eq!(h.w(app("<", true, false)), Reply::Count(4), "append: prepend");
    assert_eq!(h.w(app(">", false, false)), Reply::Count(5), "append: append");
    assert_eq!(h.value("a").as_deref(), Some("<mid>"));
    let cas = h.get("a").unwrap().cas;
    let with_cas = |want| Command::Append {
        key: key("a"),
        value: Bytes::from_static(b"!"),
        prepend: false,
        create: None,
        cas: Some(want),
    };
    assert_eq!(h.w(with_cas(cas + 100)), Reply::Exists, "append: wrong cas refused");
    assert_eq!(h.w(with_cas(cas)), Reply::Count(6), "append: matching cas appends");
    assert_eq!(
        h.w(Command::SetRange { key: key("r"), offset: 3, value: Bytes::from_static(b"xy") }),
        Reply::Count(5),
        "setrange: pads"
    );
    assert_eq!(h.get("r").unwrap().value, Bytes::from_static(b"\0\0\0xy"));
}

fn rename_copy(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    h.set("a", "1");
    h.set("b", "2");
    let ren = |from: &str, to: &str, nx| Command::Rename { from: key(from), to: key(to), only_if_absent: nx };
    assert_eq!(h.w(ren("a", "b", true)), Reply::Bool(false), "rename: nx refuses");
    assert_eq!(h.w(ren("a", "c", false)), Reply::Ok, "rename");
    assert!(h.get("a").is_none() && h.value("c").as_deref() == Some("1"), "rename moved");
    assert!(matches!(h.w(ren("zz", "c", false)), Reply::Error(_)), "rename: missing source");
    let copy = |r| Command::Copy { from: key("c"), to: key("b"), replace: r };
    assert_eq!(h.w(copy(false)), Reply::Bool(false), "copy: no replace");
    assert_eq!(h.w(copy(true)), Reply::Bool(true), "copy: replace");
    assert_eq!(h.value("b").as_deref(), Some("1"));
}

fn accounting(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let overhead = h.store.entry_overhead() as u64;
    h.set("key1", "value");
    assert_eq!(h.store.used_bytes(), 4 + 5 + overhead, "accounting: key + value + overhead");
    h.set("key1", "v");
    assert_eq!(h.store.used_bytes(), 4 + 1 + overhead, "accounting: overwrite recharges");
    h.set("k2", "vv");
    assert_eq!(h.store.used_bytes(), 4 + 1 + 2 + 2 + 2 * overhead, "accounting: two items");
    h.w(Command::Delete { keys: vec![key("key1")] });
    assert_eq!(h.store.used_bytes(), 2 + 2 + overhead, "accounting: delete uncharges");
    // Values of every size, the store's large-value threshold on both sides
    // (a store may keep long values apart): charged and read back exactly.
    let limit = crate::reply::READ_COPY_LIMIT;
    let base = h.store.used_bytes();
    for len in [limit + 1, 0, limit, 10 * limit, 3] {
        let value: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        h.set("big", &value);
        assert_eq!(h.store.used_bytes(), base + 3 + len as u64 + overhead, "accounting: a {len}-byte value");
        assert_eq!(
            h.get("big").map(|i| i.value),
            Some(Bytes::from(value)),
            "accounting: a {len}-byte value reads back"
        );
    }
    // Deadlines come and go on the same key, value and size (a store may
    // keep a deadline with the value): each read back exactly, and charged
    // the same.
    let (now, before) = (h.st.now_ms, h.store.used_bytes());
    for (ttl, len) in [(5_000, 10), (0, 10), (7_000, 10), (7_000, 10), (9_000, limit + 5), (0, limit + 5), (3, 0)] {
        let value = "d".repeat(len);
        let mut set = SetCommand::new("timed", value.clone());
        set.expiry = if ttl == 0 { Expiry::Never } else { Expiry::In(ttl) };
        h.w(Command::Set(set));
        let item = h.get("timed").expect("timed is there");
        let deadline = if ttl == 0 { 0 } else { now + ttl };
        assert_eq!((item.value, item.expires_at), (Bytes::from(value), deadline), "accounting: ttl {ttl}, {len} bytes");
        assert_eq!(h.store.used_bytes(), before + 5 + len as u64 + overhead, "accounting: ttl {ttl}, {len} bytes");
    }
    h.w(Command::Delete { keys: vec![key("timed")] });
    // Keys of 1 MiB and more (a store may lay long keys out apart), with
    // short and long values, a deadline on and off: read back and charged
    // exactly, then uncharged.
    let before = h.store.used_bytes();
    for (klen, vlen, ttl) in [(1 << 20, 3, 0), ((1 << 20) + 1, 3, 5_000), ((1 << 20) - 1, limit, 0), (1 << 20, 0, 0)] {
        let long = "k".repeat(klen);
        let mut set = SetCommand::new(long.clone(), "v".repeat(vlen));
        set.expiry = if ttl == 0 { Expiry::Never } else { Expiry::In(ttl) };
        h.w(Command::Set(set));
        let item = h.get(&long).expect("a long key is there");
        assert_eq!(item.value.len(), vlen, "accounting: a {klen}-byte key's {vlen}-byte value");
        assert_eq!(item.expires_at, if ttl == 0 { 0 } else { h.st.now_ms + ttl }, "accounting: {klen}-byte key's ttl");
        assert_eq!(h.store.used_bytes(), before + (klen + vlen) as u64 + overhead, "accounting: a {klen}-byte key");
        h.w(Command::Delete { keys: vec![Bytes::from(long)] });
        assert_eq!(h.store.used_bytes(), before, "accounting: a {klen}-byte key uncharged");
    }
    let big = "b".repeat(4 * limit);
    h.set("big", &big);
    let mut out = Vec::new();
    h.store.victims(u64::MAX, &mut out);
    assert_eq!(out.len(), 2, "accounting: victims see both entries");
    h.w(Command::Delete { keys: vec![key("big"), key("k2")] });
    assert_eq!(h.store.used_bytes(), 0, "accounting: nothing left charged");
}

fn victims_free_enough_and_remove_nothing(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    let value = "v".repeat(100);
    for i in 0..500 {
        h.set(&format!("key{i:05}"), &value);
    }
    let charge = (100 + 8 + h.store.entry_overhead()) as u64;
    let (len, used) = (h.store.len(), h.store.used_bytes());
    let mut out = Vec::new();
    h.store.victims(0, &mut out);
    assert!(out.is_empty(), "victims: nothing to free, nothing named");
    h.store.victims(50 * charge, &mut out);
    let unique: HashSet<_> = out.iter().cloned().collect();
    assert_eq!(unique.len(), out.len(), "victims: each key once");
    assert!(out.len() >= 50, "victims: enough keys to free the bytes asked ({})", out.len());
    assert!(out.iter().all(|k| h.store.peek(k).is_some()), "victims: only keys that exist");
    assert_eq!((h.store.len(), h.store.used_bytes()), (len, used), "victims: nothing removed");
    out.clear();
    h.store.victims(u64::MAX, &mut out);
    assert_eq!(out.len(), 500, "victims: at most every key");
}

/// Both kits for a store-based policy ([`crate::store::Sharded`] over
/// order `O`), with one shard (an exact global order) and with eight, each
/// evicting by itself and in the server's mode.
pub fn check_order<O: crate::store::Order>() {
    use crate::store::Sharded;
    for shards in [8, 1] {
        check_policy(&|cap| Arc::new(Sharded::<O>::new(cap, shards, true)));
        check_replicated_eviction(&|cap| Arc::new(Sharded::<O>::new(cap, shards, false)));
    }
}

/// The server's mode, for policies built with `local_eviction = false`: no
/// eviction on writes; the caller removes the victims (as a replicated
/// `Evict` command) and the store fits again. Every policy must pass it
/// too.
pub fn check_replicated_eviction(build: Builder<'_>) {
    let probe = build(0);
    let charge = (100 + 8 + probe.entry_overhead()) as u64;
    let capacity = charge * 100;
    let mut h = Harness::new(build, capacity);
    let value = "v".repeat(100);
    for i in 0..300 {
        h.set(&format!("key{i:05}"), &value);
        let used = h.store.used_bytes();
        if used > capacity {
            let mut keys = Vec::new();
            h.store.victims(used - capacity, &mut keys);
            let n = keys.len() as u64;
            assert_eq!(h.w(Command::Evict { keys }), Reply::Count(n), "evict: every victim removed");
        }
        assert!(h.store.used_bytes() <= capacity, "evict: fits again after the victims go ({i})");
        assert!(h.st.evicted.len() as u64 <= i, "evict: the count is of removed keys");
    }
    assert!(h.store.len() < 300, "evict: some keys went");
    assert!(h.get("key00299").is_some(), "evict: the newest key stays");
}

fn eviction_by_bytes(build: Builder<'_>) {
    let probe = build(0);
    let overhead = probe.entry_overhead() as u64;
    let item = 100 + 8 + overhead;
    let capacity = item * 400;
    let mut h = Harness::new(build, capacity);
    let value = "v".repeat(100);
    let mut evicted = HashSet::new();
    for i in 0..2000 {
        h.set(&format!("key{i:05}"), &value);
        evicted.extend(h.st.evicted.drain(..));
        assert!(h.store.used_bytes() <= capacity, "eviction: never over capacity ({i})");
    }
    assert!(h.store.len() < 2000, "eviction: something was evicted");
    assert!(h.store.len() >= 100, "eviction: the cache is not emptied ({} left)", h.store.len());
    assert_eq!(evicted.len() + h.store.len(), 2000, "eviction: every key is either kept or reported");
    for k in &evicted {
        let k = String::from_utf8(k.to_vec()).unwrap();
        assert!(h.get(&k).is_none(), "eviction: evicted {k} is gone");
    }
    assert!(h.get("key01999").is_some(), "eviction: the newest key survives");
    // A value larger than the whole capacity is not kept.
    let huge = "h".repeat(capacity as usize + 1);
    h.set("huge", &huge);
    assert!(h.store.used_bytes() <= capacity, "eviction: oversized item does not break capacity");
}

fn shrinking_capacity(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    for i in 0..100 {
        h.set(&format!("k{i}"), "0123456789");
    }
    let target = h.store.used_bytes() / 2;
    let mut ev = Vec::new();
    h.store.set_capacity(target, &mut ev);
    assert!(h.store.used_bytes() <= target, "set_capacity: shrinks to the target");
    assert_eq!(h.store.len() + ev.len(), 100, "set_capacity: evictions reported");
    assert_eq!(h.store.capacity(), target);
}

fn scan_and_random(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    assert_eq!(h.r(Command::RandomKey), Reply::Key(None), "random: empty");
    for i in 0..250 {
        h.set(&format!("user:{i}"), "x");
        h.set(&format!("other:{i}"), "x");
    }
    let mut seen = HashSet::new();
    let mut cursor = 0;
    let mut rounds = 0;
    loop {
        let Reply::Keys { cursor: next, keys } =
            h.r(Command::Scan { cursor, pattern: Some(Bytes::from_static(b"user:*")), count: 37 })
        else {
            panic!("scan: wrong reply")
        };
        for k in keys {
            assert!(k.starts_with(b"user:"), "scan: pattern filters");
            assert!(seen.insert(k), "scan: no duplicates without changes");
        }
        rounds += 1;
        assert!(rounds < 10_000, "scan: terminates");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 250, "scan: every matching key once");
    assert!(matches!(h.r(Command::RandomKey), Reply::Key(Some(_))), "random: some key");
    assert_eq!(h.r(Command::Size), Reply::Count(500), "size");
}

fn flush(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    for i in 0..50 {
        h.set(&format!("k{i}"), "v");
    }
    assert_eq!(h.w(Command::Flush), Reply::Ok);
    assert_eq!(h.store.len(), 0, "flush: empty");
    assert_eq!(h.store.used_bytes(), 0, "flush: no bytes");
    assert!(h.get("k1").is_none(), "flush: gone");
}

fn capture_is_point_in_time(build: Builder<'_>) {
    let mut h = Harness::new(build, 0);
    for i in 0..300 {
        h.set(&format!("k{i}"), "before");
    }
    let capture = h.store.begin_capture();
    // Writes after the capture began must not show in it.
    for i in 0..150 {
        h.set(&format!("k{i}"), "after");
    }
    h.w(Command::Delete { keys: (150..200).map(|i| key(&format!("k{i}"))).collect() });
    h.set("new", "after");
    let mut items = capture.finish();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(items.len(), 300, "capture: every item as of the start");
    assert!(items.iter().all(|(_, i)| &i.value[..] == b"before"), "capture: values as of the start");
    let second = h.store.begin_capture().finish();
    assert_eq!(second.len(), 251, "capture: a later capture sees the later state");
    h.w(Command::Flush);
    let capture = h.store.begin_capture();
    h.set("x", "y");
    assert!(capture.finish().is_empty(), "capture: empty store");
}

/// memcached's meta semantics: access records, explicit cas, invalidation,
/// the recache token, vivify, arithmetic and delayed flush.
fn memcached_meta(build: Builder<'_>) {
    use crate::command::{MetaArith, MetaGet};
    let mut h = Harness::new(build, 0);
    let t0 = h.st.now_ms;
    h.set("k", "v");
    // Reads report the previous access and mark the item fetched.
    let first = h.get("k").unwrap();
    assert!(!first.meta.fetched(), "meta: a fresh item was not fetched");
    h.st.now_ms = t0 + 3000;
    let second = h.get("k").unwrap();
    assert!(second.meta.fetched(), "meta: the second read sees the first");
    assert_eq!(second.meta.idle_secs(h.st.now_ms), 3, "meta: seconds since the last access");
    let peeked = h.r(Command::Inspect { key: key("k") });
    assert!(matches!(peeked, Reply::Value(Some(i)) if i.meta.idle_secs(t0 + 3000) == 0), "meta: inspect sees the read");
    // A touch keeps the cas.
    let cas = h.get("k").unwrap().cas;
    h.w(Command::GetAndTouch { keys: vec![key("k")], expiry: Expiry::In(60_000) });
    h.w(Command::Touch { key: key("k"), expiry: Expiry::In(50_000), condition: ExpireCondition::Always });
    assert_eq!(h.get("k").unwrap().cas, cas, "meta: touch keeps the cas");
    // Explicit cas.
    let mut s = SetCommand::new("e", "v");
    s.new_cas = Some(12345);
    assert!(matches!(h.w(Command::Set(s)), Reply::Stored { cas: 12345, .. }), "meta: explicit cas stored");
    assert_eq!(h.get("e").unwrap().cas, 12345, "meta: explicit cas kept");
    // Invalidate by delete: stale, new cas, first reader wins the token.
    let md = |k: &str, cas: Option<u64>, inv: Option<Expiry>| Command::MetaDelete {
        key: key(k),
        cas,
        invalidate: inv,
        new_cas: None,
    };
    assert_eq!(h.w(md("e", Some(1), None)), Reply::Exists, "meta: md with a wrong cas");
    assert_eq!(h.w(md("e", Some(12345), Some(Expiry::In(30_000)))), Reply::Ok, "meta: md invalidate");
    let stale = h.get("e").unwrap();
    assert!(stale.meta.stale() && !stale.meta.won() && stale.cas != 12345, "meta: invalidated item is stale");
    let mg = |k: &str| MetaGet { key: key(k), vivify: None, recache_ms: None, touch: None, new_cas: None };
    match h.w(Command::MetaGet(mg("e"))) {
        Reply::Meta { item: Some(i), won: true } => assert!(i.meta.stale() && !i.meta.won(), "meta: X W"),
        other => panic!("meta: stale get answered {other:?}"),
    }
    match h.w(Command::MetaGet(mg("e"))) {
        Reply::Meta { item: Some(i), won: false } => assert!(i.meta.stale() && i.meta.won(), "meta: Z X"),
        other => panic!("meta: second stale get answered {other:?}"),
    }
    // A set with an older cas and invalidate stores, stale; a plain set clears it.
    let mut older = SetCommand::new("e", "old");
    older.condition = Condition::IfCas(1);
    older.invalidate = true;
    assert!(matches!(h.w(Command::Set(older)), Reply::Stored { .. }), "meta: ms I with an older cas");
    assert!(h.get("e").unwrap().meta.stale(), "meta: stored stale");
    h.set("e", "fresh");
    let fresh = h.get("e").unwrap();
    assert!(!fresh.meta.stale() && !fresh.meta.won(), "meta: a set clears stale and won");
    // Vivify on miss: the first client wins, later ones see Z.
    let viv = MetaGet { vivify: Some(Expiry::In(30_000)), ..mg("v") };
    assert!(
        matches!(h.w(Command::MetaGet(viv.clone())), Reply::Meta { item: Some(i), won: true } if i.value.is_empty()),
        "meta: vivify wins"
    );
    assert!(
        matches!(h.w(Command::MetaGet(viv)), Reply::Meta { item: Some(i), won: false } if i.meta.won()),
        "meta: vivified item was already won"
    );
    assert_eq!(h.w(Command::MetaGet(mg("none"))), Reply::Meta { item: None, won: false }, "meta: plain miss");
    // Recache when the TTL is below the threshold; touch reports the new deadline.
    let mut r = SetCommand::new("r", "v");
    r.expiry = Expiry::In(100_000);
    h.w(Command::Set(r));
    let recache = |ms| MetaGet { recache_ms: Some(ms), ..mg("r") };
    assert!(matches!(h.w(Command::MetaGet(recache(50_000))), Reply::Meta { won: false, .. }), "meta: R above ttl");
    assert!(matches!(h.w(Command::MetaGet(recache(200_000))), Reply::Meta { won: true, .. }), "meta: R below ttl");
    assert!(matches!(h.w(Command::MetaGet(recache(200_000))), Reply::Meta { won: false, .. }), "meta: R once");
    let now = h.st.now_ms;
    let touched = MetaGet { touch: Some(Expiry::In(500_000)), ..mg("r") };
    assert!(
        matches!(h.w(Command::MetaGet(touched)), Reply::Meta { item: Some(i), .. } if i.expires_at == now + 500_000),
        "meta: T updates the ttl"
    );
    // Arithmetic.
    let ma =
        |decr, delta, vivify| MetaArith { key: key("n"), decr, delta, cas: None, new_cas: None, vivify, touch: None };
    assert_eq!(h.w(Command::MetaArith(ma(false, 1, None))), Reply::NotFound, "meta: ma miss");
    let value = |r: Reply| match r {
        Reply::Value(Some(i)) => String::from_utf8(i.value.to_vec()).unwrap(),
        other => panic!("meta: ma answered {other:?}"),
    };
    assert_eq!(value(h.w(Command::MetaArith(ma(false, 1, Some((Expiry::Never, 10)))))), "10", "meta: ma vivify");
    assert_eq!(value(h.w(Command::MetaArith(ma(true, 100, None)))), "0", "meta: ma decr stops at 0");
    assert_eq!(value(h.w(Command::MetaArith(ma(true, 1, None)))), "0", "meta: ma decr at 0");
    assert_eq!(value(h.w(Command::MetaArith(ma(false, u64::MAX, None)))), u64::MAX.to_string(), "meta: ma incr");
    assert_eq!(value(h.w(Command::MetaArith(ma(false, 2, None)))), "1", "meta: ma incr wraps");
    let cas = h.get("n").unwrap().cas;
    let guarded = MetaArith { cas: Some(cas + 1), ..ma(false, 1, None) };
    assert_eq!(h.w(Command::MetaArith(guarded)), Reply::Exists, "meta: ma cas mismatch");
    h.set("n", "x");
    assert_eq!(
        h.w(Command::MetaArith(ma(false, 1, None))),
        Reply::Error(CommandError::NonNumeric),
        "meta: ma non-numeric"
    );
    // Delayed flush caps deadlines; later items are not affected.
    h.set("p", "v");
    let now = h.st.now_ms;
    h.w(Command::FlushAfter { delay_ms: 10_000 });
    h.set("later", "v");
    assert_eq!(h.get("p").unwrap().expires_at, now + 10_000, "meta: flush_all delay caps the deadline");
    h.st.now_ms = now + 10_000;
    assert!(h.get("p").is_none() && h.get("n").is_none(), "meta: flushed after the delay");
    assert!(h.get("later").is_some(), "meta: items stored after the flush survive");
}
