//! Fuzzes the RESP request parser with invariants, not just "no panic":
//!
//! 1. parsing never panics and always makes progress or asks for more input;
//! 2. feeding the same bytes in two chunks (split where the first input byte
//!    says) yields the same requests and the same error as feeding them whole;
//! 3. every parsed request, re-encoded as a multibulk, parses back to itself.
//!
//! Run: `cargo fuzz run resp_parser -s none` in `plugins/redis/fuzz`.

#![no_main]

use bytes::BytesMut;
use gerdu_protocol_redis::codec::{Limits, encode_request, parse};
use libfuzzer_sys::fuzz_target;

type Parsed = (Vec<Vec<Vec<u8>>>, Option<String>);

fn drain(buf: &mut BytesMut, limits: &Limits, out: &mut Parsed) -> bool {
    loop {
        let before = buf.len();
        match parse(buf, limits) {
            Ok(Some(args)) => {
                assert!(buf.len() < before, "a parsed request consumes input");
                out.0.push(args.iter().map(|a| a.to_vec()).collect());
            }
            Ok(None) => return true,
            Err(e) => {
                out.1 = Some(e.0);
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bulk: 4096, max_args: 64, max_inline: 1024 };
    let Some((&split, input)) = data.split_first() else { return };

    let mut whole = Parsed::default();
    drain(&mut BytesMut::from(input), &limits, &mut whole);

    let cut = usize::from(split) % (input.len() + 1);
    let mut chunked = Parsed::default();
    let mut buf = BytesMut::from(&input[..cut]);
    if drain(&mut buf, &limits, &mut chunked) {
        buf.extend_from_slice(&input[cut..]);
        drain(&mut buf, &limits, &mut chunked);
    }
    // An error found early (a bad length line) may be the same error later;
    // requests before it must agree.
    assert_eq!(whole.0, chunked.0, "chunking changed the requests");
    assert_eq!(whole.1.is_some(), chunked.1.is_some(), "chunking changed the error");

    for args in whole.0.iter().filter(|a| !a.is_empty()) {
        let mut again = Parsed::default();
        drain(
            &mut BytesMut::from(&encode_request(args)[..]),
            &Limits { max_bulk: usize::MAX, max_args: usize::MAX, ..limits },
            &mut again,
        );
        assert_eq!(again.0, vec![args.clone()], "re-encoded request parses back");
    }
});
