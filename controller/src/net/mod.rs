//! Links between nodes: transports (TCP; the simulator and serial radios plug in through
//! [`transport::Transport`]), sealing (`secure`) and the link profiles. Frames are
//! `ghatta_proto::frame`; the messages inside them and request/response are `crate::rpc`,
//! which sits above this module and Raft's.

pub mod profile;
pub mod radio;
pub mod secure;
pub mod tcp;
pub mod transport;

pub use self::profile::LinkProfile;
