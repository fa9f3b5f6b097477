//! The SMS notifier against a GSM modem emulator on a pseudo-terminal: the node opens the
//! pty's slave as it would open /dev/ttyUSB2 and speaks text-mode AT commands; the emulator
//! answers like a modem and records each message. One SMS per alarm raise and clear, to every
//! number, within the budget; a modem that refuses (no credit) is an error naming the SIM,
//! and the sender runs on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta::clock::Clock;
use ghatta::notify::sms::{self, SmsConfig};
use ghatta::notify::{AlarmChange, Notifier, SmsNotifier};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// A message the emulator accepted: (number, text).
type Sent = Arc<Mutex<Vec<(String, String)>>>;

/// Messages waiting in the modem's store: (index, from, text).
type Inbox = Arc<Mutex<Vec<(u32, String, String)>>>;

struct Modem {
    path: String,
    sent: Sent,
    stop: Arc<AtomicBool>,
}

impl Drop for Modem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A modem on a pty. `refuse`: answer every send with `+CMS ERROR: 38` (network out of
/// order), as a SIM without credit does.
fn modem(refuse: bool) -> Modem {
    modem_with_inbox(refuse, Inbox::default())
}

/// [`modem`] with messages waiting to be read (`AT+CMGL`) and deleted (`AT+CMGD`).
fn modem_with_inbox(refuse: bool, inbox: Inbox) -> Modem {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    for fd in [&pty.master, &pty.slave] {
        let mut t = tcgetattr(fd).expect("tcgetattr");
        cfmakeraw(&mut t);
        tcsetattr(fd, SetArg::TCSANOW, &t).expect("tcsetattr");
    }
    let path = nix::unistd::ttyname(&pty.slave)
        .expect("ttyname")
        .display()
        .to_string();
    // The slave stays open here until the node has opened it, so the master never sees a
    // hang-up in between.
    let slave = pty.slave;
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent2, stop2) = (sent.clone(), stop.clone());
    let mut master = File::from(pty.master);
    std::thread::spawn(move || {
        let _slave = slave;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        // The number of the AT+CMGS in progress, while the modem takes the text.
        let mut to: Option<String> = None;
        let mut msg_ref = 0;
        while !stop2.load(Ordering::Relaxed) {
            let mut fds = [nix::poll::PollFd::new(
                master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, 50u16) {
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
            loop {
                if let Some(number) = to.clone() {
                    let Some(end) = buf.iter().position(|b| *b == 0x1A) else {
                        break;
                    };
                    let text = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..=end);
                    to = None;
                    if refuse {
                        let _ = master.write_all(b"\r\n+CMS ERROR: 38\r\n");
                    } else {
                        msg_ref += 1;
                        sent2.lock().unwrap().push((number, text));
                        let _ = write!(master, "\r\n+CMGS: {msg_ref}\r\n\r\nOK\r\n");
                    }
                    continue;
                }
                let Some(end) = buf.iter().position(|b| *b == b'\r') else {
                    break;
                };
                let line = String::from_utf8_lossy(&buf[..end]).to_string();
                buf.drain(..=end);
                if line == "AT+CMGL=\"REC UNREAD\"" {
                    let mut answer = String::new();
                    for (i, from, text) in inbox.lock().unwrap().iter() {
                        answer.push_str(&format!(
                            "\r\n+CMGL: {i},\"REC UNREAD\",\"{from}\",,\"26/12/05,10:00:00+23\"\r\n{text}"
                        ));
                    }
                    answer.push_str("\r\n\r\nOK\r\n");
                    let _ = master.write_all(answer.as_bytes());
                    continue;
                }
                if let Some(i) = line
                    .strip_prefix("AT+CMGD=")
                    .and_then(|i| i.parse::<u32>().ok())
                {
                    inbox.lock().unwrap().retain(|m| m.0 != i);
                    let _ = master.write_all(b"\r\nOK\r\n");
                    continue;
                }
                let reply: &[u8] = if line == "AT+CMGF=1" || line == "AT" {
                    b"\r\nOK\r\n"
                } else if let Some(n) = line
                    .strip_prefix("AT+CMGS=\"")
                    .and_then(|r| r.strip_suffix('"'))
                {
                    to = Some(n.to_string());
                    b"\r\n> "
                } else {
                    b"\r\nERROR\r\n"
                };
                let _ = master.write_all(reply);
            }
        }
    });
    Modem { path, sent, stop }
}

/// A clock the test sets.
#[derive(Default)]
struct TestClock(std::sync::atomic::AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn mono_ms(&self) -> u64 {
        self.now_ms()
    }
}

fn change(rule: &'static str, raised: bool) -> AlarmChange {
    AlarmChange {
        rule,
        raised,
        at_ms: 0,
        value: 48_500,
        text: format!("{rule} {}", if raised { "RAISED" } else { "cleared" }),
    }
}

fn cfg(path: &str, per_hour: u32) -> SmsConfig {
    SmsConfig {
        device: path.into(),
        baud: 115_200,
        to: vec!["+9779841000001".into(), "+9779841000002".into()],
        per_hour_max: per_hour,
        per_day_max: 30,
    }
}

async fn wait_for(sent: &Sent, n: usize) {
    for _ in 0..200 {
        if sent.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} messages of {n}", sent.lock().unwrap().len());
}

#[tokio::test]
async fn one_sms_per_raise_and_clear_to_every_number_within_the_budget() {
    let m = modem(false);
    let c = cfg(&m.path, 2);
    let port = sms::open(&c).expect("open the pty as the modem");
    let clock = Arc::new(TestClock::default());
    let (n, _task) = SmsNotifier::spawn(c, port, 7, clock.clone(), None);
    n.notify(&change("frequency_low", true));
    n.notify(&change("frequency_low", false));
    wait_for(&m.sent, 4).await;
    {
        let sent = m.sent.lock().unwrap();
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert_eq!(sent[0].0, "+9779841000001");
        assert_eq!(sent[1].0, "+9779841000002");
        assert_eq!(sent[0].1, "ghatta node 7: frequency_low RAISED");
        assert_eq!(sent[2].1, "ghatta node 7: frequency_low cleared");
    }
    // A flapping alarm past the hour's budget of 2: held back, then counted.
    n.notify(&change("shedding", true));
    n.notify(&change("shedding", false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m.sent.lock().unwrap().len(),
        4,
        "the hour's budget is spent"
    );
    clock.0.store(3_600_000, Ordering::Relaxed);
    n.notify(&change("shedding", true));
    wait_for(&m.sent, 6).await;
    let sent = m.sent.lock().unwrap();
    assert_eq!(
        sent[4].1,
        "ghatta node 7: shedding RAISED (+2 changes not sent: see the cockpit)"
    );
}

#[tokio::test]
async fn a_modem_that_refuses_is_an_error_naming_the_sim_and_the_sender_runs_on() {
    let m = modem(true);
    let c = cfg(&m.path, 10);
    let mut port = sms::open(&c).expect("open");
    let e = sms::send(&mut port, &c.device, "+9779841000001", "x")
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("+CMS ERROR: 38") && e.to_string().contains("SIM"),
        "{e}"
    );
    let (n, task) = SmsNotifier::spawn(c, port, 7, Arc::new(TestClock::default()), None);
    n.notify(&change("voltage_low", true));
    n.notify(&change("voltage_low", false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the sender runs on");
    assert!(m.sent.lock().unwrap().is_empty());
}

struct OneCustomer;

impl ghatta::notify::BalanceLookup for OneCustomer {
    fn balance(&self, customer: u32) -> Option<String> {
        (customer == 42).then(|| "credit NPR 12.50, supply on".to_string())
    }
}

#[tokio::test]
async fn an_operators_bal_query_is_answered_and_a_strangers_is_deleted_unanswered() {
    let inbox: Inbox = Arc::new(Mutex::new(vec![
        (3, "+9779841000002".into(), "bal 42".into()),
        (4, "+9779800000000".into(), "BAL 42".into()),
        (5, "+9779841000001".into(), "BAL 7".into()),
    ]));
    let m = modem_with_inbox(false, inbox.clone());
    let c = cfg(&m.path, 10);
    let port = sms::open(&c).expect("open");
    let (_n, _task) = SmsNotifier::spawn(
        c,
        port,
        7,
        Arc::new(TestClock::default()),
        Some(Arc::new(OneCustomer)),
    );
    wait_for(&m.sent, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = m.sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![
            (
                "+9779841000002".to_string(),
                "ghatta node 7: customer 42: credit NPR 12.50, supply on".to_string()
            ),
            (
                "+9779841000001".to_string(),
                "ghatta node 7: no customer 7".to_string()
            ),
        ],
        "the stranger (+9779800000000) got nothing"
    );
    assert!(
        inbox.lock().unwrap().is_empty(),
        "every message was deleted"
    );
}

#[tokio::test]
async fn a_store_filled_by_strangers_still_lets_an_operators_query_through() {
    // 40 messages of 150 characters: a listing of ~9 KiB in one answer.
    let mut waiting: Vec<(u32, String, String)> = (1..=40)
        .map(|i| (i, "+9779800000000".to_string(), "x".repeat(150)))
        .collect();
    waiting.push((41, "+9779841000001".into(), "BAL 42".into()));
    let inbox: Inbox = Arc::new(Mutex::new(waiting));
    let m = modem_with_inbox(false, inbox.clone());
    let c = cfg(&m.path, 10);
    let port = sms::open(&c).expect("open");
    let (_n, _task) = SmsNotifier::spawn(
        c,
        port,
        7,
        Arc::new(TestClock::default()),
        Some(Arc::new(OneCustomer)),
    );
    wait_for(&m.sent, 1).await;
    assert_eq!(
        m.sent.lock().unwrap()[0].1,
        "ghatta node 7: customer 42: credit NPR 12.50, supply on"
    );
    for _ in 0..200 {
        if inbox.lock().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} messages left in the store", inbox.lock().unwrap().len());
}
