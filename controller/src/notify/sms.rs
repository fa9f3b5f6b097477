//! Alarm changes by SMS through a GSM modem on a serial port (`[sms]` in node.toml): text
//! mode AT commands (`AT+CMGF=1`, `AT+CMGS="<number>"`, the text, Ctrl-Z), one message per
//! raise or clear to each operator number, within a budget per hour and per day so a
//! flapping alarm cannot spend the grid's prepaid SMS credit; what the budget held back is
//! counted in the next message that goes.
//!
//! A valley's GSM coverage is often the only link besides the satellite: the operator is
//! told on their phone, not only on a page they would have to be looking at.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::AlarmChange;

/// `[sms]` in node.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// The modem's serial device, e.g. "/dev/ttyUSB2" (many USB GSM sticks expose several
    /// ports: the one that answers `AT`).
    pub device: String,
    /// Its baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Operators' numbers in international form, e.g. "+9779841000000".
    pub to: Vec<String>,
    /// Alarm changes sent per hour at most (each to every number in `to`).
    #[serde(default = "default_per_hour")]
    pub per_hour_max: u32,
    /// Alarm changes sent per day at most.
    #[serde(default = "default_per_day")]
    pub per_day_max: u32,
}

fn default_baud() -> u32 {
    115_200
}
/// Six an hour: an operator reads each; a grid in trouble raises a few alarms at once.
fn default_per_hour() -> u32 {
    6
}
/// Thirty a day: a prepaid SIM's daily bundle in Nepal is of this order.
fn default_per_day() -> u32 {
    30
}

impl SmsConfig {
    /// Checks the settings: what is wrong and what to write.
    pub fn check(&self) -> Result<(), String> {
        if self.device.trim().is_empty() {
            return Err("device is empty: give the modem's port, e.g. \"/dev/ttyUSB2\"".into());
        }
        if self.to.is_empty() {
            return Err(
                "to is empty: list the operators' numbers, e.g. [\"+9779841000000\"]".into(),
            );
        }
        for n in &self.to {
            let digits = n.strip_prefix('+').unwrap_or("");
            if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{n}` is not a number in international form: write it as +<country><number>, e.g. \"+9779841000000\""
                ));
            }
        }
        if self.per_hour_max == 0 || self.per_day_max < self.per_hour_max {
            return Err(format!(
                "per_hour_max = {} and per_day_max = {}: give at least 1 an hour and a day's budget no smaller than an hour's",
                self.per_hour_max, self.per_day_max
            ));
        }
        Ok(())
    }
}

/// The longest text sent: one SMS of the GSM 7-bit alphabet.
pub const TEXT_CHARS_MAX: usize = 160;
/// How long the modem may take to answer a command (`OK`, the `>` prompt).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the network may take to accept a message (`+CMGS:`): modems document up to a
/// minute on a weak cell.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most a modem's answer may hold before it is abandoned: a port that streams garbage
/// must not grow the node's memory. Large enough for the listing of a full message store
/// (`AT+CMGL`: a SIM and a modem hold up to a few hundred messages of ~250 bytes each with
/// their header), or a stranger who fills the store would stop every `BAL` answer.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// How many messages may go when (time passed in).
#[derive(Debug)]
pub struct SmsBudget {
    per_hour: usize,
    per_day: usize,
    /// When the messages of the last day went, Unix ms, oldest first.
    sent: VecDeque<u64>,
    /// Changes not sent since the last message that went.
    held: u32,
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

impl SmsBudget {
    /// A budget of `per_hour` and `per_day` messages.
    pub fn new(per_hour: u32, per_day: u32) -> SmsBudget {
        SmsBudget {
            per_hour: per_hour as usize,
            per_day: per_day as usize,
            sent: VecDeque::new(),
            held: 0,
        }
    }

    /// Whether a message may go at `now_ms`: if so it is counted and the number of changes
    /// held back before it is returned (to say so in it); if not, it is held back.
    pub fn take(&mut self, now_ms: u64) -> Option<u32> {
        while self
            .sent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= DAY_MS)
        {
            self.sent.pop_front();
        }
        let last_hour = self
            .sent
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < HOUR_MS)
            .count();
        if last_hour >= self.per_hour || self.sent.len() >= self.per_day {
            self.held += 1;
            return None;
        }
        self.sent.push_back(now_ms);
        Some(std::mem::take(&mut self.held))
    }
}

/// The message for a change: ASCII only (the GSM alphabet's safe part), one SMS long.
pub fn message(node_id: u64, change: &AlarmChange, held_before: u32) -> String {
    let mut text = format!("ghatta node {node_id}: {}", change.text);
    if held_before > 0 {
        text.push_str(&format!(
            " (+{held_before} changes not sent: see the cockpit)"
        ));
    }
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    out.truncate(TEXT_CHARS_MAX);
    out
}

/// Why a message did not go: what, to which device, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The port could not be opened.
    #[error(
        "SMS modem {device}: cannot open it at {baud} bit/s ({detail}); check the device in [sms] and that the node's user is in the dialout group"
    )]
    Open {
        /// Device.
        device: String,
        /// Baud rate.
        baud: u32,
        /// Why.
        detail: String,
    },
    /// The modem answered with an error or not at all.
    #[error(
        "SMS modem {device}: `{command}` got {answer}; check the SIM (PIN, credit) and the signal, and that [sms] device is the modem's AT port"
    )]
    Modem {
        /// Device.
        device: String,
        /// The command.
        command: String,
        /// What came back (or "no answer").
        answer: String,
    },
}

/// Sends `text` to `to` over a modem's port.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    port: &mut S,
    device: &str,
    to: &str,
    text: &str,
) -> Result<(), SmsError> {
    let mut answer = Vec::new();
    at(
        port,
        device,
        "AT+CMGF=1",
        Want::Ok,
        COMMAND_TIMEOUT,
        &mut answer,
    )
    .await?;
    let cmgs = format!("AT+CMGS=\"{to}\"");
    at(
        port,
        device,
        &cmgs,
        Want::Prompt,
        COMMAND_TIMEOUT,
        &mut answer,
    )
    .await?;
    let mut body = text.as_bytes().to_vec();
    body.push(0x1A); // Ctrl-Z: send
    exchange(port, &body, Want::Sent, SEND_TIMEOUT, &mut answer)
        .await
        .map_err(|a| SmsError::Modem {
            device: device.into(),
            command: "the message text".into(),
            answer: a,
        })
}

/// One AT command (`\r` added), its answer in `answer`; an error names the command.
async fn at<S: AsyncRead + AsyncWrite + Unpin>(
    port: &mut S,
    device: &str,
    command: &str,
    want: Want,
    timeout: Duration,
    answer: &mut Vec<u8>,
) -> Result<(), SmsError> {
    exchange(
        port,
        format!("{command}\r").as_bytes(),
        want,
        timeout,
        answer,
    )
    .await
    .map_err(|a| SmsError::Modem {
        device: device.into(),
        command: command.into(),
        answer: a,
    })
}

/// What a command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A line `OK`.
    Ok,
    /// The `>` prompt for the text.
    Prompt,
    /// `+CMGS: <ref>` then `OK`.
    Sent,
}

/// How far a modem's answer has come.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Not complete yet.
    More,
    /// What was wanted.
    Done,
    /// An error line (`ERROR`, `+CMS ERROR: n`, `+CME ERROR: n`).
    Error(String),
}

/// Judges the bytes a modem sent after a command (logic only).
fn judge(buf: &[u8], want: Want) -> Answer {
    let text = String::from_utf8_lossy(buf);
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // Only the last line is a final result: a listed message's text may read "OK" or "ERROR".
    if let Some(e) = lines
        .last()
        .filter(|l| **l == "ERROR" || l.starts_with("+CMS ERROR") || l.starts_with("+CME ERROR"))
    {
        return Answer::Error((*e).to_string());
    }
    let done = match want {
        Want::Ok => lines.last() == Some(&"OK"),
        Want::Prompt => text.contains('>'),
        Want::Sent => {
            let at = lines.iter().position(|l| l.starts_with("+CMGS:"));
            at.is_some_and(|i| lines[i..].contains(&"OK"))
        }
    };
    if done { Answer::Done } else { Answer::More }
}

/// Writes `command` and reads until `want`, an error, or `timeout`, into `answer`; Err: what
/// came back.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    port: &mut S,
    command: &[u8],
    want: Want,
    timeout: Duration,
    answer: &mut Vec<u8>,
) -> Result<(), String> {
    port.write_all(command)
        .await
        .map_err(|e| format!("a write error ({e})"))?;
    port.flush()
        .await
        .map_err(|e| format!("a write error ({e})"))?;
    let buf = answer;
    buf.clear();
    let read = async {
        let mut chunk = [0u8; 256];
        loop {
            let n = port
                .read(&mut chunk)
                .await
                .map_err(|e| format!("a read error ({e})"))?;
            if n == 0 {
                return Err("the port closed".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
            match judge(buf, want) {
                Answer::Done => return Ok(()),
                Answer::Error(e) => return Err(format!("`{e}`")),
                Answer::More if buf.len() > ANSWER_BYTES_MAX => {
                    return Err(format!("{} bytes of no answer", buf.len()));
                }
                Answer::More => {}
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer in {} s", timeout.as_secs())),
    }
}

/// A message the modem received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its index in the modem's store (`AT+CMGD=<index>` deletes it).
    pub index: u32,
    /// The sender's number.
    pub from: String,
    /// The text.
    pub text: String,
}

/// Parses the answer to `AT+CMGL="REC UNREAD"` (text mode): a `+CMGL: <index>,"<stat>",
/// "<from>",...` line, then the text on the next line, per message (logic only). Lines that
/// do not parse are skipped: a modem's odd answer never stops the reader.
pub fn parse_cmgl(answer: &str) -> Vec<Incoming> {
    let lines: Vec<&str> = answer
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.trim().strip_prefix("+CMGL:") else {
            continue;
        };
        let fields: Vec<&str> = rest
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        let (Some(index), Some(from)) =
            (fields.first().and_then(|f| f.parse().ok()), fields.get(2))
        else {
            continue;
        };
        let text = lines
            .get(i + 1)
            .filter(|t| !t.trim().starts_with("+CMGL:") && t.trim() != "OK")
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        out.push(Incoming {
            index,
            from: (*from).to_string(),
            text,
        });
    }
    out
}

/// The customer a `BAL <customer>` query asks about (any case, spaces around).
pub fn balance_query(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    let cmd = words.next()?;
    if !cmd.eq_ignore_ascii_case("BAL") {
        return None;
    }
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some(id)
}

/// Reads the unread messages and deletes each from the modem's store.
pub async fn take_unread<S: AsyncRead + AsyncWrite + Unpin>(
    port: &mut S,
    device: &str,
) -> Result<Vec<Incoming>, SmsError> {
    let mut answer = Vec::new();
    at(
        port,
        device,
        "AT+CMGF=1",
        Want::Ok,
        COMMAND_TIMEOUT,
        &mut answer,
    )
    .await?;
    let list = "AT+CMGL=\"REC UNREAD\"";
    at(port, device, list, Want::Ok, COMMAND_TIMEOUT, &mut answer).await?;
    let found = parse_cmgl(&String::from_utf8_lossy(&answer));
    for m in &found {
        let del = format!("AT+CMGD={}", m.index);
        at(port, device, &del, Want::Ok, COMMAND_TIMEOUT, &mut answer).await?;
    }
    Ok(found)
}

/// Opens the modem's port.
pub fn open(cfg: &SmsConfig) -> Result<tokio_serial::SerialStream, SmsError> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(&cfg.device, cfg.baud)
        .open_native_async()
        .map_err(|e| SmsError::Open {
            device: cfg.device.clone(),
            baud: cfg.baud,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modems_answers_are_judged_line_by_line() {
        assert_eq!(judge(b"AT+CMGF=1\r\r\nOK\r\n", Want::Ok), Answer::Done);
        assert_eq!(judge(b"AT+CMGF=1\r\r\n", Want::Ok), Answer::More);
        assert_eq!(judge(b"\r\n> ", Want::Prompt), Answer::Done);
        assert_eq!(judge(b"\r\n+CMGS: 12\r\n", Want::Sent), Answer::More);
        assert_eq!(
            judge(b"\r\n+CMGS: 12\r\n\r\nOK\r\n", Want::Sent),
            Answer::Done
        );
        assert_eq!(
            judge(b"\r\n+CMS ERROR: 38\r\n", Want::Sent),
            Answer::Error("+CMS ERROR: 38".into())
        );
        assert_eq!(
            judge(b"OK\r\n", Want::Sent),
            Answer::More,
            "an OK before +CMGS is not a sent message"
        );
    }

    #[test]
    fn unread_messages_and_balance_queries_are_read_from_what_the_modem_lists() {
        let answer = "AT+CMGL=\"REC UNREAD\"\r\r\n+CMGL: 3,\"REC UNREAD\",\"+9779841000001\",,\"26/12/05,10:00:00+23\"\r\nbal 42\r\n+CMGL: 4,\"REC UNREAD\",\"+9779800000000\",,\"26/12/05,10:01:00+23\"\r\nhello\r\n+CMGL: x,garbage\r\n\r\nOK\r\n";
        let m = parse_cmgl(answer);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            m[0],
            Incoming {
                index: 3,
                from: "+9779841000001".into(),
                text: "bal 42".into()
            }
        );
        assert_eq!(balance_query(&m[0].text), Some(42));
        for no in ["hello", "BAL", "BAL x", "BAL 4 5", "BALANCE 4"] {
            assert_eq!(balance_query(no), None, "{no}");
        }
    }

    #[test]
    fn the_budget_holds_back_past_its_hour_and_day_and_counts_what_it_held() {
        let mut b = SmsBudget::new(2, 3);
        assert_eq!(b.take(0), Some(0));
        assert_eq!(b.take(1_000), Some(0));
        assert_eq!(b.take(2_000), None, "third in the hour");
        assert_eq!(b.take(3_000), None);
        assert_eq!(
            b.take(HOUR_MS),
            Some(2),
            "an hour on: it goes, saying two were held"
        );
        assert_eq!(
            b.take(2 * HOUR_MS + 5_000),
            None,
            "the day's three are spent"
        );
        assert_eq!(b.take(DAY_MS + 1_000), Some(1));
    }

    #[test]
    fn a_message_is_one_ascii_sms() {
        let c = AlarmChange {
            rule: "frequency_low",
            raised: true,
            at_ms: 0,
            value: 48_500,
            text: format!("frequency_low RAISED: {}", "é".repeat(300)),
        };
        let m = message(3, &c, 4);
        assert!(m.len() <= TEXT_CHARS_MAX && m.is_ascii(), "{m}");
        assert!(m.starts_with("ghatta node 3: frequency_low RAISED"));
    }

    #[test]
    fn numbers_must_be_international() {
        let cfg = |to: &str| SmsConfig {
            device: "/dev/ttyUSB2".into(),
            baud: 115_200,
            to: vec![to.into()],
            per_hour_max: 6,
            per_day_max: 30,
        };
        assert!(cfg("+9779841000000").check().is_ok());
        for bad in ["9841000000", "+97798410000001234", "+977 984"] {
            assert!(
                cfg(bad).check().unwrap_err().contains("international"),
                "{bad}"
            );
        }
    }
}
