//! The OsirisChunk a `Deliver` frame carries: a 48-byte header, then `num_entries` entries,
//! each a simple entry (one message) or a sub-batch (several messages, maybe compressed).
//!
//! Layout (big-endian; `osiris_log.erl` in rabbitmq/osiris, and PROTOCOL.adoc "Deliver"):
//! `magic/version: u8` (0x5_ magic in the high nibble), `chunk type: u8` (0 user, 1 tracking
//! delta, 2 tracking snapshot), `num entries: u16`, `num records: u32`, `timestamp: i64` (ms),
//! `epoch: u64`, `first offset: u64` (the offset of the chunk's first record), `crc: u32`,
//! `data length: u32`, `trailer length: u32`, `reserved: u32` (its first byte is the bloom
//! filter size on 3.13+; the server does not send the filter or the trailer to consumers).
//! Entries: high bit 0: a simple entry, `size: u31` then the message; high bit 1: a sub-batch,
//! `compression: 3 bits`, 4 reserved bits, `records: u16`, `uncompressed length: u32`,
//! `length: u32`, then `length` bytes, which uncompressed are `records × (size: u32, message)`.
//!
//! Invariants: every length is checked against the bytes that are left (a lie is a
//! [`ChunkError`], never a panic or an allocation of the announced size); records get offsets
//! `first offset + i` in order, compressed sub-batches included (their records are skipped, not
//! renumbered); a record count above the header's `num records` is an error.
//!
//! Thread: pure, any thread (the stream source's driver).

use super::codec::{CodecError, Reader};

/// Bytes in a chunk header.
pub const HEADER_LEN: usize = 48;

/// The chunk type of user messages; tracking chunks carry no messages for consumers.
pub const CHUNK_TYPE_USER: u8 = 0;

/// Compression type of an uncompressed sub-batch.
pub const COMPRESSION_NONE: u8 = 0;

/// Why a chunk could not be read (the peer's fault, or corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A field or entry runs past the end of the chunk.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The first byte is not an Osiris chunk magic (0x5_).
    #[error("bad chunk magic/version byte {0:#04x}")]
    BadMagic(u8),
    /// Entries hold more records than the header announced.
    #[error("chunk holds more records than its header's {0}")]
    TooManyRecords(u32),
}

/// The chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Magic (high nibble, 5) and format version (low nibble).
    pub magic_version: u8,
    /// 0 user, 1 tracking delta, 2 tracking snapshot.
    pub chunk_type: u8,
    /// Entries (simple entries and sub-batches) in the data section.
    pub num_entries: u16,
    /// Records (messages), counting each sub-batch's records.
    pub num_records: u32,
    /// When the chunk was written, ms since the epoch (`ess_timestamp`).
    pub timestamp: i64,
    /// Leader epoch.
    pub epoch: u64,
    /// The offset of the first record.
    pub first_offset: u64,
    /// CRC-32 of the data section (not checked: TCP and the broker already check).
    pub crc: u32,
    /// Bytes of entries.
    pub data_len: u32,
    /// Bytes of trailer (on disk; not sent to consumers).
    pub trailer_len: u32,
}

/// One record position in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A message at `offset`: its AMQP 1.0 encoded bytes.
    Record {
        /// Stream offset.
        offset: u64,
        /// The message.
        message: &'a [u8],
    },
    /// A compressed sub-batch this reader does not decompress: `records` offsets from
    /// `first_offset` are skipped.
    Skipped {
        /// Offset of the sub-batch's first record.
        first_offset: u64,
        /// How many records it holds.
        records: u16,
        /// Its compression type (1 gzip, 2 snappy, 3 lz4, 4 zstd).
        compression: u8,
    },
}

/// A parsed chunk: the header, the entries read, and the error that stopped the read, if any
/// (entries before it are still good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The header.
    pub header: ChunkHeader,
    /// Records in offset order.
    pub entries: Vec<Entry<'a>>,
    /// Why the read stopped early.
    pub error: Option<ChunkError>,
}

impl ChunkHeader {
    /// Offset just after the chunk's last record.
    pub fn end_offset(&self) -> u64 {
        self.first_offset
            .saturating_add(u64::from(self.num_records))
    }
}

/// Parses a chunk. An unreadable header is an error; a bad entry stops the read and is
/// reported in [`Chunk::error`].
pub fn parse(bytes: &[u8]) -> Result<Chunk<'_>, ChunkError> {
    let mut r = Reader::new(bytes);
    let magic_version = r.u8("chunk magic")?;
    if magic_version >> 4 != 5 {
        return Err(ChunkError::BadMagic(magic_version));
    }
    let header = ChunkHeader {
        magic_version,
        chunk_type: r.u8("chunk type")?,
        num_entries: r.u16("num entries")?,
        num_records: r.u32("num records")?,
        timestamp: r.i64("timestamp")?,
        epoch: r.u64("epoch")?,
        first_offset: r.u64("first offset")?,
        crc: r.u32("crc")?,
        data_len: r.u32("data length")?,
        trailer_len: r.u32("trailer length")?,
    };
    r.u32("reserved")?;
    let mut entries = Vec::new();
    let error = if header.chunk_type == CHUNK_TYPE_USER {
        read_entries(&mut r, &header, &mut entries).err()
    } else {
        None
    };
    Ok(Chunk {
        header,
        entries,
        error,
    })
}

fn read_entries<'a>(
    r: &mut Reader<'a>,
    h: &ChunkHeader,
    out: &mut Vec<Entry<'a>>,
) -> Result<(), ChunkError> {
    let data_len = usize::try_from(h.data_len).map_err(|_| CodecError::Truncated {
        what: "data section",
    })?;
    let mut data = Reader::new(r.take(data_len, "data section")?);
    let mut index: u32 = 0;
    let mut next = |n: u32| -> Result<u64, ChunkError> {
        let i = index;
        index = index
            .checked_add(n)
            .filter(|&e| e <= h.num_records)
            .ok_or(ChunkError::TooManyRecords(h.num_records))?;
        Ok(h.first_offset.saturating_add(u64::from(i)))
    };
    for _ in 0..h.num_entries {
        let first = data.u8("entry header")?;
        if first & 0x80 == 0 {
            data.pos -= 1;
            let size = data.u32("entry size")? & 0x7fff_ffff;
            let size =
                usize::try_from(size).map_err(|_| CodecError::Truncated { what: "entry" })?;
            let message = data.take(size, "entry")?;
            out.push(Entry::Record {
                offset: next(1)?,
                message,
            });
            continue;
        }
        let compression = (first >> 4) & 0x07;
        let records = data.u16("sub-batch records")?;
        let _uncompressed = data.u32("sub-batch uncompressed length")?;
        let len = data.u32("sub-batch length")?;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated { what: "sub-batch" })?;
        let body = data.take(len, "sub-batch")?;
        let first_offset = next(u32::from(records))?;
        if compression != COMPRESSION_NONE {
            out.push(Entry::Skipped {
                first_offset,
                records,
                compression,
            });
            continue;
        }
        let mut batch = Reader::new(body);
        for i in 0..records {
            let size = batch.u32("sub-batch record size")?;
            let size = usize::try_from(size).map_err(|_| CodecError::Truncated {
                what: "sub-batch record",
            })?;
            out.push(Entry::Record {
                offset: first_offset.saturating_add(u64::from(i)),
                message: batch.take(size, "sub-batch record")?,
            });
        }
    }
    Ok(())
}

/// Builds a chunk: a test and fuzzing helper (`entries` are already encoded entries).
pub fn build(
    first_offset: u64,
    timestamp: i64,
    num_entries: u16,
    num_records: u32,
    entries: &[u8],
) -> Vec<u8> {
    let mut c = vec![0x50, CHUNK_TYPE_USER];
    c.extend_from_slice(&num_entries.to_be_bytes());
    c.extend_from_slice(&num_records.to_be_bytes());
    c.extend_from_slice(&timestamp.to_be_bytes());
    c.extend_from_slice(&1u64.to_be_bytes());
    c.extend_from_slice(&first_offset.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    let len = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    c.extend_from_slice(entries);
    c
}

/// Encodes one simple entry: a test helper.
pub fn simple_entry(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX) & 0x7fff_ffff;
    let mut e = len.to_be_bytes().to_vec();
    e.extend_from_slice(message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub_batch(compression: u8, records: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for r in records {
            body.extend_from_slice(&u32::try_from(r.len()).unwrap().to_be_bytes());
            body.extend_from_slice(r);
        }
        let mut e = vec![0x80 | (compression << 4)];
        e.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
        e.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        e.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn header_and_simple_entries() {
        let mut entries = simple_entry(b"one");
        entries.extend(simple_entry(b""));
        let bytes = build(10, 1_700_000_000_123, 2, 2, &entries);
        let c = parse(&bytes).expect("parses");
        assert_eq!(c.header.timestamp, 1_700_000_000_123);
        assert_eq!(c.header.first_offset, 10);
        assert_eq!(c.header.end_offset(), 12);
        assert_eq!(c.header.magic_version, 0x50);
        assert_eq!(c.error, None);
        assert_eq!(
            c.entries,
            vec![
                Entry::Record {
                    offset: 10,
                    message: b"one"
                },
                Entry::Record {
                    offset: 11,
                    message: b""
                }
            ]
        );
    }

    #[test]
    fn uncompressed_sub_batches_are_read_and_compressed_ones_skipped() {
        let mut entries = sub_batch(0, &[b"a", b"bc"]);
        entries.extend(sub_batch(1, &[b"gz", b"gz", b"gz"]));
        entries.extend(simple_entry(b"z"));
        let bytes = build(100, 0, 3, 6, &entries);
        let c = parse(&bytes).expect("parses");
        assert_eq!(c.error, None);
        assert_eq!(
            c.entries,
            vec![
                Entry::Record {
                    offset: 100,
                    message: b"a"
                },
                Entry::Record {
                    offset: 101,
                    message: b"bc"
                },
                Entry::Skipped {
                    first_offset: 102,
                    records: 3,
                    compression: 1
                },
                Entry::Record {
                    offset: 105,
                    message: b"z"
                },
            ]
        );
    }

    #[test]
    fn bytes_after_the_data_section_are_ignored() {
        let mut bytes = build(0, 0, 1, 1, &simple_entry(b"m"));
        bytes.extend_from_slice(b"trailer or bloom");
        let c = parse(&bytes).expect("parses");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.error, None);
    }

    #[test]
    fn tracking_chunks_yield_nothing() {
        let mut bytes = build(0, 0, 1, 1, &simple_entry(b"m"));
        bytes[1] = 1;
        assert_eq!(parse(&bytes).expect("parses").entries, vec![]);
    }

    #[test]
    fn lies_are_errors() {
        assert_eq!(parse(b"\x40"), Err(ChunkError::BadMagic(0x40)));
        assert!(matches!(parse(b"\x50\0\0"), Err(ChunkError::Codec(_))));
        // An entry bigger than the data section.
        let mut e = simple_entry(b"abc");
        e[3] = 200;
        let b = build(0, 0, 1, 1, &e);
        let c = parse(&b).expect("header parses");
        assert!(matches!(c.error, Some(ChunkError::Codec(_))));
        // A data length past the end of the chunk.
        let mut bytes = build(0, 0, 1, 1, &simple_entry(b"m"));
        bytes[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&bytes).expect("header").error.is_some());
        // More records than announced: the first is kept, then the error.
        let mut entries = simple_entry(b"1");
        entries.extend(simple_entry(b"2"));
        let b = build(0, 0, 2, 1, &entries);
        let c = parse(&b).expect("header");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.error, Some(ChunkError::TooManyRecords(1)));
        // A sub-batch whose records overrun its body.
        let mut sb = sub_batch(0, &[b"abcd"]);
        sb[11..15].copy_from_slice(&9u32.to_be_bytes());
        let b = build(0, 0, 1, 1, &sb);
        let c = parse(&b).expect("header");
        assert!(c.error.is_some());
        // More entries announced than there are.
        let b = build(0, 0, 5, 5, &simple_entry(b"x"));
        let c = parse(&b).expect("header");
        assert_eq!(c.entries.len(), 1);
        assert!(c.error.is_some());
    }
}
