//! The weppcloud preflight frame: a run's readiness checklist and lock map, computed from the
//! run's Redis hash (`HGETALL <runid>` on DB 0) and written as Python's `json.dumps` writes it.
//!
//! ```text
//! {"type": "preflight", "checklist": {"sbs_map": false, "channels": true, ...}, "lock_statuses": {"watershed": false, ...}}
//! ```
//!
//! The rules come from the legacy Tornado server (`preflight()` and `lock_statuses()` in
//! weppcloud2 `microservices/preflight-docker/preflight_server.py` and wepppy
//! `wepppy/microservices/preflight.py`) and, behind [`PreflightOptions::extended`], from the Go
//! rewrite (`Evaluate` in wepppy `services/preflight2/internal/checklist/checklist.go`).
//! COMPAT.md section 1.3 has the table.
//!
//! Invariants:
//!
//! - Without `extended` the output is exactly the legacy checklist: the same thirteen keys in
//!   the same order, the same rules, even where preflight2 differs (`outlet`, `wepp`, `soils`,
//!   `dss_export`).
//! - A timestamp comparison is true only when both sides read as integers and the first is
//!   larger (the legacy `_safe_gt`). A missing field is not an integer.
//! - Integers are read as Python's `int()` reads a `str`: surrounding Unicode whitespace,
//!   an optional sign, ASCII digits with single underscores, any size (compared exactly, with
//!   no overflow). Gap: Python also accepts non-ASCII decimal digits (`"١٢٣"`); here they are
//!   not integers. RedisPrep writes `int(time.time())`, so neither case occurs in practice.
//!   The same reading is used in extended mode, where preflight2's `strconv.ParseInt` would
//!   reject whitespace, underscores and values beyond `i64`.
//! - Fields are looked up as a Python dict built from the HGETALL pairs would: if a name
//!   repeats (Redis never does this), the last value wins.
//! - `lock_statuses` follows the route's [`LockStyle`]: `legacy` is the legacy six keys byte
//!   for byte, `dynamic` is preflight2's key set, `both` (the default) is the six keys followed
//!   by every other `locked:<name>` field. A key never appears twice in the object.
//! - Pure: no I/O, appends to the caller's buffer, never panics on any bytes.
//!
//! The file is past the 300-line soft ceiling because most of it is unit tests of the rules;
//! the rules themselves are one table and the lock styles.

use bytes::Bytes;
use indexmap::IndexMap;

use super::pyjson::{self, ITEM_SEP, KEY_SEP};

/// Which flavour of the preflight frame to produce. The default is the route default: the
/// legacy checklist and [`LockStyle::Both`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PreflightOptions {
    /// Adds preflight2's extra checklist keys and uses its variants of the shared rules
    /// (COMPAT 1.3). Off: the legacy checklist, byte for byte.
    pub extended: bool,
    /// Which keys `lock_statuses` carries.
    pub locks: LockStyle,
}

/// Which keys `lock_statuses` carries (route key `locks`).
///
/// The two weppcloud pages look locks up differently: the older class-based page reads the six
/// fixed legacy keys, the current `preflight.js` reads `*.nodb` file names (its
/// `LOCKABLE_FILES`). Browsers ignore keys they do not look up, so [`LockStyle::Both`] serves
/// both pages and is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LockStyle {
    /// The legacy Tornado server's six fixed keys `watershed, climate, wepp, soils, landuse,
    /// disturbed`, in that order, each `locked:<key> == "true"`. Byte-identical to legacy.
    Legacy,
    /// Every `locked:<name>` field as `name: value == "true"`, in hash order (preflight2).
    Dynamic,
    /// The six fixed keys first, in the legacy order, each true when `locked:<key>` or
    /// `locked:<key>.nodb` is `"true"` (so the old page also works with today's publisher);
    /// then every `locked:<name>` field in hash order, as [`LockStyle::Dynamic`] has it, except
    /// a field whose name is itself a fixed key: that key is already there (its value folded
    /// in), so no key ever appears twice.
    #[default]
    Both,
}

impl LockStyle {
    /// Every style, in [`LockStyle::index`] order.
    pub const ALL: [LockStyle; 3] = [LockStyle::Legacy, LockStyle::Dynamic, LockStyle::Both];

    /// Parses the config value (`legacy`, `dynamic`, `both`).
    pub fn parse(s: &str) -> Option<LockStyle> {
        LockStyle::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The style's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LockStyle::Legacy => "legacy",
            LockStyle::Dynamic => "dynamic",
            LockStyle::Both => "both",
        }
    }

    /// The style's position in [`LockStyle::ALL`] (for [`crate::router::Format`] bits).
    pub fn index(self) -> usize {
        match self {
            LockStyle::Legacy => 0,
            LockStyle::Dynamic => 1,
            LockStyle::Both => 2,
        }
    }
}

/// The legacy lock keys, in the legacy order. Each is `locked:<key> == "true"`.
const LEGACY_LOCKS: [&str; 6] = [
    "watershed",
    "climate",
    "wepp",
    "soils",
    "landuse",
    "disturbed",
];

/// The hash field prefix of every task timestamp RedisPrep writes.
const TIMESTAMP_PREFIX: &[u8] = b"timestamps:";

/// The hash field prefix of the NoDb lock flags.
const LOCK_PREFIX: &[u8] = b"locked:";

/// The suffix of a NoDb file name (`locked:wepp.nodb`), which [`LockStyle::Both`] folds into
/// the fixed key (`wepp`).
const NODB_SUFFIX: &[u8] = b".nodb";

/// Computes the checklist, in the legacy key order, with preflight2's extra keys appended in
/// preflight2's order when `extended` is set.
///
/// An empty `fields` (a run with no hash) gives every key `false`.
pub fn checklist(fields: &[(Bytes, Bytes)], extended: bool) -> Vec<(&'static str, bool)> {
    let run = RunHash { fields };
    let basis = Basis::new(&run, extended);
    let mut list = legacy_rules(&run, &basis);
    if extended {
        list.extend(extended_rules(&run, &basis));
    }
    list
}

/// Computes `lock_statuses` in `style` (see [`LockStyle`] for the keys and their order).
///
/// Dynamic names are decoded lossily; like preflight2, a bare `locked:` with an empty name is
/// skipped. Names that repeat (only possible after lossy decoding) keep their first position
/// and their last value, as a Python dict would.
pub fn lock_statuses(fields: &[(Bytes, Bytes)], style: LockStyle) -> Vec<(String, bool)> {
    let run = RunHash { fields };
    let mut locks = IndexMap::new();
    if style != LockStyle::Dynamic {
        for key in LEGACY_LOCKS {
            let nodb = style == LockStyle::Both && run.locked_nodb(key);
            locks.insert(key.to_owned(), run.locked(key) || nodb);
        }
    }
    if style != LockStyle::Legacy {
        for (name, value) in fields {
            let Some(lock) = name.strip_prefix(LOCK_PREFIX).filter(|n| !n.is_empty()) else {
                continue;
            };
            let lock = String::from_utf8_lossy(lock);
            if style == LockStyle::Both && LEGACY_LOCKS.contains(&lock.as_ref()) {
                // Already a fixed key, whose value includes this field's.
                continue;
            }
            locks.insert(lock.into_owned(), is_true(value));
        }
    }
    locks.into_iter().collect()
}

/// Appends the full preflight frame (checklist and lock statuses) in `json.dumps` default
/// style. An empty `fields` is a missing run: all `false`, and `{}` for dynamic locks (the
/// legacy and the both styles then render the same six `false` keys).
pub fn render(out: &mut Vec<u8>, fields: &[(Bytes, Bytes)], opts: PreflightOptions) {
    let list = checklist(fields, opts.extended);
    let locks = lock_statuses(fields, opts.locks);
    out.extend_from_slice(b"{\"type\": \"preflight\", \"checklist\": ");
    write_bool_object(out, list.iter().map(|&(k, v)| (k.as_bytes(), v)));
    out.extend_from_slice(b", \"lock_statuses\": ");
    write_bool_object(out, locks.iter().map(|(k, v)| (k.as_bytes(), *v)));
    out.push(b'}');
}

/// The legacy thirteen keys. `basis` carries the preflight2 substitutions when extended.
fn legacy_rules(run: &RunHash<'_>, basis: &Basis<'_>) -> Vec<(&'static str, bool)> {
    let channels = run.ts("build_channels");
    let watershed = run.ts("abstract_watershed");
    let landuse = run.ts("build_landuse");
    let soils = run.ts("build_soils");
    let climate = run.ts("build_climate");
    let after_inputs = |t: Option<PyInt<'_>>| gt(t, landuse) && gt(t, soils) && gt(t, climate);
    let after_wepp = |task: &str| {
        let t = run.ts(task);
        after_inputs(t) && gt(t, basis.wepp)
    };
    let soils_after_cover = gt(soils, landuse) || gt(soils, basis.rangeland_cover);
    vec![
        ("sbs_map", run.get(b"attrs:has_sbs").is_some_and(is_true)),
        ("channels", run.has_ts("build_channels")),
        ("outlet", gt(basis.outlet, channels)),
        ("subcatchments", gt(watershed, channels)),
        ("landuse", gt(landuse, watershed)),
        ("soils", gt(soils, watershed) && soils_after_cover),
        ("climate", gt(climate, watershed)),
        ("rap_ts", gt(run.ts("build_rap_ts"), climate)),
        ("wepp", after_inputs(basis.wepp)),
        ("observed", after_wepp("run_observed")),
        ("debris", after_wepp("run_debris")),
        ("watar", after_wepp("run_watar")),
        ("dss_export", gt(run.ts("dss_export"), basis.dss_reference)),
    ]
}

/// preflight2's extra keys, in the order its `Evaluate` declares them.
fn extended_rules(run: &RunHash<'_>, basis: &Basis<'_>) -> [(&'static str, bool); 5] {
    [
        ("rangeland_cover", run.ts_non_empty("build_rangeland_cover")),
        (
            "openet_ts",
            gt(run.ts("build_openet_ts"), run.ts("build_climate")),
        ),
        ("rhem", run.ts_non_empty("run_rhem")),
        (
            "omni_scenarios",
            gt(run.ts("run_omni_scenarios"), basis.wepp),
        ),
        ("run_path_ce", gt(run.ts("run_path_ce"), basis.wepp)),
    ]
}

/// The timestamps on which legacy and preflight2 disagree, picked once per evaluation.
struct Basis<'a> {
    /// Legacy: `set_outlet`. preflight2: the larger of `set_outlet` and `find_outlet` that
    /// read as integers.
    outlet: Option<PyInt<'a>>,
    /// Legacy: `run_wepp`. preflight2: the first non-empty of `run_wepp_watershed`, `run_wepp`
    /// (a non-empty but non-integer `run_wepp_watershed` hides `run_wepp`, as in Go).
    wepp: Option<PyInt<'a>>,
    /// Legacy: `None`, so `soils` must follow `build_landuse`. preflight2:
    /// `build_rangeland_cover`, which `soils` may follow instead.
    rangeland_cover: Option<PyInt<'a>>,
    /// What `dss_export` must be newer than. Legacy: `run_wepp`. preflight2: the largest of
    /// `run_watar`, `run_wepp_watershed`, `run_wepp`.
    dss_reference: Option<PyInt<'a>>,
}

impl<'a> Basis<'a> {
    /// Picks the legacy or the preflight2 variant of each disputed timestamp.
    fn new(run: &RunHash<'a>, extended: bool) -> Self {
        if !extended {
            return Self {
                outlet: run.ts("set_outlet"),
                wepp: run.ts("run_wepp"),
                rangeland_cover: None,
                dss_reference: run.ts("run_wepp"),
            };
        }
        let wepp = ["run_wepp_watershed", "run_wepp"]
            .iter()
            .find_map(|task| run.ts_raw(task).filter(|v| !v.is_empty()))
            .and_then(PyInt::parse);
        Self {
            outlet: run.max_ts(&["set_outlet", "find_outlet"]),
            wepp,
            rangeland_cover: run.ts("build_rangeland_cover"),
            dss_reference: run.max_ts(&["run_watar", "run_wepp_watershed", "run_wepp"]),
        }
    }
}

/// A read-only view of the run hash with Python dict lookup semantics (last value wins).
struct RunHash<'a> {
    /// The HGETALL pairs, in hash order.
    fields: &'a [(Bytes, Bytes)],
}

impl<'a> RunHash<'a> {
    /// The value of the field named `name`, if present.
    fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.find(|field| field == name)
    }

    /// The raw value of `timestamps:<task>`, if present.
    fn ts_raw(&self, task: &str) -> Option<&'a [u8]> {
        self.find(|field| field.strip_prefix(TIMESTAMP_PREFIX) == Some(task.as_bytes()))
    }

    /// `timestamps:<task>` read as an integer; `None` when missing or not an integer.
    fn ts(&self, task: &str) -> Option<PyInt<'a>> {
        self.ts_raw(task).and_then(PyInt::parse)
    }

    /// Whether the field `timestamps:<task>` exists, whatever its value (legacy `in prep`).
    fn has_ts(&self, task: &str) -> bool {
        self.ts_raw(task).is_some()
    }

    /// Whether `timestamps:<task>` exists and is not empty (preflight2's `prep[k] != ""`).
    fn ts_non_empty(&self, task: &str) -> bool {
        self.ts_raw(task).is_some_and(|v| !v.is_empty())
    }

    /// The largest of the named timestamps that read as integers (preflight2 `maxTimestamp`).
    fn max_ts(&self, tasks: &[&str]) -> Option<PyInt<'a>> {
        tasks
            .iter()
            .filter_map(|task| self.ts(task))
            .reduce(|best, t| if t.greater_than(&best) { t } else { best })
    }

    /// Whether `locked:<key> == "true"`.
    fn locked(&self, key: &str) -> bool {
        self.find(|field| field.strip_prefix(LOCK_PREFIX) == Some(key.as_bytes()))
            .is_some_and(is_true)
    }

    /// Whether `locked:<key>.nodb == "true"` (the NoDb file name today's publisher uses).
    fn locked_nodb(&self, key: &str) -> bool {
        self.find(|field| {
            let name = field.strip_prefix(LOCK_PREFIX);
            name.and_then(|n| n.strip_prefix(key.as_bytes())) == Some(NODB_SUFFIX)
        })
        .is_some_and(is_true)
    }

    /// The value of the last field whose name satisfies `matches`.
    fn find(&self, matches: impl Fn(&[u8]) -> bool) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .rev()
            .find(|(field, _)| matches(field))
            .map(|(_, value)| &value[..])
    }
}

/// An integer as Python's `int(str)` reads it, kept as decimal digits so that values of any
/// size compare exactly.
#[derive(Debug, Clone, Copy)]
struct PyInt<'a> {
    /// True for a value below zero (never for zero, so `-0` equals `0`).
    negative: bool,
    /// The magnitude's digits with leading zeros removed; may hold single underscores between
    /// digits. Empty for zero.
    digits: &'a [u8],
}

impl<'a> PyInt<'a> {
    /// Reads `raw` as `int()` would, or `None` where Python raises `ValueError`.
    fn parse(raw: &'a [u8]) -> Option<Self> {
        let text = core::str::from_utf8(raw).ok()?.trim();
        let (negative, digits) = pyjson::split_int_literal(text.as_bytes())?;
        let first = digits.iter().position(|&b| b != b'0' && b != b'_');
        let digits = first.map_or(&digits[..0], |i| &digits[i..]);
        Some(Self {
            negative: negative && !digits.is_empty(),
            digits,
        })
    }

    /// Whether `self > other`.
    fn greater_than(&self, other: &Self) -> bool {
        match (self.negative, other.negative) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.magnitude_cmp(other).is_gt(),
            (true, true) => self.magnitude_cmp(other).is_lt(),
        }
    }

    /// Compares absolute values: more significant digits is larger, then digit by digit.
    fn magnitude_cmp(&self, other: &Self) -> core::cmp::Ordering {
        let digits = |n: &Self| n.digits.iter().filter(|&&b| b != b'_');
        let len = |n: &Self| digits(n).count();
        len(self)
            .cmp(&len(other))
            .then_with(|| digits(self).cmp(digits(other)))
    }
}

/// The legacy `_safe_gt`: true only when both sides are integers and `a > b`.
fn gt(a: Option<PyInt<'_>>, b: Option<PyInt<'_>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.greater_than(&b),
        _ => false,
    }
}

/// Python's `value == "true"`.
fn is_true(value: &[u8]) -> bool {
    value == b"true"
}

/// Appends `{"k": true, "k2": false}` in `json.dumps` default style (`{}` when empty).
fn write_bool_object<'k>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'k [u8], bool)>) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.extend_from_slice(ITEM_SEP);
        }
        pyjson::write_str(out, key);
        out.extend_from_slice(KEY_SEP);
        pyjson::write_bool(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::profile::test_hash as hash;

    /// The checklist value for `key`; panics (test only) when the key is absent.
    fn check(fields: &[(Bytes, Bytes)], extended: bool, key: &str) -> bool {
        let list = checklist(fields, extended);
        let found = list.iter().find(|(k, _)| *k == key);
        found.map(|&(_, v)| v).expect("checklist key present")
    }

    fn rendered(fields: &[(Bytes, Bytes)], opts: PreflightOptions) -> String {
        let mut out = Vec::new();
        render(&mut out, fields, opts);
        String::from_utf8(out).expect("preflight frame is ASCII")
    }

    const LEGACY_KEYS: [&str; 13] = [
        "sbs_map",
        "channels",
        "outlet",
        "subcatchments",
        "landuse",
        "soils",
        "climate",
        "rap_ts",
        "wepp",
        "observed",
        "debris",
        "watar",
        "dss_export",
    ];

    /// A run where every legacy step ran once, in order, one second apart.
    fn complete_run() -> Vec<(Bytes, Bytes)> {
        hash(&[
            ("attrs:has_sbs", "true"),
            ("timestamps:build_channels", "100"),
            ("timestamps:set_outlet", "101"),
            ("timestamps:abstract_watershed", "102"),
            ("timestamps:build_landuse", "103"),
            ("timestamps:build_soils", "104"),
            ("timestamps:build_climate", "105"),
            ("timestamps:build_rap_ts", "106"),
            ("timestamps:run_wepp", "107"),
            ("timestamps:run_observed", "108"),
            ("timestamps:run_debris", "108"),
            ("timestamps:run_watar", "108"),
            ("timestamps:dss_export", "109"),
        ])
    }

    #[test]
    fn missing_run_renders_all_false_exactly_like_python() {
        // json.dumps({"type": "preflight", "checklist": preflight({}),
        //             "lock_statuses": lock_statuses({})})
        let expected = concat!(
            r#"{"type": "preflight", "checklist": {"sbs_map": false, "channels": false, "#,
            r#""outlet": false, "subcatchments": false, "landuse": false, "soils": false, "#,
            r#""climate": false, "rap_ts": false, "wepp": false, "observed": false, "#,
            r#""debris": false, "watar": false, "dss_export": false}, "lock_statuses": "#,
            r#"{"watershed": false, "climate": false, "wepp": false, "soils": false, "#,
            r#""landuse": false, "disturbed": false}}"#
        );
        let legacy = PreflightOptions {
            extended: false,
            locks: LockStyle::Legacy,
        };
        assert_eq!(rendered(&[], legacy), expected);
        // Without lock fields the default (both) style is the legacy one.
        assert_eq!(rendered(&[], PreflightOptions::default()), expected);
        let dynamic = PreflightOptions {
            extended: false,
            locks: LockStyle::Dynamic,
        };
        assert!(rendered(&[], dynamic).ends_with(r#""lock_statuses": {}}"#));
    }

    #[test]
    fn complete_run_is_all_true_in_legacy_order() {
        let list = checklist(&complete_run(), false);
        let keys: Vec<&str> = list.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, LEGACY_KEYS);
        assert!(list.iter().all(|(_, v)| *v), "{list:?}");
    }

    #[test]
    fn channels_is_presence_and_sbs_map_is_exact_true() {
        let run = hash(&[("timestamps:build_channels", ""), ("attrs:has_sbs", "True")]);
        assert!(check(&run, false, "channels"));
        assert!(!check(&run, false, "sbs_map"));
        assert!(!check(
            &hash(&[("attrs:has_sbs", "false")]),
            false,
            "sbs_map"
        ));
    }

    #[test]
    fn timestamp_comparisons_are_strictly_greater_and_numeric() {
        let outlet = |set: &str, channels: &str| {
            let run = hash(&[
                ("timestamps:build_channels", channels),
                ("timestamps:set_outlet", set),
            ]);
            check(&run, false, "outlet")
        };
        assert!(outlet("11", "10"), "greater");
        assert!(!outlet("10", "10"), "equal");
        assert!(!outlet("9", "10"), "less");
        assert!(outlet("100", "99"), "numeric, not lexicographic");
        assert!(!outlet("abc", "10"), "non-numeric left");
        assert!(!outlet("11", "1.5"), "non-numeric right");
        assert!(!outlet("", "10"), "empty");
        assert!(
            outlet(" 11\n", "+1_0"),
            "int() whitespace, sign, underscores"
        );
        assert!(outlet("0", "-1"));
        assert!(!outlet("-0", "0"));
        assert!(outlet("-5", "-0_6"));
        assert!(outlet(
            "123456789012345678901234567890",
            "9223372036854775807"
        ));
        assert!(!check(
            &hash(&[("timestamps:set_outlet", "5")]),
            false,
            "outlet"
        ));
    }

    #[test]
    fn soils_needs_both_watershed_and_landuse() {
        let soils = |soils: &str, watershed: &str, landuse: &str| {
            let run = hash(&[
                ("timestamps:abstract_watershed", watershed),
                ("timestamps:build_landuse", landuse),
                ("timestamps:build_soils", soils),
            ]);
            check(&run, false, "soils")
        };
        assert!(soils("30", "10", "20"));
        assert!(!soils("15", "10", "20"), "before landuse");
        assert!(!soils("30", "40", "20"), "before watershed");
        assert!(!soils("30", "10", ""), "landuse missing");
        assert!(!soils("30", "10", "30"), "equal to landuse");
    }

    #[test]
    fn wepp_needs_landuse_soils_and_climate() {
        let base = [
            ("timestamps:build_landuse", "10"),
            ("timestamps:build_soils", "20"),
            ("timestamps:build_climate", "30"),
        ];
        let with_wepp = |wepp: &str| {
            let mut run = hash(&base);
            run.extend(hash(&[("timestamps:run_wepp", wepp)]));
            check(&run, false, "wepp")
        };
        assert!(with_wepp("31"));
        assert!(!with_wepp("30"), "equal to climate");
        assert!(!with_wepp("25"), "before climate");
        let missing_climate = hash(&[
            ("timestamps:build_landuse", "10"),
            ("timestamps:build_soils", "20"),
            ("timestamps:run_wepp", "99"),
        ]);
        assert!(!check(&missing_climate, false, "wepp"));
    }

    #[test]
    fn observed_debris_watar_must_follow_inputs_and_wepp() {
        for key in ["observed", "debris", "watar"] {
            let field = format!("timestamps:run_{key}");
            let mut run = complete_run();
            run.retain(|(f, _)| f != field.as_bytes());
            run.push((Bytes::from(field.clone()), Bytes::from_static(b"107")));
            assert!(!check(&run, false, key), "{key}: equal to run_wepp");
            run.push((Bytes::from(field.clone()), Bytes::from_static(b"200")));
            assert!(check(&run, false, key), "{key}: last value wins");
            run.retain(|(f, _)| f != b"timestamps:run_wepp".as_slice());
            assert!(!check(&run, false, key), "{key}: run_wepp missing");
        }
    }

    #[test]
    fn rap_ts_and_dss_export() {
        let run = hash(&[
            ("timestamps:build_climate", "50"),
            ("timestamps:build_rap_ts", "49"),
            ("timestamps:run_wepp", "60"),
            ("timestamps:dss_export", "61"),
        ]);
        assert!(!check(&run, false, "rap_ts"));
        assert!(check(&run, false, "dss_export"));
        let mut later_rap = run.clone();
        later_rap.push((
            Bytes::from_static(b"timestamps:build_rap_ts"),
            Bytes::from_static(b"51"),
        ));
        assert!(check(&later_rap, false, "rap_ts"));
        let stale = hash(&[
            ("timestamps:run_wepp", "60"),
            ("timestamps:dss_export", "60"),
        ]);
        assert!(!check(&stale, false, "dss_export"));
    }

    #[test]
    fn legacy_ignores_preflight2_variants() {
        let run = hash(&[
            ("timestamps:build_channels", "10"),
            ("timestamps:find_outlet", "11"),
            ("timestamps:abstract_watershed", "12"),
            ("timestamps:build_rangeland_cover", "13"),
            ("timestamps:build_climate", "14"),
            ("timestamps:build_soils", "15"),
            ("timestamps:build_landuse", "20"),
            ("timestamps:run_wepp_watershed", "30"),
        ]);
        assert_eq!(checklist(&run, false).len(), 13);
        for key in ["outlet", "soils", "wepp"] {
            assert!(!check(&run, false, key), "legacy {key}");
        }
        assert!(check(&run, true, "outlet"), "max(set_outlet, find_outlet)");
        assert!(
            check(&run, true, "soils"),
            "soils may follow rangeland_cover"
        );
        assert!(
            check(&run, true, "wepp"),
            "run_wepp_watershed stands in for run_wepp"
        );
        let dss = hash(&[
            ("timestamps:run_wepp", "10"),
            ("timestamps:dss_export", "35"),
            ("timestamps:run_watar", "40"),
        ]);
        assert!(
            check(&dss, false, "dss_export"),
            "legacy: newer than run_wepp"
        );
        assert!(
            !check(&dss, true, "dss_export"),
            "preflight2: older than run_watar"
        );
    }

    #[test]
    fn extended_keys_follow_legacy_keys_in_preflight2_order() {
        let list = checklist(&[], true);
        let keys: Vec<&str> = list.iter().map(|(k, _)| *k).collect();
        let mut expected = LEGACY_KEYS.to_vec();
        expected.extend([
            "rangeland_cover",
            "openet_ts",
            "rhem",
            "omni_scenarios",
            "run_path_ce",
        ]);
        assert_eq!(keys, expected);
        assert!(list.iter().all(|(_, v)| !*v));
    }

    #[test]
    fn extended_wepp_prefers_watershed_timestamp() {
        let mut run = hash(&[
            ("timestamps:build_landuse", "10"),
            ("timestamps:build_soils", "11"),
            ("timestamps:build_climate", "12"),
            ("timestamps:run_wepp", "20"),
            ("timestamps:run_omni_scenarios", "21"),
            ("timestamps:run_path_ce", "21"),
        ]);
        assert!(check(&run, true, "wepp"), "falls back to run_wepp");
        assert!(check(&run, true, "omni_scenarios"));
        assert!(check(&run, true, "run_path_ce"));
        run.push((
            Bytes::from_static(b"timestamps:run_wepp_watershed"),
            Bytes::from_static(b"25"),
        ));
        assert!(check(&run, true, "wepp"));
        assert!(
            !check(&run, true, "omni_scenarios"),
            "older than run_wepp_watershed"
        );
        assert!(!check(&run, true, "run_path_ce"));
        run.push((
            Bytes::from_static(b"timestamps:run_wepp_watershed"),
            Bytes::from_static(b"pending"),
        ));
        assert!(
            !check(&run, true, "wepp"),
            "non-empty, non-integer hides run_wepp"
        );
    }

    #[test]
    fn extended_presence_and_climate_keys() {
        let run = hash(&[
            ("timestamps:build_rangeland_cover", "5"),
            ("timestamps:run_rhem", ""),
            ("timestamps:build_climate", "50"),
            ("timestamps:build_openet_ts", "51"),
        ]);
        assert!(check(&run, true, "rangeland_cover"));
        assert!(!check(&run, true, "rhem"), "empty value counts as absent");
        assert!(check(&run, true, "openet_ts"));
        let rhem = hash(&[("timestamps:run_rhem", "x")]);
        assert!(check(&rhem, true, "rhem"));
    }

    #[test]
    fn extended_dss_export_compares_with_latest_transport() {
        let dss = |dss: &str| {
            let run = hash(&[
                ("timestamps:run_wepp", "10"),
                ("timestamps:run_wepp_watershed", "nope"),
                ("timestamps:run_watar", "30"),
                ("timestamps:dss_export", dss),
            ]);
            check(&run, true, "dss_export")
        };
        assert!(dss("31"));
        assert!(!dss("30"));
        assert!(!dss("20"));
    }

    #[test]
    fn legacy_locks_are_six_fixed_keys() {
        let run = hash(&[
            ("locked:wepp", "true"),
            ("locked:soils", "TRUE"),
            ("locked:wepp.nodb", "true"),
        ]);
        let locks = lock_statuses(&run, LockStyle::Legacy);
        let expected: Vec<(String, bool)> = [
            ("watershed", false),
            ("climate", false),
            ("wepp", true),
            ("soils", false),
            ("landuse", false),
            ("disturbed", false),
        ]
        .iter()
        .map(|&(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(locks, expected);
    }

    #[test]
    fn dynamic_locks_follow_hash_order() {
        let run = hash(&[
            ("locked:wepp.nodb", "true"),
            ("timestamps:run_wepp", "1"),
            ("locked:climate.nodb", "false"),
            ("locked:", "true"),
            ("locked:soils.nodb", "true"),
            ("locked:wepp.nodb", "false"),
        ]);
        let locks = lock_statuses(&run, LockStyle::Dynamic);
        let expected: Vec<(String, bool)> = vec![
            ("wepp.nodb".to_owned(), false),
            ("climate.nodb".to_owned(), false),
            ("soils.nodb".to_owned(), true),
        ];
        assert_eq!(locks, expected);
    }

    /// `(name, value)` pairs as [`lock_statuses`] returns them.
    fn owned(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn both_locks_are_the_fixed_keys_then_every_other_field() {
        let run = hash(&[
            ("locked:wepp.nodb", "true"),
            ("locked:soils", "true"),
            ("locked:climate.nodb", "false"),
            ("locked:", "true"),
            ("locked:landuse", "false"),
            ("locked:landuse.nodb", "true"),
            ("locked:omni.nodb", "true"),
        ]);
        let expected = owned(&[
            ("watershed", false),
            ("climate", false),
            ("wepp", true),
            ("soils", true),
            ("landuse", true),
            ("disturbed", false),
            ("wepp.nodb", true),
            ("climate.nodb", false),
            ("landuse.nodb", true),
            ("omni.nodb", true),
        ]);
        assert_eq!(lock_statuses(&run, LockStyle::Both), expected);
    }

    #[test]
    fn both_locks_fold_a_fixed_name_field_into_its_key_once() {
        // `locked:wepp` is a fixed key: it appears once, true when either field is "true".
        let run = hash(&[
            ("locked:wepp", "false"),
            ("locked:wepp.nodb", "true"),
            ("locked:wepp", "false"),
        ]);
        let locks = lock_statuses(&run, LockStyle::Both);
        let wepp: Vec<&(String, bool)> = locks.iter().filter(|(k, _)| k == "wepp").collect();
        assert_eq!(wepp, [&("wepp".to_owned(), true)]);
        assert_eq!(locks.len(), 7, "{locks:?}");
        let only_fixed = hash(&[("locked:disturbed", "true")]);
        assert_eq!(
            lock_statuses(&only_fixed, LockStyle::Both),
            lock_statuses(&only_fixed, LockStyle::Legacy),
        );
        // Only `<key>.nodb` counts, not any name that starts with the key.
        let near = hash(&[("locked:wepp.nodbx", "true"), ("locked:wepp_nodb", "true")]);
        let locks = lock_statuses(&near, LockStyle::Both);
        assert_eq!(locks[2], ("wepp".to_owned(), false));
    }

    #[test]
    fn lock_styles_render_byte_exact() {
        let run = hash(&[("locked:wepp.nodb", "true"), ("locked:climate", "true")]);
        let locks = |style| {
            let opts = PreflightOptions {
                extended: false,
                locks: style,
            };
            let text = rendered(&run, opts);
            let start = text.find(r#""lock_statuses": "#).expect("lock_statuses");
            text[start..].to_owned()
        };
        assert_eq!(
            locks(LockStyle::Legacy),
            concat!(
                r#""lock_statuses": {"watershed": false, "climate": true, "wepp": false, "#,
                r#""soils": false, "landuse": false, "disturbed": false}}"#
            )
        );
        assert_eq!(
            locks(LockStyle::Dynamic),
            r#""lock_statuses": {"wepp.nodb": true, "climate": true}}"#
        );
        assert_eq!(
            locks(LockStyle::Both),
            concat!(
                r#""lock_statuses": {"watershed": false, "climate": true, "wepp": true, "#,
                r#""soils": false, "landuse": false, "disturbed": false, "wepp.nodb": true}}"#
            )
        );
    }

    #[test]
    fn lock_style_names_round_trip() {
        for style in LockStyle::ALL {
            assert_eq!(LockStyle::parse(style.as_str()), Some(style));
            assert_eq!(LockStyle::ALL[style.index()], style);
        }
        assert_eq!(LockStyle::parse("Both"), None);
        assert_eq!(PreflightOptions::default().locks, LockStyle::Both);
    }

    #[test]
    fn render_is_python_default_style() {
        let mut run = complete_run();
        run.push((
            Bytes::from_static(b"locked:caf\xc3\xa9\"\xff"),
            Bytes::from_static(b"true"),
        ));
        let opts = PreflightOptions {
            extended: true,
            locks: LockStyle::Dynamic,
        };
        let text = rendered(&run, opts);
        assert!(text.starts_with(r#"{"type": "preflight", "checklist": {"sbs_map": true, "#));
        assert!(text.contains(r#""dss_export": true, "rangeland_cover": false, "#));
        assert!(text.ends_with(r#""lock_statuses": {"caf\u00e9\"\ufffd": true}}"#));
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["checklist"].as_object().map(|o| o.len()), Some(18));
        assert_eq!(parsed["lock_statuses"]["café\"\u{FFFD}"], true);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let junk: Vec<(Bytes, Bytes)> = (0u8..=255)
            .map(|b| {
                let field = [b"timestamps:".as_slice(), [b].as_slice()].concat();
                (Bytes::from(field), Bytes::from(vec![b, b'1', b]))
            })
            .chain([(
                Bytes::from_static(b"locked:\xc3"),
                Bytes::from_static(b"\xff"),
            )])
            .collect();
        for extended in [false, true] {
            for locks in LockStyle::ALL {
                let opts = PreflightOptions { extended, locks };
                let text = rendered(&junk, opts);
                assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
                let names = lock_statuses(&junk, locks);
                let unique: std::collections::HashSet<&String> =
                    names.iter().map(|(k, _)| k).collect();
                assert_eq!(unique.len(), names.len(), "a lock key repeats: {names:?}");
            }
        }
    }
}
