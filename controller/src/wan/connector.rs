//! How an uploader reaches the central: a [`Connector`] opens one ordered, reliable byte
//! stream (TCP in the field, the simulator's WAN link model in tests) that the encrypted
//! channel (`ghatta_proto::wan::channel`) then runs over. The uploader never names TCP, so the same code
//! uploads through a real socket and through simulated time.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The reading half of a connection to the central.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection to the central.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// What [`Connector::connect`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<(BoxRead, BoxWrite)>> + Send + 'a>>;

/// Opens byte streams to the central.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Open one connection, both halves. Errors name what was connected to. The uploader
    /// bounds the wait (`client::CONNECT_TIMEOUT`), so an implementation may wait as long as
    /// its link does (a SYN into a dead satellite link is never answered).
    fn connect(&self) -> ConnectFuture<'_>;
    /// What this connects to, for logs and error messages ("central 10.0.0.5:7400 over TCP").
    fn describe(&self) -> String;
}

/// The field's connector: TCP to `host:port`, Nagle off (acks and batches are whole frames
/// that should leave at once).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    addr: String,
}

impl TcpConnector {
    /// A connector to the central's batch listener, host:port.
    pub fn new(addr: impl Into<String>) -> Self {
        TcpConnector { addr: addr.into() }
    }
}

impl Connector for TcpConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let sock = TcpStream::connect(&self.addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot connect to {}: {e}", self.describe()),
                )
            })?;
            sock.set_nodelay(true)?;
            let (rd, wr) = sock.into_split();
            Ok((Box::new(rd) as BoxRead, Box::new(wr) as BoxWrite))
        })
    }

    fn describe(&self) -> String {
        format!("central {} over TCP", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_connector_names_the_address_it_could_not_reach() {
        // A port just released: nothing listens there.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let c = TcpConnector::new(addr.to_string());
        let Err(e) = c.connect().await else {
            panic!("connected to a closed port")
        };
        assert!(
            e.to_string().contains(&addr.to_string()),
            "error names the address: {e}"
        );
    }
}
