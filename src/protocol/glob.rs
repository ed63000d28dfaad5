//! Glob patterns for `psubscribe`, with the matching rules of Redis `stringmatchlen`.
//!
//! Clients move between Redis `PSUBSCRIBE` and this gateway, so a pattern must select the same
//! channels in both. This is a byte-wise port of Redis 7's `stringmatchlen_impl` (case
//! sensitive), quirks included:
//!
//! - `*` matches any run of bytes, `?` any one byte, `\x` the byte `x`.
//! - `[abc]`, `[^abc]` and ranges `[a-z]` match one byte. A reversed range `[z-a]` works like
//!   `[a-z]`. Inside brackets `\` escapes the next byte. An unterminated `[` runs to the end of
//!   the pattern.
//! - `[a-]` is a range from `a` to `]`, because the class closes only at a `]` that is not the
//!   end of a range.
//! - A non-empty pattern never matches an empty text, not even `*`, because Redis's loop stops
//!   when the text runs out before it looks at the pattern. Channel names are never empty
//!   (see [`check_topic`](super::check_topic)), so this does not come up in practice.
//! - Ranges compare bytes as unsigned. Redis compares C `char`, which is signed on x86-64, so
//!   ranges whose ends straddle 0x80 can differ there. Redis on ARM matches this code.
//!
//! **Thread:** a pure function with no state. It runs wherever pattern subscriptions are
//! matched against a channel, which is once per (new channel, pattern) pair, not per publish if
//! the router caches results.
//!
//! **Invariants:** never panics, never allocates, and its worst case is polynomial. Redis's
//! "skip longer matches" cut-off stops the backtracking blow-up of patterns like `a*a*a*b`, and
//! recursion is capped at [`MAX_GLOB_NESTING`] levels, as in Redis, where the match fails.

/// How many nested `*` may recurse before the match gives up and fails, as in Redis. Default:
/// 1000.
///
/// Each `*` that is not the last byte of the pattern adds one level. Patterns are at most
/// [`MAX_TOPIC_BYTES`](super::MAX_TOPIC_BYTES) long, so a valid pattern has at most 512 such
/// `*`. This cap is a second guard, for callers that skip that check.
pub const MAX_GLOB_NESTING: u32 = 1000;

/// Returns true when `text` matches the glob `pattern`, with Redis `stringmatchlen` semantics
/// (case sensitive, byte-wise): `*`, `?`, `[abc]`, `[^a]`, `[a-z]` and `\` escapes. See the
/// module docs for the edge cases.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, text, &mut skip_longer, 0)
}

/// One level of the Redis algorithm. `skip_longer` is shared by the whole call tree: once the
/// rest of the pattern after some `*` has failed at every position, earlier `*` need not try
/// longer matches, since that would only shift the same rest further right.
fn match_from(mut pattern: &[u8], mut text: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_GLOB_NESTING {
        return false;
    }
    while let (Some(&p), Some(&c)) = (pattern.first(), text.first()) {
        match p {
            b'*' => {
                // Collapse `**...` into one `*`.
                while pattern.get(1) == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                let rest = &pattern[1..];
                if rest.is_empty() {
                    return true;
                }
                while !text.is_empty() {
                    if match_from(rest, text, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    text = &text[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {}
            b'[' => {
                let (matched, after_class) = match_class(&pattern[1..], c);
                if !matched {
                    return false;
                }
                // `after_class` starts at the closing `]`, which the shared step below
                // consumes, or is empty when the class was not terminated.
                pattern = after_class;
            }
            b'\\' if pattern.len() >= 2 => {
                pattern = &pattern[1..];
                if pattern[0] != c {
                    return false;
                }
            }
            _ => {
                if p != c {
                    return false;
                }
            }
        }
        // Both sides consumed one item. `get` because an unterminated class already used up
        // the pattern.
        pattern = pattern.get(1..).unwrap_or_default();
        text = &text[1..];
        if text.is_empty() {
            // Trailing `*` match the empty rest of the text.
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
            break;
        }
    }
    pattern.is_empty() && text.is_empty()
}

/// Matches byte `c` against a bracket class. `class` starts just after the `[`. Returns
/// whether it matched and the pattern from the closing `]` on (empty if there was none).
fn match_class(mut class: &[u8], c: u8) -> (bool, &[u8]) {
    let negate = class.first() == Some(&b'^');
    if negate {
        class = &class[1..];
    }
    let mut matched = false;
    loop {
        match class {
            [b'\\', escaped, ..] => {
                if *escaped == c {
                    matched = true;
                }
                class = &class[2..];
            }
            [b']', ..] | [] => break,
            [start, b'-', end, ..] => {
                let (low, high) = if start <= end {
                    (*start, *end)
                } else {
                    (*end, *start)
                };
                if (low..=high).contains(&c) {
                    matched = true;
                }
                class = &class[3..];
            }
            [other, ..] => {
                if *other == c {
                    matched = true;
                }
                class = &class[1..];
            }
        }
    }
    (matched != negate, class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        glob_match(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn literals() {
        assert!(m("news", "news"));
        assert!(!m("news", "new"));
        assert!(!m("new", "news"));
        assert!(!m("News", "news"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
    }

    #[test]
    fn star() {
        assert!(m("*", "anything"));
        assert!(m("news.*", "news.x"));
        assert!(m("news.*", "news.x.y"));
        assert!(!m("news.*", "news"));
        assert!(m("news*", "news"));
        assert!(m("*.x", "news.x"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**b", "aXb"));
        assert!(m("a***", "a"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("*a*", "banana"));
        assert!(!m("*z*", "banana"));
    }

    #[test]
    fn empty_text_never_matches_a_non_empty_pattern() {
        // Redis quirk, kept on purpose.
        assert!(!m("*", ""));
        assert!(!m("**", ""));
        assert!(!m("?", ""));
    }

    #[test]
    fn question_mark() {
        assert!(m("h?llo", "hello"));
        assert!(m("h?llo", "hallo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("???", "abc"));
        assert!(!m("???", "ab"));
        // Byte-wise: a two-byte character needs two `?`.
        assert!(!m("?", "\u{e9}"));
        assert!(m("??", "\u{e9}"));
    }

    #[test]
    fn classes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(m("h[^e]llo", "hbllo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hallo"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[b-a]", "a"), "reversed range");
        assert!(m("[0-9][0-9]", "42"));
        assert!(!m("[0-9]", "x"));
        assert!(m("[\\]]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(!m("[\\-]", "a"));
        assert!(m("[^]", "x"), "empty negated class matches any byte");
        assert!(!m("[]", "x"), "empty class matches nothing");
        assert!(m("[a-]", "]"), "`[a-]` is the range `]`..`a`");
        assert!(m("[a-]", "^"));
        assert!(!m("[a-]", "-"));
        assert!(m("[-a]", "-"));
        assert!(m("x[abc", "xa"), "unterminated class runs to the end");
        assert!(!m("x[abc", "xd"));
        assert!(!m("x[abc", "xab"));
        assert!(!m("[", "a"));
        assert!(m("[^", "a"));
        assert!(m("[\\", "\\"), "a trailing backslash in a class is literal");
        assert!(m("[a\\", "\\"));
        assert!(m("a[bc]*", "ab"));
        assert!(m("a[bc]*", "acxyz"));
    }

    #[test]
    fn escapes() {
        assert!(m("news\\*", "news*"));
        assert!(!m("news\\*", "news.x"));
        assert!(m("\\?", "?"));
        assert!(!m("\\?", "a"));
        assert!(m("\\[a]", "[a]"));
        assert!(m("a\\\\b", "a\\b"));
        assert!(m("a\\", "a\\"), "a trailing backslash is literal");
        assert!(!m("a\\*", "a"));
    }

    #[test]
    fn non_ascii_bytes() {
        assert!(m("caf\u{e9}.*", "caf\u{e9}.menu"));
        assert!(glob_match(b"[\x80-\xff]", b"\xc3"));
        assert!(!glob_match(b"[\x80-\xff]", b"a"));
        assert!(glob_match(b"\xff*", b"\xff\x00\x01"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "a*".repeat(30));
        let start = std::time::Instant::now();
        assert!(!m(&pattern, &text));
        let mut matching = text.clone();
        matching.push('b');
        assert!(m(&pattern, &matching));
        // Without the cut-off this would take longer than the age of the universe.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn nesting_cap_fails_the_match() {
        let text = "a".repeat(2_000);
        // The k-th `*` (from 1) recurses at nesting k: 1000 are allowed, 1001 are not.
        assert!(m(&"*a".repeat(1_000), &text));
        assert!(!m(&"*a".repeat(1_001), &text));
    }

    /// The same algorithm without the cut-off: plain exponential backtracking.
    fn reference(mut pattern: &[u8], mut text: &[u8]) -> bool {
        while let (Some(&p), Some(&c)) = (pattern.first(), text.first()) {
            match p {
                b'*' => {
                    while pattern.get(1) == Some(&b'*') {
                        pattern = &pattern[1..];
                    }
                    if pattern.len() == 1 {
                        return true;
                    }
                    return (0..text.len()).any(|i| reference(&pattern[1..], &text[i..]));
                }
                b'?' => {}
                b'[' => {
                    let (matched, after) = match_class(&pattern[1..], c);
                    if !matched {
                        return false;
                    }
                    pattern = after;
                }
                b'\\' if pattern.len() >= 2 => {
                    pattern = &pattern[1..];
                    if pattern[0] != c {
                        return false;
                    }
                }
                _ if p != c => return false,
                _ => {}
            }
            pattern = pattern.get(1..).unwrap_or_default();
            text = &text[1..];
            if text.is_empty() {
                while pattern.first() == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                break;
            }
        }
        pattern.is_empty() && text.is_empty()
    }

    #[test]
    fn cut_off_agrees_with_plain_backtracking() {
        const PATTERN_BYTES: &[u8] = b"ab*?[]^-\\";
        const TEXT_BYTES: &[u8] = b"ab-]\\";
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut matches = 0;
        for _ in 0..50_000 {
            let pattern: Vec<u8> = (0..next(9))
                .map(|_| PATTERN_BYTES[next(PATTERN_BYTES.len())])
                .collect();
            let text: Vec<u8> = (0..next(9))
                .map(|_| TEXT_BYTES[next(TEXT_BYTES.len())])
                .collect();
            let expected = reference(&pattern, &text);
            assert_eq!(
                glob_match(&pattern, &text),
                expected,
                "pattern {:?} text {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&text)
            );
            matches += usize::from(expected);
        }
        assert!(
            matches > 1_000,
            "only {matches} matches; generator too narrow"
        );
    }
}
