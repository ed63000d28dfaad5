//! shortuuid-compatible ids: a random (version 4) UUID written as 22 base57 digits.
//!
//! Pure, any thread. The Squonk2 ESS named its event streams with Python's `shortuuid.uuid()`:
//! `uuid4()` as an integer, written most significant digit first in the alphabet below (no
//! `0`, `1`, `I`, `O`, `l`), padded to 22 digits with the alphabet's first character. 57^22 is
//! above 2^128, so 22 digits always suffice. The 128 bits come from the OS (`getrandom`, the
//! same source as Python's `uuid4`); the version and variant bits are set as in a UUID v4, so
//! 122 bits are random.

/// shortuuid's default alphabet (57 characters, sorted).
pub const ALPHABET: &[u8; 57] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Length of an id in characters.
pub const LEN: usize = 22;

/// A new random id; `Err` only if the OS has no randomness to give (never on Linux after boot).
pub fn new() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(encode(uuid4_bits(bytes)))
}

/// The UUID v4 made from 16 random bytes: version 4 and the RFC 4122 variant set.
fn uuid4_bits(mut bytes: [u8; 16]) -> u128 {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    u128::from_be_bytes(bytes)
}

/// `n` as [`LEN`] base57 digits, most significant first (shortuuid's `int_to_string` with
/// padding).
pub fn encode(mut n: u128) -> String {
    let mut digits = [ALPHABET[0]; LEN];
    for slot in digits.iter_mut().rev() {
        // `n % 57` is below 57, so the index is in range.
        *slot = ALPHABET[(n % 57) as usize];
        n /= 57;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// True when `s` looks like an id from [`new`]: 22 characters of the alphabet.
pub fn is_valid(s: &str) -> bool {
    s.len() == LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_python_shortuuid() {
        // shortuuid.encode(uuid.UUID(int=0)) and the largest value.
        assert_eq!(encode(0), "2222222222222222222222");
        assert_eq!(encode(56), "222222222222222222222z");
        assert_eq!(encode(57), "2222222222222222222232");
        assert_eq!(encode(u128::MAX).len(), LEN);
        assert!(is_valid(&encode(u128::MAX)));
    }

    #[test]
    fn new_ids_are_valid_uuid4_and_differ() {
        let a = new().expect("randomness");
        let b = new().expect("randomness");
        assert!(is_valid(&a) && is_valid(&b), "{a} {b}");
        assert_ne!(a, b);
        let bits = uuid4_bits([0xff; 16]);
        assert_eq!((bits >> 76) & 0xf, 4, "version nibble");
        assert_eq!((bits >> 62) & 0x3, 0b10, "variant bits");
        assert!(!is_valid("0000000000000000000000"));
    }
}
