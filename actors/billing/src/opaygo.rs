//! OpenPAYGO Token decoding, the standard (9-digit) form, as the reference decoder does it.
//!
//! The reference is the `openpaygo` Python package, version 0.6.3 (`OpenPAYGOTokenShared`,
//! `OpenPAYGOTokenDecoder.get_activation_value_count_and_type_from_token`,
//! `_count_is_valid`, `update_used_counts`). What is supported, exactly as there:
//!
//! - the token chain: `h0` = the starting code with its last three digits replaced by the
//!   token's; `h(n+1)` = SipHash-2-4 (the account's 16-byte key) of `h(n)` as a big-endian u32
//!   written twice, its high and low 32 bits XORed, bits 2..32 kept, less 73,741,825 above
//!   999,999,999; the token at count `n` is `h(n)` with the token's last three digits;
//! - the value: the token's last three digits less the starting code's, modulo 1,000;
//!   an even count is an add-credit token, an odd one a set-credit token, or, with value 998,
//!   a disable-PAYG token, or, with value 999, a counter-sync token;
//! - the count window: counts are tried from 0 up to the last count + 64 (+ 100 for a
//!   counter-sync value), and the first count whose token matches and is valid wins. A count
//!   above the last one is valid; an older one only if it is an add-credit token within the 16
//!   counts below the last one and not used yet; a counter-sync token down to 64 below. A
//!   matching but invalid count makes the refusal "already used" rather than "invalid";
//! - the used counts: the 17 counts ending at the highest one used. A non-add token (and an
//!   add token of value 998 or 999) marks all of them used; an add token marks its own count.
//!
//! Not supported: the extended (12-digit) form, the restricted digit set (15 digits of 1-4) and
//! value dividers (a value is whole units; what a unit is worth is the account's
//! `unit_mpaisa`). What the device does with the result is the caller's: see
//! [`CountState::accept`].

use core::hash::Hasher;

use siphasher::sip::SipHasher24;

/// Largest code of the standard form: nine digits.
pub const CODE_MAX: u32 = 999_999_999;
/// The reference's `TOKEN_VALUE_OFFSET`: a code's last three digits carry the value.
const VALUE_OFFSET: u32 = 1_000;
/// The reference's `PAYG_DISABLE_VALUE`.
pub const PAYG_DISABLE_VALUE: u32 = 998;
/// The reference's `COUNTER_SYNC_VALUE`.
pub const COUNTER_SYNC_VALUE: u32 = 999;
/// The reference's `MAX_TOKEN_JUMP`: how far ahead of the last count a token may be.
pub const MAX_TOKEN_JUMP: u32 = 64;
/// The reference's `MAX_TOKEN_JUMP_COUNTER_SYNC`.
pub const MAX_TOKEN_JUMP_COUNTER_SYNC: u32 = 100;
/// The reference's `MAX_UNUSED_OLDER_TOKENS`: how far below the last count an unused
/// add-credit token is still accepted.
pub const MAX_UNUSED_OLDER_TOKENS: u32 = 16;
/// Highest last count an account decodes from. The reference walks the chain from count 0 on
/// every token (that is how it tells "already used" from "invalid"), one SipHash per count:
/// about 810 fuel each in wasmi (BENCHMARKS.md, `ghatta bench --billing-apply`), so 8,000
/// counts cost about 6.5 M of the host's 20 M fuel per delivery. A token a week, add-credit
/// only (+2 counts), lasts 75 years; past it the office re-keys the account.
pub const LAST_COUNT_MAX: u32 = 8_000;

/// What a token does, from its count's parity and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Even count: add the value.
    AddCredit,
    /// Odd count: set the balance to the value.
    SetCredit,
    /// Odd count, value 998: the device stops being pay-as-you-go.
    DisablePayg,
    /// Odd count, value 999: only moves the count.
    CounterSync,
}

/// A token the window accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// 0..=999.
    pub value: u32,
    /// What it does.
    pub kind: TokenKind,
    /// Its count.
    pub count: u32,
}

/// Why a token is refused, in the reference's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No count in the window makes this token (`TokenType.INVALID`).
    Invalid,
    /// It matches a count that was used or is too old (`TokenType.ALREADY_USED`).
    AlreadyUsed,
    /// The code has more than nine digits.
    TooLong,
    /// The account's count is past [`LAST_COUNT_MAX`]: the office must re-key it.
    CountExhausted,
}

/// The reference's count state: the device's last count and the used-counts list, kept as
/// the highest used count and a bitmap of the 17 counts ending there (bit `i` = count
/// `highest - i`). A new account is at count 0 with count 0 used (the starting code itself is
/// no token): the reference's list must not start empty, for `update_used_counts` returns
/// `None` for an empty list and the next older token then fails inside the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountState {
    /// The device's count: the highest count accepted.
    pub last_count: u32,
    /// The highest count in the used list.
    pub highest_used: u32,
    /// Bit `i`: count `highest_used - i` is used, for `i` in `0..=16`.
    pub used_mask: u32,
}

impl Default for CountState {
    fn default() -> Self {
        CountState {
            last_count: 0,
            highest_used: 0,
            used_mask: 1,
        }
    }
}

/// Bits of the used-counts bitmap: the reference keeps `highest - 16 ..= highest`.
const USED_BITS: u32 = MAX_UNUSED_OLDER_TOKENS + 1;

impl CountState {
    /// Whether `count` is in the used list.
    pub fn is_used(&self, count: u32) -> bool {
        match self.highest_used.checked_sub(count) {
            Some(back) if back < USED_BITS => self.used_mask & (1 << back) != 0,
            _ => false,
        }
    }

    /// The reference's `_count_is_valid`.
    fn count_is_valid(&self, count: u32, value: u32, kind: TokenKind) -> bool {
        let last = i64::from(self.last_count);
        let c = i64::from(count);
        if value == COUNTER_SYNC_VALUE {
            return c > last - i64::from(MAX_TOKEN_JUMP);
        }
        if c > last {
            return true;
        }
        c > last - i64::from(MAX_UNUSED_OLDER_TOKENS)
            && !self.is_used(count)
            && kind == TokenKind::AddCredit
    }

    /// The state after accepting `d`: the reference's `update_used_counts`, and the device's
    /// count moved to the highest count accepted (a counter-sync token below it never lowers
    /// it, so no used count can come back).
    pub fn accept(&self, d: &Decoded) -> CountState {
        let highest = self.highest_used.max(d.count);
        let shift = highest - self.highest_used;
        let kept = if shift >= USED_BITS {
            0
        } else {
            self.used_mask << shift
        };
        let all = (1u32 << USED_BITS) - 1;
        let used_mask = if d.kind != TokenKind::AddCredit
            || d.value == COUNTER_SYNC_VALUE
            || d.value == PAYG_DISABLE_VALUE
        {
            all
        } else {
            (kept | (1 << (highest - d.count).min(31))) & all
        };
        CountState {
            last_count: self.last_count.max(d.count),
            highest_used: highest,
            used_mask,
        }
    }
}

/// The reference's `generate_next_token`.
fn next_code(code: u32, key: &[u8; 16]) -> u32 {
    let b = code.to_be_bytes();
    let mut h = SipHasher24::new_with_key(key);
    h.write(&[b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3]]);
    let hash = h.finish();
    let folded = ((hash >> 32) as u32) ^ (hash as u32);
    // `_convert_to_29_5_bits`: 30 bits, folded under a billion.
    let v = folded >> 2;
    if v > CODE_MAX { v - 73_741_825 } else { v }
}

/// A code with its last three digits replaced.
fn with_base(code: u32, base: u32) -> u32 {
    code - code % VALUE_OFFSET + base
}

/// Decode `code` for an account with `key` and `starting_code`, in count state `st`.
pub fn decode(
    code: u32,
    key: &[u8; 16],
    starting_code: u32,
    st: &CountState,
) -> Result<Decoded, Refusal> {
    if code > CODE_MAX {
        return Err(Refusal::TooLong);
    }
    if st.last_count > LAST_COUNT_MAX {
        return Err(Refusal::CountExhausted);
    }
    let base = code % VALUE_OFFSET;
    let start_base = starting_code % VALUE_OFFSET;
    let value = (base + VALUE_OFFSET - start_base) % VALUE_OFFSET;
    let jump = if value == COUNTER_SYNC_VALUE {
        MAX_TOKEN_JUMP_COUNTER_SYNC
    } else {
        MAX_TOKEN_JUMP
    };
    let mut current = with_base(starting_code, base);
    let mut older = false;
    for count in 0..=st.last_count + jump {
        if with_base(current, base) == code {
            let kind = if count % 2 == 0 {
                TokenKind::AddCredit
            } else if value == COUNTER_SYNC_VALUE {
                TokenKind::CounterSync
            } else if value == PAYG_DISABLE_VALUE {
                TokenKind::DisablePayg
            } else {
                TokenKind::SetCredit
            };
            if st.count_is_valid(count, value, kind) {
                return Ok(Decoded { value, kind, count });
            }
            older = true;
        }
        current = next_code(current, key);
    }
    Err(if older {
        Refusal::AlreadyUsed
    } else {
        Refusal::Invalid
    })
}

/// The reference's `generate_starting_code`: what a key's starting code is when the office
/// did not choose one.
pub fn starting_code_of(key: &[u8; 16]) -> u32 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(key);
    let hash = h.finish();
    let folded = ((hash >> 32) as u32) ^ (hash as u32);
    let v = folded >> 2;
    if v > CODE_MAX { v - 73_741_825 } else { v }
}

/// The reference's encoder (`generate_standard_token`) for a token of `value` at `count`, for
/// tests and benchmarks: the office mints tokens, never the grid (the actor never calls it).
pub fn encode(key: &[u8; 16], starting_code: u32, value: u32, count: u32) -> u32 {
    let base = (starting_code % VALUE_OFFSET + value % VALUE_OFFSET) % VALUE_OFFSET;
    let mut current = with_base(starting_code % (CODE_MAX + 1), base);
    for _ in 0..count {
        current = next_code(current, key);
    }
    with_base(current, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = *b"\xa2\x9a\xb8\x2e\xdc\x5f\xbb\xc4\x1e\xc9\x53\x0f\x6d\xac\x86\xb1";

    #[test]
    fn add_tokens_count_up_and_replays_are_refused() {
        let sc = 123_456_789;
        let st = CountState::default();
        let t2 = encode(&KEY, sc, 7, 2);
        let d = decode(t2, &KEY, sc, &st).unwrap();
        assert_eq!((d.value, d.kind, d.count), (7, TokenKind::AddCredit, 2));
        let st = st.accept(&d);
        assert_eq!(decode(t2, &KEY, sc, &st), Err(Refusal::AlreadyUsed));
        // Out of order: 6 first, then the older 4 once.
        let t4 = encode(&KEY, sc, 1, 4);
        let t6 = encode(&KEY, sc, 1, 6);
        let st = st.accept(&decode(t6, &KEY, sc, &st).unwrap());
        let d4 = decode(t4, &KEY, sc, &st).unwrap();
        assert_eq!(d4.count, 4);
        let st = st.accept(&d4);
        assert_eq!(decode(t4, &KEY, sc, &st), Err(Refusal::AlreadyUsed));
        // A set token marks the whole window used: the unused add token at 8 is now too old.
        let t8 = encode(&KEY, sc, 1, 8);
        let t9 = encode(&KEY, sc, 5, 9);
        let st = st.accept(&decode(t9, &KEY, sc, &st).unwrap());
        assert_eq!(decode(t8, &KEY, sc, &st), Err(Refusal::AlreadyUsed));
        // Beyond the jump: invalid.
        let far = encode(&KEY, sc, 1, st.last_count + MAX_TOKEN_JUMP + 2);
        assert_eq!(decode(far, &KEY, sc, &st), Err(Refusal::Invalid));
        assert_eq!(decode(CODE_MAX + 1, &KEY, sc, &st), Err(Refusal::TooLong));
    }
}
