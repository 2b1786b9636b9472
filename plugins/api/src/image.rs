//! The store image: one binary encoding of every item, used by raft
//! snapshots and by backups.
//!
//! An **image** is `magic "GERDUSN2", cas u64, last_now u64, count u64`, then
//! per item `key_len u32, key, value_len u32, value, flags u32, meta u32,
//! cas u64, expires_at u64` (little endian), where `meta` holds only the
//! replicated bits ([`ItemMeta::replicated`]). [`ImageWriter`] writes one
//! while a capture is visited; [`decode_image`] reads one back.
//!
//! A **backup** (`GET /backup`) is written as it is sent, so its count comes
//! last: `magic "GERDUBK2", applied_index u64, created_ms u64, cas u64,
//! last_now u64`, the items (encoded as in an image), then `count u64,
//! crc32 u32`, where the crc covers every byte before it. [`BackupWriter`]
//! hands it out in chunks. [`decode_backup`] also reads the snapshot file a
//! node keeps in its `-storage` directory (`magic "GERDUSF1", meta_len u32,
//! meta, image, crc32 u32`), so a copy of that file is a backup too.

use bytes::{Buf, BufMut, Bytes};

use crate::{Item, ItemMeta};

/// First bytes of an image.
pub const IMAGE_MAGIC: &[u8; 8] = b"GERDUSN2";
/// First bytes of a backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"GERDUBK2";
/// First bytes of the snapshot file kept in a `-storage` directory.
pub const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"GERDUSF1";

/// State that must be identical on every replica besides the items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// Last cas unique handed out.
    pub cas: u64,
    /// Latest entry timestamp applied.
    pub last_now: u64,
}

/// Writes an image as items are visited; the count is filled in at the end.
pub struct ImageWriter {
    buf: Vec<u8>,
    count: u64,
}

impl ImageWriter {
    /// A writer with room for about `size_hint` bytes of items.
    pub fn new(meta: &ImageMeta, size_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(32 + size_hint);
        buf.extend_from_slice(IMAGE_MAGIC);
        buf.put_u64_le(meta.cas);
        buf.put_u64_le(meta.last_now);
        buf.put_u64_le(0);
        ImageWriter { buf, count: 0 }
    }

    /// Appends one item.
    pub fn push(&mut self, key: &[u8], item: &Item) {
        put_item(&mut self.buf, key, item);
        self.count += 1;
    }

    /// Items pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The image.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[24..32].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// One item as images and backups hold it.
fn put_item(buf: &mut Vec<u8>, key: &[u8], item: &Item) {
    buf.put_u32_le(key.len() as u32);
    buf.extend_from_slice(key);
    buf.put_u32_le(item.value.len() as u32);
    buf.extend_from_slice(&item.value);
    buf.put_u32_le(item.flags);
    buf.put_u32_le(item.meta.replicated().0);
    buf.put_u64_le(item.cas);
    buf.put_u64_le(item.expires_at);
}

/// Reads one item (see [`put_item`]); `detach` gives the key and value
/// allocations of their own instead of slices of `b`.
fn take_item(b: &mut Bytes, detach: bool) -> Result<(Bytes, Item), String> {
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n { Err("truncated".to_string()) } else { Ok(()) }
    };
    let own = |part: Bytes| if detach { crate::exec::detach(&part) } else { part };
    need(b, 4)?;
    let klen = b.get_u32_le() as usize;
    need(b, klen.saturating_add(4))?;
    let key = own(b.split_to(klen));
    let vlen = b.get_u32_le() as usize;
    need(b, vlen.saturating_add(24))?;
    let value = own(b.split_to(vlen));
    let flags = b.get_u32_le();
    let meta = ItemMeta(b.get_u32_le());
    Ok((key, Item { value, flags, meta, cas: b.get_u64_le(), expires_at: b.get_u64_le() }))
}

/// Decodes an image into its meta and items. Each key and value gets its own
/// allocation: no item pins the whole buffer for as long as it lives.
pub fn decode_image(data: Bytes) -> Result<(ImageMeta, Vec<(Bytes, Item)>), String> {
    let mut b = data;
    if b.remaining() < 32 {
        return Err("image truncated".into());
    }
    if &b[..8] != IMAGE_MAGIC {
        return Err("not a gerdu image".into());
    }
    b.advance(8);
    let meta = ImageMeta { cas: b.get_u64_le(), last_now: b.get_u64_le() };
    let count = b.get_u64_le();
    // Every item takes at least 32 bytes: a count the data cannot hold is a lie.
    if count > (b.remaining() / 32) as u64 {
        return Err("image truncated".into());
    }
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        items.push(take_item(&mut b, true).map_err(|e| format!("image {e}"))?);
    }
    if b.has_remaining() {
        return Err("trailing bytes after the image".into());
    }
    Ok((meta, items))
}

/// Writes a backup as items are visited and hands it out in chunks of
/// about [`BackupWriter::CHUNK`] bytes, so that a backup of any size takes
/// one chunk of memory, not a copy of the store.
pub struct BackupWriter {
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    count: u64,
}

impl BackupWriter {
    /// Bytes gathered before [`BackupWriter::chunk`] hands them out.
    pub const CHUNK: usize = 1 << 20;

    /// A backup of the state at `applied_index` (whose replica metadata is
    /// `meta`), taken at `created_ms`.
    pub fn new(applied_index: u64, created_ms: u64, meta: &ImageMeta) -> Self {
        let mut buf = Vec::with_capacity(Self::CHUNK + 4096);
        buf.extend_from_slice(BACKUP_MAGIC);
        for word in [applied_index, created_ms, meta.cas, meta.last_now] {
            buf.put_u64_le(word);
        }
        BackupWriter { buf, crc: crc32fast::Hasher::new(), count: 0 }
    }

    /// Appends one item.
    pub fn push(&mut self, key: &[u8], item: &Item) {
        put_item(&mut self.buf, key, item);
        self.count += 1;
    }

    /// Items pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bytes gathered so far, once there are [`Self::CHUNK`] of them.
    pub fn chunk(&mut self) -> Option<Bytes> {
        (self.buf.len() >= Self::CHUNK).then(|| {
            let out = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK + 4096));
            self.crc.update(&out);
            Bytes::from(out)
        })
    }

    /// The last chunk: what is left, the count and the checksum.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_u64_le(self.count);
        self.crc.update(&self.buf);
        let crc = self.crc.finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(self.buf)
    }
}

/// A decoded backup.
#[derive(Debug)]
pub struct Backup {
    /// The log index the data is the state at (0 for a storage snapshot
    /// file, whose position is in its own metadata).
    pub applied_index: u64,
    /// When it was taken (unix ms; 0 for a storage snapshot file).
    pub created_ms: u64,
    /// The replica metadata at that point.
    pub meta: ImageMeta,
    /// Every item; keys and values are slices of the file (nothing copied).
    pub items: Vec<(Bytes, Item)>,
}

/// Reads a backup file, or a `-storage` snapshot file, checking its checksum
/// (and, for a backup, its count) before anything else.
pub fn decode_backup(data: Bytes) -> Result<Backup, String> {
    if data.len() < 12 {
        return Err("too short for a gerdu backup".into());
    }
    let (body, tail) = data.split_at(data.len() - 4);
    let checked = || {
        if crc32fast::hash(body).to_le_bytes() == tail { Ok(()) } else { Err("checksum mismatch".to_string()) }
    };
    match &data[..8] {
        m if m == BACKUP_MAGIC => {
            if body.len() < 48 {
                return Err("backup truncated".into());
            }
            checked()?;
            let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
            let (applied_index, created_ms) = (word(8), word(16));
            let meta = ImageMeta { cas: word(24), last_now: word(32) };
            let count = word(body.len() - 8);
            let mut b = data.slice(40..body.len() - 8);
            let mut items = Vec::with_capacity(count.min(b.len() as u64 / 32) as usize);
            while b.has_remaining() {
                items.push(take_item(&mut b, false).map_err(|e| format!("backup item {e}"))?);
            }
            if items.len() as u64 != count {
                return Err(format!("backup holds {} items, its trailer says {count}", items.len()));
            }
            Ok(Backup { applied_index, created_ms, meta, items })
        }
        m if m == SNAPSHOT_FILE_MAGIC => {
            checked()?;
            let meta_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
            let at = 12usize.saturating_add(meta_len);
            if body.len() < at {
                return Err("snapshot file truncated".into());
            }
            let (meta, items) = decode_image(data.slice(at..data.len() - 4))?;
            Ok(Backup { applied_index: 0, created_ms: 0, meta, items })
        }
        _ => Err("not a gerdu backup (nor a -storage snapshot file)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u64) -> Item {
        Item {
            value: Bytes::from(format!("v{i}")),
            flags: i as u32,
            meta: ItemMeta::default().with_stale(i.is_multiple_of(2)),
            cas: i,
            expires_at: i * 7,
        }
    }

    #[test]
    fn backup_round_trip_and_damage() {
        let meta = ImageMeta { cas: 9, last_now: 77 };
        let mut w = BackupWriter::new(42, 1_000, &meta);
        let mut file = Vec::new();
        for i in 0..50 {
            // Long values: the file comes out in several chunks.
            let mut it = item(i);
            it.value = Bytes::from(vec![b'a' + (i % 26) as u8; BackupWriter::CHUNK / 20]);
            w.push(format!("k{i}").as_bytes(), &it);
            if let Some(chunk) = w.chunk() {
                file.extend_from_slice(&chunk);
            }
        }
        assert_eq!(w.count(), 50);
        file.extend_from_slice(&w.finish());
        let b = decode_backup(Bytes::from(file.clone())).unwrap();
        assert_eq!((b.applied_index, b.created_ms, &b.meta), (42, 1_000, &meta));
        assert_eq!(b.items.len(), 50);
        for (i, (k, it)) in b.items.iter().enumerate() {
            assert_eq!(k, &Bytes::from(format!("k{i}")));
            assert_eq!(it.value, Bytes::from(vec![b'a' + (i % 26) as u8; BackupWriter::CHUNK / 20]));
            assert_eq!((it.flags, it.expires_at), (i as u32, i as u64 * 7));
        }
        // Any one flipped byte is caught by the checksum.
        for at in [0, 9, 30, file.len() / 2, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            assert!(decode_backup(Bytes::from(bad)).is_err(), "flip at {at}");
        }
        assert!(decode_backup(Bytes::from(file[..file.len() - 5].to_vec())).is_err());
        assert!(decode_backup(Bytes::from_static(b"garbage, not a backup")).is_err());
    }

    #[test]
    fn a_storage_snapshot_file_reads_as_a_backup() {
        let mut w = ImageWriter::new(&ImageMeta::default(), 0);
        w.push(b"k", &item(3));
        let image = w.finish();
        let meta = b"opaque";
        let mut file = SNAPSHOT_FILE_MAGIC.to_vec();
        file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        file.extend_from_slice(meta);
        file.extend_from_slice(&image);
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(&crc.to_le_bytes());
        let b = decode_backup(Bytes::from(file)).unwrap();
        assert_eq!(b.items.len(), 1);
        assert_eq!(b.items[0].1.value, item(3).value);
    }

    #[test]
    fn lying_counts_and_lengths_are_errors_not_panics() {
        let mut w = ImageWriter::new(&ImageMeta::default(), 0);
        w.push(b"key", &item(1));
        let image = w.finish();
        let mut huge_count = image.clone();
        huge_count[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_image(Bytes::from(huge_count)).is_err());
        let mut huge_key = image.clone();
        huge_key[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_image(Bytes::from(huge_key)).is_err());
        assert!(decode_image(Bytes::from(image)).is_ok());
    }
}
