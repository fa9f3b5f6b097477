//! What crosses a wire or a disk between ghatta's programs, and nothing else: the board's node,
//! the simulator and the central data center all speak it, and it imports none of them.
//!
//! - [`chunked`]: HTTP/1.1 chunked bodies decoded, bounded and without panics (the admin
//!   client's and the tests' plain HTTP reads);
//! - [`codec`]: bincode 2 with a size limit, for every encoded value;
//! - [`frame`]: the frame format on every link (addresses, length, CRC-32);
//! - [`html`]: the page frame and escaping of the board's and the central's pages;
//! - [`keys`]: X25519 key pairs and their files (`ghatta keygen`);
//! - [`outbox`]: the records a grid commits for the outside world and the WAN streams that
//!   carry them;
//! - [`token`]: bearer-token files (the board's admin token, the central's HTTP token);
//! - [`wan`]: the WAN protocol between a grid's uploader and the central, and its encrypted
//!   channel (`wan::channel`).
#![forbid(unsafe_code)]

pub mod chunked;
pub mod codec;
pub mod frame;
pub mod html;
pub mod keys;
pub mod outbox;
pub mod token;
pub mod wan;
