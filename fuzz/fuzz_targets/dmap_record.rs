//! Arbitrary bytes through the DMAP record decoder, as one record and as concatenated records.
//! It may not panic, loop or allocate more than the input justifies; a record it accepts must
//! re-encode to the very same bytes (the writer is RST's layout, and decoding loses nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::source::radar::dmap;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = dmap::parse(data) {
        // Empty arrays do not keep their type byte, and a header code other than DATACODE is
        // not kept either: compare only when neither happened.
        let typed = record.arrays.iter().all(|(_, a)| !a.values.is_empty());
        if typed && data.get(..4) == Some(&dmap::DATACODE.to_le_bytes()[..]) {
            assert_eq!(dmap::write(&record), data);
        }
    }
    let _ = dmap::parse_all(data);
});
