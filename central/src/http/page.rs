//! Paged queries: what a request may ask (`from_ms`, `to_ms`, `after`, `limit`) and the
//! cursor a page hands back. Cursors are opaque to clients but readable: `customer.seq` for
//! ledgers, `hour.kind.id.feeder` for energy hours; a client passes the page's `next` as
//! `after` until `next` is null.

use std::collections::BTreeMap;

use crate::store::{FoldedKey, HourKey, LedgerKey, PAGE_ROWS_DEFAULT, PAGE_ROWS_MAX, TimeRange};

/// The query parameters every paged route takes.
pub const PARAMS: [&str; 4] = ["from_ms", "to_ms", "after", "limit"];

/// A paged request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    /// Rows whose log time (ledger) or hour start (energy) is in this window.
    pub range: TimeRange,
    /// Start after this key.
    pub after: Option<K>,
    /// At most this many rows.
    pub limit: usize,
}

/// A cursor's text form.
pub trait Cursor: Sized {
    /// As `next` and `after` carry it.
    fn to_text(&self) -> String;
    /// From `after`; `None` if it is not one of ours.
    fn from_text(s: &str) -> Option<Self>;
    /// What it looks like, for an error message.
    const FORM: &'static str;
}

impl Cursor for LedgerKey {
    fn to_text(&self) -> String {
        format!("{}.{}", self.customer, self.seq)
    }
    fn from_text(s: &str) -> Option<Self> {
        let (c, q) = s.split_once('.')?;
        Some(LedgerKey {
            customer: c.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
    const FORM: &'static str = "CUSTOMER.SEQ";
}

impl Cursor for HourKey {
    fn to_text(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.hour_start_ms, self.kind, self.id, self.feeder
        )
    }
    fn from_text(s: &str) -> Option<Self> {
        let mut p = s.split('.');
        let k = HourKey {
            hour_start_ms: p.next()?.parse().ok()?,
            kind: p.next()?.parse().ok()?,
            id: p.next()?.parse().ok()?,
            feeder: p.next()?.parse().ok()?,
        };
        p.next().is_none().then_some(k)
    }
    const FORM: &'static str = "HOUR_MS.KIND.ID.FEEDER";
}

impl Cursor for FoldedKey {
    fn to_text(&self) -> String {
        format!("{}.{}", self.day_start_ms, self.seq)
    }
    fn from_text(s: &str) -> Option<Self> {
        let (d, q) = s.split_once('.')?;
        Some(FoldedKey {
            day_start_ms: d.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
    const FORM: &'static str = "DAY_START_MS.SEQ";
}

/// A number: the seq of the last row (events) or the start of its hour (a customer's energy).
impl Cursor for u64 {
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    const FORM: &'static str = "a whole number: the seq, or the hour start in ms, of the last row";
}

/// Parse a paged route's query string; the error says which parameter and what it takes.
pub fn parse<K: Cursor>(q: &BTreeMap<String, String>) -> Result<PageRequest<K>, String> {
    if let Some(k) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(format!(
            "unknown query parameter `{k}`; this route takes {}",
            PARAMS.join(", ")
        ));
    }
    let num = |name: &str| -> Result<Option<u64>, String> {
        q.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("{name}=`{v}` is not a whole number (Unix time in ms for from_ms and to_ms, a row count for limit)")
                })
            })
            .transpose()
    };
    let range = TimeRange {
        from_ms: num("from_ms")?.unwrap_or(0),
        to_ms: num("to_ms")?.unwrap_or(u64::MAX),
    };
    if range.to_ms < range.from_ms {
        return Err(format!(
            "to_ms {} is before from_ms {}; the window is from_ms <= time < to_ms",
            range.to_ms, range.from_ms
        ));
    }
    let limit = match num("limit")? {
        None => PAGE_ROWS_DEFAULT,
        Some(0) => return Err("limit=0 asks for nothing; give 1 or more".into()),
        Some(n) if n > PAGE_ROWS_MAX as u64 => {
            return Err(format!(
                "limit={n} is more than a page holds ({PAGE_ROWS_MAX}); follow `next` for the rest"
            ));
        }
        Some(n) => n as usize,
    };
    let after = match q.get("after") {
        None => None,
        Some(a) => Some(K::from_text(a).ok_or_else(|| {
            format!(
                "after=`{a}` is not a cursor of this route ({}); pass the `next` of the previous page",
                K::FORM
            )
        })?),
    };
    Ok(PageRequest {
        range,
        after,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_bad_requests_say_what_is_wrong() {
        let k = LedgerKey {
            customer: 12,
            seq: 9_000,
        };
        assert_eq!(LedgerKey::from_text(&k.to_text()), Some(k));
        let h = HourKey {
            hour_start_ms: 7_200_000,
            kind: 1,
            id: 2,
            feeder: 3,
        };
        assert_eq!(HourKey::from_text(&h.to_text()), Some(h));
        assert_eq!(HourKey::from_text("1.2.3.4.5"), None);

        let ok: PageRequest<LedgerKey> = parse(&q(&[
            ("from_ms", "10"),
            ("to_ms", "20"),
            ("after", "12.9000"),
        ]))
        .unwrap();
        assert_eq!(
            ok.range,
            TimeRange {
                from_ms: 10,
                to_ms: 20
            }
        );
        assert_eq!(ok.after, Some(k));
        assert_eq!(ok.limit, PAGE_ROWS_DEFAULT);

        for (pairs, says) in [
            (vec![("page", "2")], "unknown query parameter `page`"),
            (vec![("from_ms", "yesterday")], "from_ms=`yesterday`"),
            (vec![("from_ms", "20"), ("to_ms", "10")], "before from_ms"),
            (vec![("limit", "0")], "limit=0"),
            (vec![("limit", "1000000")], "follow `next`"),
            (vec![("after", "7")], "CUSTOMER.SEQ"),
        ] {
            let e = parse::<LedgerKey>(&q(&pairs)).unwrap_err();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }
}
