//! Decoding keys and values as slices of the buffer they arrive in.
//!
//! serde's own `Bytes` decoding copies every byte string into an allocation
//! of its own. A raft follower decodes every write twice that way (the log
//! entry, then each key and value inside it), and each copy is freed again
//! when the log is compacted. Inside [`decode_from`] the byte strings of
//! [`Command`](crate::Command) that lie within the given buffer and are
//! small ([`PACK_LIMIT`](crate::store::PACK_LIMIT) bytes at most) become
//! slices of it instead: a reference count, no allocation, no copy. Large
//! ones are still copied, so that a stored large value never keeps a whole
//! network frame alive: the same split, by the same test, as
//! [`crate::command::detach_large`] makes (stores copy small values into
//! their own entries anyway).
//!
//! Outside [`decode_from`], or for bytes that are not in its buffer (a
//! decoder that unescapes, JSON), the functions here copy exactly as the
//! `bytes` crate's own `Deserialize` does. They are used through
//! `#[serde(deserialize_with = ...)]` on the command model's fields.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{self, SeqAccess, Visitor};

use crate::command::is_small;

thread_local! {
    /// The buffer of the innermost [`decode_from`] running on this thread.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `source` as the buffer that small decoded byte
/// strings may share (see the module docs). Calls nest: the innermost
/// buffer is used, and the outer one is back when `decode` returns or
/// unwinds.
pub fn decode_from<R>(source: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(source.clone()))));
    decode()
}

/// `data` as a slice of the current [`decode_from`] buffer when it lies
/// within it (whatever its size), or `None`.
pub fn slice_of_source(data: &[u8]) -> Option<Bytes> {
    SOURCE.with(|s| {
        let s = s.borrow();
        let source = s.as_ref()?;
        let (outer, inner) = (source.as_ptr_range(), data.as_ptr_range());
        (!data.is_empty() && outer.start <= inner.start && inner.end <= outer.end).then(|| source.slice_ref(data))
    })
}

/// A decoded byte string: shared when small and within the source, copied otherwise.
fn share(data: &[u8]) -> Bytes {
    if is_small(data)
        && let Some(b) = slice_of_source(data)
    {
        return b;
    }
    Bytes::copy_from_slice(data)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(share(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(share(v.as_bytes()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

/// One byte string (`deserialize_with` for a `Bytes` field).
pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

/// A list of byte strings (`deserialize_with` for a `Vec<Bytes>` field).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
    struct Seed;
    impl<'de> de::DeserializeSeed<'de> for Seed {
        type Value = Bytes;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Bytes, D::Error> {
            bytes(d)
        }
    }
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<Bytes>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of byte strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Bytes>, A::Error> {
            // Bounded: the length is the sender's claim.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element_seed(Seed)? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(ListVisitor)
}

/// An optional byte string (`deserialize_with` for an `Option<Bytes>` field).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Bytes>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an optional byte string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<Bytes>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<Bytes>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Bytes>, D::Error> {
            bytes(d).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, SetCommand};
    use crate::store::PACK_LIMIT;

    fn inside(outer: &Bytes, b: &Bytes) -> bool {
        let r = outer.as_ptr_range();
        r.start <= b.as_ptr() && b.as_ptr() < r.end
    }

    #[test]
    fn small_fields_share_the_source_and_large_ones_are_copied() {
        let large = vec![b'v'; PACK_LIMIT + 1];
        let commands = vec![
            Command::Set(SetCommand::new("key", "small value")),
            Command::Set(SetCommand::new("big", large.clone())),
            Command::Delete { keys: vec!["a".into(), "b".into()] },
            Command::Scan { cursor: 0, pattern: Some("p*".into()), count: 10 },
        ];
        let wire = Bytes::from(postcard::to_allocvec(&commands).unwrap());
        let back: Vec<Command> = decode_from(&wire, || postcard::from_bytes(&wire)).unwrap();
        assert_eq!(back, commands);
        let (Command::Set(small), Command::Set(big), Command::Delete { keys }, Command::Scan { pattern, .. }) =
            (&back[0], &back[1], &back[2], &back[3])
        else {
            panic!("{back:?}")
        };
        assert!(inside(&wire, &small.key) && inside(&wire, &small.value));
        assert!(inside(&wire, &big.key), "a small key beside a large value is shared");
        assert!(!inside(&wire, &big.value), "a large value has its own copy");
        assert!(keys.iter().all(|k| inside(&wire, k)));
        assert!(inside(&wire, pattern.as_ref().unwrap()));
        // Outside decode_from nothing is shared.
        let copied: Vec<Command> = postcard::from_bytes(&wire).unwrap();
        let Command::Set(s) = &copied[0] else { panic!() };
        assert!(!inside(&wire, &s.key));
    }

    #[test]
    fn the_source_is_restored_after_nesting_and_unwinding() {
        let outer = Bytes::from_static(b"outer buffer");
        let inner = Bytes::from_static(b"inner buffer");
        decode_from(&outer, || {
            decode_from(&inner, || assert!(slice_of_source(&inner[..5]).is_some()));
            assert!(slice_of_source(&inner[..5]).is_none());
            assert!(slice_of_source(&outer[..5]).is_some());
            let caught = std::panic::catch_unwind(|| decode_from(&inner, || panic!("decoder failed")));
            assert!(caught.is_err());
            assert!(slice_of_source(&outer[..5]).is_some());
        });
        assert!(slice_of_source(&outer[..5]).is_none());
    }

    #[test]
    fn other_formats_decode_as_before() {
        // JSON: byte strings as arrays of numbers (serde's own encoding).
        let c = Command::Set(SetCommand::new("k", "v"));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
        let none = Command::Scan { cursor: 3, pattern: None, count: 1 };
        let json = serde_json::to_string(&none).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), none);
    }
}
