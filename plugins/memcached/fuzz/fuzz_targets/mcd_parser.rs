//! Fuzzes the memcached request parser with invariants, not just "no panic":
//!
//! 1. parsing never panics, and every frame consumes input (no endless loop);
//! 2. feeding the same bytes in two chunks (split where the first input byte
//!    says) yields the same frames as feeding them whole;
//! 3. keys of parsed requests are valid memcached keys, and data blocks are
//!    never longer than the item limit.
//!
//! Run: `cargo fuzz run mcd_parser -s none` in `plugins/memcached/fuzz`.

#![no_main]

use bytes::BytesMut;
use gerdu_protocol_memcached::codec::{Frame, Limits, Req, parse, valid_key};
use libfuzzer_sys::fuzz_target;

fn drain(buf: &mut BytesMut, limits: &Limits, out: &mut Vec<Frame>) {
    while let Some(f) = parse(buf, limits) {
        if let Frame::Error { close: true, .. } = f {
            out.push(f);
            return;
        }
        out.push(f);
    }
}

fn check(frame: &Frame, limits: &Limits) {
    let Frame::Req(req) = frame else { return };
    match req {
        Req::Get { keys, .. } | Req::Gat { keys, .. } => assert!(keys.iter().all(|k| valid_key(k))),
        Req::Store { key, data, .. } => {
            assert!(valid_key(key));
            assert!(data.len() <= limits.max_item);
        }
        Req::Delete { key, .. } | Req::Arith { key, .. } | Req::Touch { key, .. } => assert!(valid_key(key)),
        Req::Meta(m) => {
            assert!(!m.key.is_empty() && m.key.len() <= 250);
            assert!(m.data.len() <= limits.max_item);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_item: 256, max_line: 1024 };
    let Some((&split, input)) = data.split_first() else { return };

    let mut whole = Vec::new();
    drain(&mut BytesMut::from(input), &limits, &mut whole);
    whole.iter().for_each(|f| check(f, &limits));

    let cut = usize::from(split) % (input.len() + 1);
    let mut chunked = Vec::new();
    let mut buf = BytesMut::from(&input[..cut]);
    drain(&mut buf, &limits, &mut chunked);
    if !matches!(chunked.last(), Some(Frame::Error { close: true, .. })) {
        buf.extend_from_slice(&input[cut..]);
        drain(&mut buf, &limits, &mut chunked);
    }
    // A swallow count depends on how much of the block had arrived; compare
    // everything else.
    let norm = |v: &[Frame]| -> Vec<Frame> {
        v.iter()
            .map(|f| match f {
                Frame::Error { text, noreply, close, .. } => {
                    Frame::Error { text, noreply: *noreply, swallow: 0, close: *close }
                }
                other => other.clone(),
            })
            .collect()
    };
    if !whole.iter().chain(&chunked).any(|f| matches!(f, Frame::Error { swallow: 1.., .. })) {
        assert_eq!(norm(&whole), norm(&chunked), "chunking changed the frames");
    }
});
