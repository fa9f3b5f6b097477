//! The Linux board's configuration: parsing, defaults, validation messages naming the key,
//! and missing devices named by path and key.

use std::path::PathBuf;

use ghatta_hal::ads1115::Ads1115Input;
use ghatta_hal::linux::config::{AnalogConfig, ModbusConfig, RelayLineConfig};
use ghatta_hal::{ErrorKind, LinuxBoard, LinuxBoardConfig, RelayLine};

const EXAMPLE: &str = r#"
[relays]
gpiochip = "/dev/gpiochip0"
[[relays.lines]]
relay = "feeder:1"
line = 17
active_low = true
[[relays.lines]]
relay = "ballast:0"
line = 27
[[relays.lines]]
relay = "customer:42"
line = 3
gpiochip = "/dev/gpiochip2"
start_closed = false

[analog]
i2c_bus = "/dev/i2c-1"
address = 0x49
[[analog.channels]]
channel = 0
name = "water_level"
input = "ain0"
[[analog.channels]]
channel = 1
name = "penstock_pressure"
input = "ain2-ain3"
full_scale_mv = 2048
data_rate_sps = 8

[modbus]
port = "/dev/ttyUSB0"
[[modbus.meters]]
customer = 42
address = 10

[grid]
generator_address = 1
ballast_capacity_w = 30000
feeders = [{ feeder = 1, address = 2 }]
"#;

#[test]
fn example_parses_with_defaults() {
    let c = LinuxBoardConfig::from_toml_str(EXAMPLE, "board.toml").expect("example is valid");
    assert_eq!(c.relays.lines.len(), 3);
    let feeder = &c.relays.lines[0];
    assert_eq!(feeder.relay, RelayLine::Feeder(1));
    assert!(feeder.active_low);
    assert!(feeder.start_closed(), "feeders start closed by default");
    assert!(
        !c.relays.lines[1].start_closed(),
        "ballast starts open by default"
    );
    assert!(!c.relays.lines[2].start_closed());
    assert_eq!(
        c.relays.lines[2].gpiochip,
        Some(PathBuf::from("/dev/gpiochip2"))
    );
    let analog = c.analog.as_ref().expect("analog section");
    assert_eq!(analog.address, 0x49);
    assert_eq!(analog.channels[0].full_scale_mv, 4_096);
    assert_eq!(analog.channels[0].data_rate_sps, 128);
    assert_eq!(analog.channels[1].input, Ads1115Input::Ain2Ain3);
    let bus = c.modbus.as_ref().expect("modbus section");
    assert_eq!(bus.baud, 9_600, "PZEM-004T default");
    assert_eq!(bus.response_timeout_ms, 200);
    assert_eq!(bus.retries, 2);
    assert_eq!(c.grid.as_ref().map(|g| g.ballast_capacity_w), Some(30_000));
}

#[test]
fn empty_config_is_an_empty_board() {
    let c = LinuxBoardConfig::from_toml_str("", "empty.toml").expect("empty is valid");
    assert_eq!(c, LinuxBoardConfig::default());
    assert_eq!(c.relays.gpiochip, PathBuf::from("/dev/gpiochip0"));
}

/// Each case: a change to the example, and what the error must name.
#[test]
fn invalid_configs_name_the_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "line = 27",
            "line = 17",
            &["relays.lines[1].line", "line 17"],
        ),
        (
            "relay = \"ballast:0\"",
            "relay = \"feeder:1\"",
            &["relays.lines[1].relay", "feeder:1"],
        ),
        (
            "relay = \"ballast:0\"",
            "relay = \"pump:0\"",
            &["pump:0", "board.toml"],
        ),
        (
            "address = 0x49",
            "address = 0x50",
            &["analog.address", "0x50"],
        ),
        (
            "full_scale_mv = 2048",
            "full_scale_mv = 2000",
            &["analog.channels[1]", "2000"],
        ),
        (
            "data_rate_sps = 8",
            "data_rate_sps = 9",
            &["analog.channels[1]", "9 samples/s"],
        ),
        ("input = \"ain0\"", "input = \"ain4\"", &["ain4"]),
        (
            "customer = 42\naddress = 10",
            "customer = 42\naddress = 2",
            &["grid.feeders[0].address", "modbus.meters[0].address"],
        ),
        (
            "customer = 42\naddress = 10",
            "customer = 42\naddress = 0",
            &["modbus.meters[0].address", "1-247"],
        ),
        (
            "port = \"/dev/ttyUSB0\"",
            "port = \"/dev/ttyUSB0\"\nbaud = 300",
            &["modbus.baud", "300"],
        ),
        (
            "port = \"/dev/ttyUSB0\"",
            "port = \"/dev/ttyUSB0\"\nretries = 9",
            &["modbus.retries"],
        ),
        (
            "port = \"/dev/ttyUSB0\"",
            "port = \"/dev/ttyUSB0\"\nresponse_timeout_ms = 5",
            &["modbus.response_timeout_ms"],
        ),
        (
            "port = \"/dev/ttyUSB0\"",
            "port = \"/dev/ttyUSB0\"\nparity = \"even\"",
            &["parity", "board.toml"],
        ),
        (
            "name = \"penstock_pressure\"",
            "name = \"water_level\"",
            &["analog.channels[1].name"],
        ),
    ];
    for (from, to, needles) in cases {
        assert!(
            EXAMPLE.contains(from),
            "case {from:?} no longer matches the example"
        );
        let text = EXAMPLE.replacen(from, to, 1);
        let e = LinuxBoardConfig::from_toml_str(&text, "board.toml")
            .expect_err(&format!("{from:?} -> {to:?} must be rejected"));
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        let shown = e.to_string();
        for needle in *needles {
            assert!(shown.contains(needle), "{to:?}: `{shown}` lacks `{needle}`");
        }
    }
}

#[test]
fn grid_without_modbus_is_rejected() {
    let text = "[grid]\ngenerator_address = 1\nballast_capacity_w = 1000\n";
    let e = LinuxBoardConfig::from_toml_str(text, "b.toml").expect_err("no modbus");
    assert_eq!(e.device, "grid");
}

fn relay_on(chip: &str) -> LinuxBoardConfig {
    let mut c = LinuxBoardConfig::default();
    c.relays.gpiochip = PathBuf::from(chip);
    c.relays.lines.push(RelayLineConfig {
        relay: RelayLine::Feeder(1),
        line: 4,
        active_low: false,
        gpiochip: None,
        start_closed: None,
    });
    c
}

#[tokio::test]
async fn missing_gpiochip_names_path_key_and_command() {
    let e = match LinuxBoard::open(&relay_on("/dev/gpiochip99")) {
        Ok(_) => panic!("gpiochip99 opened"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    let shown = e.to_string();
    assert!(shown.contains("relays.gpiochip"), "{shown}");
    assert!(shown.contains("/dev/gpiochip99 does not exist"), "{shown}");
    assert!(shown.contains("gpiodetect"), "{shown}");
}

#[tokio::test]
async fn missing_per_line_gpiochip_names_the_line_key() {
    let mut c = relay_on("/dev/gpiochip0");
    c.relays.lines[0].gpiochip = Some(PathBuf::from("/dev/gpiochip98"));
    let Err(e) = LinuxBoard::open(&c) else {
        panic!("gpiochip98 opened")
    };
    assert!(e.to_string().contains("relays.lines[0].gpiochip"), "{e}");
    assert!(e.to_string().contains("/dev/gpiochip98"), "{e}");
}

#[tokio::test]
async fn missing_i2c_bus_names_path_and_key() {
    let c = LinuxBoardConfig {
        analog: Some(AnalogConfig {
            i2c_bus: PathBuf::from("/dev/i2c-99"),
            address: 0x48,
            channels: Vec::new(),
        }),
        ..LinuxBoardConfig::default()
    };
    let Err(e) = LinuxBoard::open(&c) else {
        panic!("i2c-99 opened")
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    let shown = e.to_string();
    assert!(
        shown.contains("analog.i2c_bus") && shown.contains("/dev/i2c-99"),
        "{shown}"
    );
    assert!(shown.contains("i2cdetect"), "{shown}");
}

#[tokio::test]
async fn missing_serial_port_names_path_and_key() {
    let c = LinuxBoardConfig {
        modbus: Some(ModbusConfig {
            port: PathBuf::from("/dev/ttyUSB99"),
            baud: 9_600,
            response_timeout_ms: 200,
            retries: 2,
            meters: Vec::new(),
        }),
        ..LinuxBoardConfig::default()
    };
    let Err(e) = LinuxBoard::open(&c) else {
        panic!("ttyUSB99 opened")
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
    let shown = e.to_string();
    assert!(
        shown.contains("modbus.port") && shown.contains("/dev/ttyUSB99"),
        "{shown}"
    );
}

#[test]
fn opening_a_serial_port_outside_a_runtime_is_an_error_not_a_panic() {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    let c = LinuxBoardConfig {
        modbus: Some(ModbusConfig {
            port: path,
            baud: 9_600,
            response_timeout_ms: 200,
            retries: 2,
            meters: Vec::new(),
        }),
        ..LinuxBoardConfig::default()
    };
    let Err(e) = LinuxBoard::open(&c) else {
        panic!("opened without a runtime")
    };
    assert!(e.detail.contains("tokio runtime"), "{e}");
}
