//! The one error type every backend returns: a shared `ErrorKind`, the device, and advice.
//!
//! embedded-hal gives each implementation its own error type that maps onto a shared
//! `ErrorKind`; ghatta's callers are generic over a whole board, so the backends map their
//! errors (io, gpio-cdev, i2cdev, Modbus) into one `HalError` here instead, keeping the kind
//! for decisions and the text for people.

use std::fmt;

/// What kind of failure happened, for callers that decide (retry, alarm, mark stale).
///
/// Non-exhaustive: a backend may need a new kind, and callers must keep a fallback arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The device did not answer in time (no reply, or a partial one).
    Timeout,
    /// A reply arrived but its checksum was wrong (noise on the line).
    Crc,
    /// The operating system refused or failed the I/O.
    Io,
    /// A device file, or a meter/relay/channel the caller named, does not exist.
    NotFound,
    /// A device file exists but this process may not open it.
    PermissionDenied,
    /// The device answered, but not with what was asked (wrong length, Modbus exception).
    InvalidResponse,
    /// A value arrived intact but is outside what the device can measure.
    OutOfRange,
    /// The device or line is in use, or said it is busy.
    Busy,
    /// A configuration or recording given to the hal is malformed.
    InvalidInput,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// A short lower-case description, used in `HalError`'s Display.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timed out",
            ErrorKind::Crc => "checksum error",
            ErrorKind::Io => "I/O error",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidResponse => "invalid response",
            ErrorKind::OutOfRange => "value out of range",
            ErrorKind::Busy => "busy",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Other => "error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed hardware operation: what kind, on which device, and what to do about it.
///
/// `device` names the thing a person would go and look at ("modbus /dev/ttyUSB0 address 3
/// (customer 17)", "relays.gpiochip /dev/gpiochip9"); `detail` says what happened and, where
/// the hal can know, what to check. Display prints `device: kind: detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalError {
    /// What kind of failure, for decisions.
    pub kind: ErrorKind,
    /// The device, file or configuration key concerned.
    pub device: String,
    /// What happened and what to do.
    pub detail: String,
}

impl HalError {
    /// An error of `kind` on `device`; `detail` should say what to do.
    pub fn new(kind: ErrorKind, device: impl Into<String>, detail: impl Into<String>) -> Self {
        HalError {
            kind,
            device: device.into(),
            detail: detail.into(),
        }
    }

    /// The kind, in embedded-hal's spelling.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Maps an OS error from opening or using `device` into a `HalError`, adding `advice`
    /// (what to check) to the detail.
    pub fn from_io(err: &std::io::Error, device: impl Into<String>, advice: &str) -> Self {
        let kind = io_kind(err);
        let detail = if advice.is_empty() {
            err.to_string()
        } else {
            format!("{err}; {advice}")
        };
        HalError::new(kind, device, detail)
    }
}

/// Maps a `std::io::ErrorKind` onto the hal's kinds.
pub(crate) fn io_kind(err: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match err.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::PermissionDenied => ErrorKind::PermissionDenied,
        Io::TimedOut | Io::WouldBlock => ErrorKind::Timeout,
        Io::ResourceBusy => ErrorKind::Busy,
        Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidInput,
        _ => ErrorKind::Io,
    }
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.device, self.kind, self.detail)
    }
}

impl std::error::Error for HalError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_device_kind_and_detail() {
        let e = HalError::new(
            ErrorKind::Timeout,
            "modbus /dev/ttyUSB0 address 3",
            "no answer in 200 ms; check wiring",
        );
        assert_eq!(
            e.to_string(),
            "modbus /dev/ttyUSB0 address 3: timed out: no answer in 200 ms; check wiring"
        );
    }

    #[test]
    fn io_not_found_maps_to_not_found() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = HalError::from_io(&io, "/dev/x", "check it");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.detail.ends_with("check it"));
    }
}
