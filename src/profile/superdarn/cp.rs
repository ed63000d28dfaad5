//! The control-program name table of the SuperDARN real-time server: a fitacf record's `cp`
//! number to the sounding mode the display shows, as `"<name>(<cp>)"`.
//!
//! The original (`vtsuperdarn/superdarn-realtime-data`, `app/data_processing/process_dmap.py`,
//! `convert_cp_to_text`, taken from SuperDARN Canada's realtimedisplay) maps 44 numbers to 22
//! names and every other number to `unknown`. This is that table, entry for entry.
//!
//! Thread: pure, any thread.

/// The name the original shows for control program `cp`, `unknown` for any number not in its
/// table.
pub fn cp_name(cp: i64) -> &'static str {
    match cp {
        -26401 | -26009 | -26008 | -26007 | -26006 | -26005 | -26004 | -26002 | -6401 | 152
        | 153 => "stereoscan",
        155 | 157 => "normalsound",
        150 | 151 => "normalscan",
        200 => "rbspscan",
        3200 => "risrscan",
        3250..=3253 => "twotsg",
        3300 => "themisscan",
        3333 => "ddstest",
        3350 | -3350 => "ulfscan",
        3370 => "epopsound",
        3375 => "longsound",
        3380 => "politescan",
        3400 => "fivepulse",
        3450 => "heatsound",
        3500..=3503 | -3503..=-3502 => "twofsound",
        3520 | 3521 => "uafsound",
        3550 => "twofonebm",
        3600 | 3601 => "tauscan_can",
        8510 | 8511 => "ltuseqscan",
        9211 => "pcpscan",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_of_the_original_table() {
        let table: &[(i64, &str)] = &[
            (-26401, "stereoscan"),
            (-26009, "stereoscan"),
            (-26008, "stereoscan"),
            (-26007, "stereoscan"),
            (-26006, "stereoscan"),
            (-26005, "stereoscan"),
            (-26004, "stereoscan"),
            (-26002, "stereoscan"),
            (-6401, "stereoscan"),
            (152, "stereoscan"),
            (153, "stereoscan"),
            (157, "normalsound"),
            (3200, "risrscan"),
            (3250, "twotsg"),
            (3251, "twotsg"),
            (3252, "twotsg"),
            (3253, "twotsg"),
            (3333, "ddstest"),
            (3370, "epopsound"),
            (3375, "longsound"),
            (3380, "politescan"),
            (3400, "fivepulse"),
            (3450, "heatsound"),
            (3500, "twofsound"),
            (3501, "twofsound"),
            (3520, "uafsound"),
            (3521, "uafsound"),
            (3550, "twofonebm"),
            (3600, "tauscan_can"),
            (3601, "tauscan_can"),
            (8510, "ltuseqscan"),
            (8511, "ltuseqscan"),
            (9211, "pcpscan"),
            (150, "normalscan"),
            (151, "normalscan"),
            (155, "normalsound"),
            (3300, "themisscan"),
            (200, "rbspscan"),
            (3502, "twofsound"),
            (3503, "twofsound"),
            (-3502, "twofsound"),
            (-3503, "twofsound"),
            (3350, "ulfscan"),
            (-3350, "ulfscan"),
        ];
        assert_eq!(table.len(), 44);
        for &(cp, name) in table {
            assert_eq!(cp_name(cp), name, "{cp}");
        }
    }

    #[test]
    fn neighbours_and_others_are_unknown() {
        for cp in [
            0,
            1,
            -1,
            154,
            156,
            3249,
            3254,
            3501 - 2,
            3504,
            -3501,
            -3504,
            -26003,
            9999,
        ] {
            assert_eq!(cp_name(cp), "unknown", "{cp}");
        }
    }
}
