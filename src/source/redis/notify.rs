//! Keyspace notifications: the server's `notify-keyspace-events`, checked after every
//! (re)connect of a source that serves watches.
//!
//! Watches only see changes when the setting has `K` plus the event classes (`KA`). `CONFIG SET`
//! is not persisted, and a Redis run without persistence (the seeds run it so) comes back from a
//! restart without it: watchers would get their fresh value after the reconnect and then never
//! another update. So the check runs on every connect, not once: with `--redis-set-notify` the
//! flags are set again, else a warning names the source. A source that only serves pub/sub
//! needs no setting and is never checked.
//!
//! Thread: the source's subscriber thread, on a fresh connection before it resubscribes, so the
//! flags are in place before the subscriptions that trigger the watches' snapshot reads.

use super::RedisSettings;
use super::conn::{RedisConn, RedisError};
use super::resp::Value;

/// Reads `notify-keyspace-events` on `conn` and, when watches would miss changes, sets it
/// (`settings.set_notify`) or logs why and how to fix it, naming the source. An error reply
/// (`CONFIG` renamed or refused) is logged and is not a connection failure; any other error is
/// returned, and the caller reconnects.
pub fn check(conn: &mut RedisConn, settings: &RedisSettings) -> Result<(), RedisError> {
    let source = settings.name.as_str();
    let current = match conn.call(&[b"CONFIG", b"GET", b"notify-keyspace-events"]) {
        Ok(v) => flags_of(&v),
        Err(RedisError::Reply(e)) => {
            tracing::warn!(source, error = %e, "cannot read notify-keyspace-events (CONFIG disabled?); keyspace watches need K plus the event classes (e.g. KA)");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if flags_ok(&current) {
        return Ok(());
    }
    let shown = Shown(&current);
    if settings.set_notify {
        let wanted = merged_flags(&current);
        match conn.call(&[
            b"CONFIG",
            b"SET",
            b"notify-keyspace-events",
            wanted.as_bytes(),
        ]) {
            Ok(_) => {
                tracing::info!(source, from = %shown, to = %wanted, "set notify-keyspace-events");
            }
            Err(RedisError::Reply(e)) => {
                tracing::warn!(source, current = %shown, error = %e, "could not set notify-keyspace-events: watches will not see changes");
            }
            Err(e) => return Err(e),
        }
    } else if current.contains('K') && (current.contains('h') || current.contains('A')) {
        // `Kh` (weppcloud's own setting) is all Preflight needs: hash changes.
        tracing::info!(
            source,
            current = %shown,
            "Redis keyspace notifications cover hash changes (enough for Preflight) but not \
             every type: watches of other types miss changes. `CONFIG SET \
             notify-keyspace-events KA` or --redis-set-notify covers all"
        );
    } else {
        tracing::warn!(
            source,
            current = %shown,
            "Redis keyspace notifications are off or incomplete: watches will not see changes. \
             Run `CONFIG SET notify-keyspace-events KA` (Kh is enough for Preflight) or start \
             ringcast with --redis-set-notify, which also sets it again after a Redis restart"
        );
    }
    Ok(())
}

/// The value in a `CONFIG GET` reply: a RESP2 `[name, value]` array or a RESP3 map; empty when
/// the reply has neither.
fn flags_of(reply: &Value) -> String {
    let value = match reply {
        Value::Array(items) => items.get(1),
        Value::Map(pairs) => pairs.first().map(|(_, v)| v),
        _ => None,
    };
    value
        .and_then(Value::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// True when `flags` (a `notify-keyspace-events` value) enables keyspace events for the
/// classes a watch needs: `K` plus `A`, or `K` plus generic, string, list, set, hash, zset,
/// expired and evicted (`g$lshzxe`).
pub fn flags_ok(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "g$lshzxe".chars().all(|c| flags.contains(c)))
}

/// `flags` with `K` and `A` added.
pub fn merged_flags(flags: &str) -> String {
    let mut out: String = flags.chars().filter(|c| *c != 'K' && *c != 'A').collect();
    out.push_str("KA");
    out
}

/// A flags value for a log field: `(empty)` instead of nothing, so a line never ends in a
/// bare `current=`.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("(empty)")
        } else {
            f.write_str(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn flags_need_k_and_every_class() {
        assert!(!flags_ok(""));
        assert!(!flags_ok("Ex"));
        assert!(flags_ok("KA"));
        assert!(flags_ok("AKE"));
        assert!(flags_ok("Kg$lshzxe"));
        assert_eq!(merged_flags("Ex"), "ExKA");
        assert_eq!(merged_flags(""), "KA");
    }

    #[test]
    fn config_get_replies_of_both_protocols() {
        let name = Value::Bulk(Bytes::from_static(b"notify-keyspace-events"));
        let value = Value::Bulk(Bytes::from_static(b"Kh"));
        assert_eq!(
            flags_of(&Value::Array(vec![name.clone(), value.clone()])),
            "Kh"
        );
        assert_eq!(flags_of(&Value::Map(vec![(name, value)])), "Kh");
        assert_eq!(flags_of(&Value::Array(Vec::new())), "");
    }

    #[test]
    fn empty_flags_are_shown_as_such() {
        assert_eq!(Shown("").to_string(), "(empty)");
        assert_eq!(Shown("Ex").to_string(), "Ex");
    }
}
