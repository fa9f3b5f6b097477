//! Links between nodes: frames, the wire messages inside them, transports (TCP; the simulator
//! and serial radios plug in through [`transport::Transport`]) and request/response RPC.

pub mod frame;
pub mod radio;
pub mod rpc;
pub mod secure;
pub mod tcp;
pub mod transport;
pub mod wire;
