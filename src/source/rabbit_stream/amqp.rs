//! The body of an AMQP 1.0 encoded message, as RabbitMQ stores every message in a stream
//! (also those published over AMQP 0-9-1: the payload becomes one `data` section).
//!
//! A message is a sequence of sections, each a described type: `0x00`, a descriptor (ulong
//! `0x53 xx` / `0x80 u64`, or its symbolic name), then a value. Sections: header 0x70,
//! delivery-annotations 0x71, message-annotations 0x72, properties 0x73,
//! application-properties 0x74, data 0x75 (binary), amqp-sequence 0x76, amqp-value 0x77,
//! footer 0x78. The body the original ESS forwarded is the `data` bytes (several `data`
//! sections are concatenated), or an `amqp-value` that is a string or binary; other sections
//! are skipped by their encoded width.
//!
//! Invariants: every size is checked against the bytes left (an overrun is an error, never a
//! panic); nothing is allocated for a single `data` section (the body borrows the message);
//! descriptor nesting is bounded ([`MAX_DESCRIPTOR_DEPTH`]).
//!
//! Thread: pure, any thread (the stream source's driver).

use std::borrow::Cow;

use super::codec::{CodecError, Reader};

/// How deep a descriptor may itself be described before the message is refused (real
/// messages use depth 1).
pub const MAX_DESCRIPTOR_DEPTH: u32 = 4;

/// Why a message body could not be extracted (a malformed or unusual message; the message is
/// dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmqpError {
    /// A value runs past the end of the message.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A byte that is not an AMQP 1.0 constructor, or a section that is not a described type.
    #[error("bad AMQP 1.0 constructor {0:#04x}")]
    BadConstructor(u8),
    /// Descriptors nested deeper than [`MAX_DESCRIPTOR_DEPTH`].
    #[error("descriptors nested too deep")]
    TooDeep,
    /// The body is an `amqp-sequence`, or an `amqp-value` that is neither a string nor a
    /// binary: the original had no text for it either.
    #[error("unsupported body section")]
    UnsupportedBody,
}

/// Section codes (the descriptor's ulong).
const SECTION_DATA: u64 = 0x75;
const SECTION_SEQUENCE: u64 = 0x76;
const SECTION_VALUE: u64 = 0x77;

/// The message's body bytes: the `data` sections' bytes, or an `amqp-value` string or binary.
/// A message without a body section has an empty body.
pub fn body(message: &[u8]) -> Result<Cow<'_, [u8]>, AmqpError> {
    let mut r = Reader::new(message);
    let mut body: Option<Cow<'_, [u8]>> = None;
    while r.remaining() > 0 {
        let c = r.u8("section")?;
        if c != 0x00 {
            return Err(AmqpError::BadConstructor(c));
        }
        let code = descriptor_code(&mut r)?;
        match code {
            Some(SECTION_DATA) => {
                let bytes = binary(&mut r)?;
                body = Some(match body {
                    None => Cow::Borrowed(bytes),
                    Some(prev) => {
                        let mut joined = prev.into_owned();
                        joined.extend_from_slice(bytes);
                        Cow::Owned(joined)
                    }
                });
            }
            Some(SECTION_VALUE) => {
                let c = r.u8("amqp-value")?;
                let bytes = match c {
                    0xa0 | 0xa1 => sized(&mut r, 1)?,
                    0xb0 | 0xb1 => sized(&mut r, 4)?,
                    _ => return Err(AmqpError::UnsupportedBody),
                };
                body = Some(Cow::Borrowed(bytes));
            }
            Some(SECTION_SEQUENCE) => return Err(AmqpError::UnsupportedBody),
            _ => skip_value(&mut r, 0)?,
        }
    }
    Ok(body.unwrap_or(Cow::Borrowed(&[])))
}

/// Reads a section descriptor: its ulong code, or the code of its symbolic name; `None` for a
/// descriptor this reader does not know (the section is skipped).
fn descriptor_code(r: &mut Reader<'_>) -> Result<Option<u64>, AmqpError> {
    let c = r.u8("descriptor")?;
    Ok(match c {
        0x53 => Some(u64::from(r.u8("descriptor")?)),
        0x80 => Some(r.u64("descriptor")?),
        0x44 => Some(0),
        0xa3 | 0xb3 => {
            let name = sized(r, if c == 0xa3 { 1 } else { 4 })?;
            match name {
                b"amqp:data:binary" => Some(SECTION_DATA),
                b"amqp:amqp-sequence:list" => Some(SECTION_SEQUENCE),
                b"amqp:amqp-value:*" => Some(SECTION_VALUE),
                _ => None,
            }
        }
        _ => {
            skip_after_constructor(r, c, 1)?;
            None
        }
    })
}

/// A `data` section's binary (vbin8 0xa0 or vbin32 0xb0).
fn binary<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], AmqpError> {
    match r.u8("data")? {
        0xa0 => sized(r, 1),
        0xb0 => sized(r, 4),
        c => Err(AmqpError::BadConstructor(c)),
    }
}

/// A variable-width value's bytes after its 1- or 4-byte size.
fn sized<'a>(r: &mut Reader<'a>, width: u8) -> Result<&'a [u8], AmqpError> {
    let len = if width == 1 {
        usize::from(r.u8("size")?)
    } else {
        usize::try_from(r.u32("size")?).map_err(|_| CodecError::Truncated { what: "size" })?
    };
    Ok(r.take(len, "value")?)
}

/// Skips one encoded value, whatever its type.
fn skip_value(r: &mut Reader<'_>, depth: u32) -> Result<(), AmqpError> {
    let c = r.u8("constructor")?;
    skip_after_constructor(r, c, depth)
}

/// Skips the rest of a value whose constructor byte `c` was read. The high nibble gives the
/// width class (AMQP 1.0 part 1, 1.6: fixed 0/1/2/4/8/16 bytes, variable or compound with a
/// 1- or 4-byte size).
fn skip_after_constructor(r: &mut Reader<'_>, c: u8, depth: u32) -> Result<(), AmqpError> {
    let fixed = match c >> 4 {
        0x0 if c == 0x00 => {
            if depth >= MAX_DESCRIPTOR_DEPTH {
                return Err(AmqpError::TooDeep);
            }
            skip_value(r, depth + 1)?; // descriptor
            return skip_value(r, depth + 1); // value
        }
        0x4 => 0,
        0x5 => 1,
        0x6 => 2,
        0x7 => 4,
        0x8 => 8,
        0x9 => 16,
        0xa | 0xc | 0xe => return sized(r, 1).map(drop),
        0xb | 0xd | 0xf => return sized(r, 4).map(drop),
        _ => return Err(AmqpError::BadConstructor(c)),
    };
    r.take(fixed, "fixed-width value")?;
    Ok(())
}

/// Encodes a message of the sections RabbitMQ writes for an AMQP 0-9-1 publish around a `data`
/// body (a test and fuzzing helper).
pub fn encode_data_message(body: &[u8]) -> Vec<u8> {
    // header: durable=true
    let mut m = vec![0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41];
    // message-annotations: {x-exchange: "event-streams"}
    let mut ann = vec![0x02, 0xa3, 0x0a];
    ann.extend_from_slice(b"x-exchange");
    ann.extend_from_slice(&[0xa1, 0x0d]);
    ann.extend_from_slice(b"event-streams");
    m.extend_from_slice(&[0x00, 0x53, 0x72, 0xc1]);
    m.push(u8::try_from(ann.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(&ann);
    // properties: empty list
    m.extend_from_slice(&[0x00, 0x53, 0x73, 0x45]);
    m.extend_from_slice(&[0x00, 0x53, 0x75]);
    match u8::try_from(body.len()) {
        Ok(n) => m.extend_from_slice(&[0xa0, n]),
        Err(_) => {
            m.push(0xb0);
            let n = u32::try_from(body.len()).unwrap_or(u32::MAX);
            m.extend_from_slice(&n.to_be_bytes());
        }
    }
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_body_inside_the_sections_rabbitmq_writes() {
        let m = encode_data_message(b"{\"a\": 1}");
        assert_eq!(body(&m).unwrap(), &b"{\"a\": 1}"[..]);
        let big = vec![b'x'; 300];
        assert_eq!(body(&encode_data_message(&big)).unwrap(), &big[..]);
    }

    #[test]
    fn every_section_kind_is_skipped_and_data_sections_concatenate() {
        let mut m = Vec::new();
        m.extend_from_slice(&[0x00, 0x53, 0x70, 0x45]); // header: list0
        m.extend_from_slice(&[0x00, 0x53, 0x71, 0xc1, 0x01, 0x00]); // delivery-annotations
        m.extend_from_slice(&[0x00, 0x53, 0x73, 0xd0, 0, 0, 0, 5, 0, 0, 0, 1, 0x40]); // list32
        m.extend_from_slice(&[0x00, 0x53, 0x74, 0xd1, 0, 0, 0, 4, 0, 0, 0, 0]); // map32
        m.extend_from_slice(&[0x00, 0x53, 0x75, 0xa0, 0x02, b'h', b'e']);
        m.extend_from_slice(&[0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x75, 0xb0, 0, 0, 0, 3]);
        m.extend_from_slice(b"llo");
        m.extend_from_slice(&[0x00, 0x53, 0x78, 0xc1, 0x01, 0x00]); // footer
        assert_eq!(body(&m).unwrap(), &b"hello"[..]);
    }

    #[test]
    fn amqp_value_strings_and_binaries_are_bodies() {
        let m = [0x00, 0x53, 0x77, 0xa1, 0x02, b'h', b'i'];
        assert_eq!(body(&m).unwrap(), &b"hi"[..]);
        let m = [0x00, 0x53, 0x77, 0xb0, 0, 0, 0, 1, b'x'];
        assert_eq!(body(&m).unwrap(), &b"x"[..]);
        let mut m = vec![0x00, 0xa3, 0x11];
        m.extend_from_slice(b"amqp:amqp-value:*");
        m.extend_from_slice(&[0xa1, 0x01, b'y']);
        assert_eq!(body(&m).unwrap(), &b"y"[..]);
        let m = [0x00, 0x53, 0x77, 0x71, 0, 0, 0, 1];
        assert_eq!(body(&m), Err(AmqpError::UnsupportedBody));
        let m = [0x00, 0x53, 0x76, 0x45];
        assert_eq!(body(&m), Err(AmqpError::UnsupportedBody));
    }

    #[test]
    fn no_body_section_is_an_empty_body() {
        assert_eq!(body(&[]).unwrap(), &b""[..]);
        assert_eq!(body(&[0x00, 0x53, 0x70, 0x45]).unwrap(), &b""[..]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(body(&[0x41]), Err(AmqpError::BadConstructor(0x41)));
        assert!(matches!(
            body(&[0x00, 0x53, 0x75, 0xa0, 0x09, b'x']),
            Err(AmqpError::Codec(_))
        ));
        assert!(matches!(
            body(&[0x00, 0x53, 0x75, 0xb0, 0xff, 0xff, 0xff, 0xff]),
            Err(AmqpError::Codec(_))
        ));
        assert_eq!(
            body(&[0x00, 0x53, 0x75, 0x41]),
            Err(AmqpError::BadConstructor(0x41))
        );
        // A section of an unknown descriptor whose value is itself deeply described.
        let mut m = vec![0x00, 0x53, 0x79];
        m.extend(std::iter::repeat_n(0x00, 10));
        assert_eq!(body(&m), Err(AmqpError::TooDeep));
        assert!(matches!(body(&[0x00, 0x53]), Err(AmqpError::Codec(_))));
        assert_eq!(
            body(&[0x00, 0x53, 0x70, 0x20]),
            Err(AmqpError::BadConstructor(0x20))
        );
    }
}
