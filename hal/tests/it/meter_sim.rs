//! A pseudo-terminal pair and a PZEM-004T v3 simulator on its master side, with scripted
//! faults: what a USB-serial adapter with meters behind it looks like to the driver; it can be
//! unplugged (its side closed) and a new one linked under the same path, as udev re-points
//! `/dev/serial/by-id/...` when an adapter is plugged back.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ghatta_hal::pzem::{self, PzemReading};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// How the simulator answers the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The meter's registers, correctly framed.
    Good,
    /// A correct frame with one byte flipped after the CRC was computed.
    BadCrc,
    /// No answer at all.
    Silent,
    /// These bytes, then the good frame.
    GarbageThenGood(Vec<u8>),
    /// An exception reply with this code.
    Exception(u8),
    /// The good frame one byte at a time, 1 ms apart (a USB adapter's bursts), all within
    /// the tests' reply timeout.
    Trickle,
    /// These registers instead of the meter's, correctly framed.
    Registers([u16; 10]),
    /// A well-formed reply from another address, and nothing from the one asked.
    OtherAddress(u8),
}

/// The pty's slave path (give it to tokio-serial) and the simulator's shared script.
pub struct MeterSim {
    pub path: PathBuf,
    pub script: Arc<Mutex<VecDeque<Reply>>>,
    /// Addresses of the requests received, in order.
    pub requests: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _slave: OwnedFd,
}

/// How often the simulator thread looks up from its wait to see whether it was unplugged.
const STOP_POLL_MS: u8 = 20;

impl Drop for MeterSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Points `link` at `sim`'s pty (replacing whatever it pointed at in one rename), so a board
/// configured with `link` opens this simulator.
pub fn link(sim: &MeterSim, link: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&sim.path, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename the symlink into place");
}

impl MeterSim {
    /// Closes the adapter's side of the pty, as pulling the USB plug does: the driver's next
    /// read or write fails (EIO, or a hang-up). Returns once it is closed.
    pub fn unplug(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("meter simulator thread");
        }
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().expect("script lock").push_back(reply);
    }

    pub fn requests(&self) -> Vec<u8> {
        self.requests.lock().expect("requests lock").clone()
    }
}

/// CRC-16/MODBUS written out again here, so the simulator does not trust the code it tests.
fn crc(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

fn framed(mut body: Vec<u8>) -> Vec<u8> {
    let c = crc(&body);
    body.extend_from_slice(&c);
    body
}

fn reply_frame(address: u8, regs: &[u16; 10]) -> Vec<u8> {
    let mut body = vec![address, 0x04, 20];
    for r in regs {
        body.extend_from_slice(&r.to_be_bytes());
    }
    framed(body)
}

fn raw(fd: &OwnedFd) {
    let mut t = tcgetattr(fd).expect("tcgetattr");
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t).expect("tcsetattr");
}

/// Opens a pty pair in raw mode and starts a simulator answering for `meters`.
/// The simulator thread ends when the driver closes the slave (reads then fail).
pub fn start(meters: BTreeMap<u8, PzemReading>) -> MeterSim {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    raw(&pty.master);
    raw(&pty.slave);
    let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut master = File::from(pty.master);
    let (script2, requests2) = (Arc::clone(&script), Arc::clone(&requests));
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            if stop2.load(Ordering::Relaxed) {
                return; // drops `master`: unplugged
            }
            let mut fds = [nix::poll::PollFd::new(
                master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, STOP_POLL_MS) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let n = match master.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 8 {
                let req = &buf[..8];
                if crc(&req[..6]) != [req[6], req[7]] || req[1] != 0x04 {
                    buf.remove(0);
                    continue;
                }
                let address = req[0];
                buf.drain(..8);
                requests2.lock().expect("requests lock").push(address);
                let Some(reading) = meters.get(&address) else {
                    continue; // no meter there: silence, as on a real bus
                };
                let reply = script2
                    .lock()
                    .expect("script lock")
                    .pop_front()
                    .unwrap_or(Reply::Good);
                let good = reply_frame(address, &pzem::encode(reading));
                let out: Vec<u8> = match reply {
                    Reply::Good => good,
                    Reply::BadCrc => {
                        let mut f = good;
                        f[6] ^= 0x10;
                        f
                    }
                    Reply::Silent => Vec::new(),
                    Reply::GarbageThenGood(mut g) => {
                        g.extend_from_slice(&good);
                        g
                    }
                    Reply::Exception(code) => framed(vec![address, 0x84, code]),
                    Reply::Trickle => {
                        for b in good {
                            if master.write_all(&[b]).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Vec::new()
                    }
                    Reply::Registers(regs) => reply_frame(address, &regs),
                    Reply::OtherAddress(other) => reply_frame(other, &pzem::encode(reading)),
                };
                if !out.is_empty() && master.write_all(&out).is_err() {
                    return;
                }
            }
        }
    });
    MeterSim {
        path,
        script,
        requests,
        stop,
        thread: Some(thread),
        _slave: pty.slave,
    }
}
