//! The replay board: recorded rows come back in order, meters follow the grid's clock, and a
//! malformed line is reported with its file and line number.

use std::io::Write;

use ghatta_hal::{
    AnalogChannel, AnalogInputs, EnergyMeters, ErrorKind, GridMeter, RelayLine, Relays, ReplayBoard,
};

const GRID: &str = "\
# recorded at the plant, 1 s rows
t_ms,frequency_mhz,voltage_dv,generation_w,ballast_w,ballast_capacity_w,feeder1_w,feeder2_w,feeder2_closed,analog0_mv
0,50010,2301,20000,9000,25000,6000,5000,1,1800

1000,49950,2298,20000,8000,25000,6500,5500,1,1805
2000,49800,2290,20000,13500,25000,6500,0,0,1810
";

const METERS: &str = "\
t_ms,customer,total_wh,voltage_dv,current_ma,power_w,frequency_mhz
0,7,1000,2300,400,92,50000
1500,7,1001,2299,410,94,49900
0,8,55,2300,0,0,50000
";

fn board() -> ReplayBoard {
    ReplayBoard::from_text(GRID, "grid.csv", Some((METERS, "meters.csv"))).expect("valid")
}

#[tokio::test]
async fn rows_come_back_in_order_then_end() {
    let mut b = board();
    let g = b.read_grid().await.expect("row 1");
    assert_eq!(g.frequency_mhz, 50_010);
    assert_eq!(g.feeders.len(), 2);
    // 6,000 W at 230.1 V = 26,075 mA (derived, no current column).
    assert_eq!(g.feeders[0].current_ma, 26_075);
    assert_eq!(b.read_analog(AnalogChannel(0)).await, Ok(1_800));
    b.read_grid().await.expect("row 2");
    let g = b.read_grid().await.expect("row 3");
    assert!(g.feeders[0].closed && !g.feeders[1].closed);
    assert_eq!(b.remaining(), 0);
    let e = b.read_grid().await.expect_err("end");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.detail.contains("end of the recording"), "{e}");
    b.seek(1_000);
    assert_eq!(b.read_grid().await.map(|g| g.frequency_mhz), Ok(49_950));
}

#[tokio::test]
async fn meters_follow_the_grid_clock() {
    let mut b = board();
    assert_eq!(b.customers(), vec![7, 8]);
    b.read_grid().await.expect("t=0");
    assert_eq!(b.read_energy(7).await.map(|m| m.total_wh), Ok(1_000));
    b.read_grid().await.expect("t=1000");
    assert_eq!(b.read_energy(7).await.map(|m| m.total_wh), Ok(1_000));
    b.read_grid().await.expect("t=2000");
    assert_eq!(b.read_energy(7).await.map(|m| m.power_w), Ok(94));
    assert_eq!(b.read_energy(8).await.map(|m| m.total_wh), Ok(55));
    assert_eq!(
        b.read_energy(9).await.map_err(|e| e.kind),
        Err(ErrorKind::NotFound)
    );
    assert_eq!(
        b.relay_lines(),
        vec![
            RelayLine::Feeder(1),
            RelayLine::Feeder(2),
            RelayLine::Customer(7),
            RelayLine::Customer(8)
        ]
    );
    b.set_relay(RelayLine::Customer(7), false)
        .expect("remembered");
    assert_eq!(b.relay_state(RelayLine::Customer(7)), Ok(false));
}

/// Each case: a line replaced in the grid recording, the line number and what must be named.
#[test]
fn malformed_lines_name_file_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "0,50010,2301,20000,9000,25000,6000,5000,1,1800",
            "0,50O10,2301,20000,9000,25000,6000,5000,1,1800",
            "grid.csv:3: column `frequency_mhz`",
        ),
        (
            "0,50010,2301,20000,9000,25000,6000,5000,1,1800",
            "0,50010,2301,20000,9000,25000,6000,5000,1",
            "grid.csv:3: 9 fields",
        ),
        (
            "2000,49800,2290,20000,13500,25000,6500,0,0,1810",
            "2000,49800,2290,20000,13500,25000,6500,0,2,1810",
            "grid.csv:6: column `feeder2_closed`",
        ),
        ("2000,49800", "500,49800", "grid.csv:6: t_ms 500 goes back"),
        (
            "2000,49800,2290,20000,13500,25000,6500,0,0,1810",
            "2000,49800,2290,20000,13500,25000,6500,-5,0,1810",
            "grid.csv:6: column `feeder2_w`",
        ),
        (
            "feeder2_closed",
            "feeder2_open",
            "grid.csv:2: unknown column `feeder2_open`",
        ),
        (
            "ballast_capacity_w,",
            "",
            "grid.csv:2: the header lacks column `ballast_capacity_w`",
        ),
        (
            "feeder1_w,feeder2_w",
            "feeder1_w,feeder1_w",
            "grid.csv:2: column `feeder1_w` appears twice",
        ),
        (
            "feeder2_w,",
            "feeder3_w,",
            "feeder 2 has a current or closed column",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(GRID.contains(from), "case {from:?} no longer matches");
        let text = GRID.replacen(from, to, 1);
        let e = ReplayBoard::from_text(&text, "grid.csv", None).expect_err(needle);
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
    }
    let bad_meter = METERS.replacen("1500,7,1001", "1500,7,10x1", 1);
    let e = ReplayBoard::from_text(GRID, "grid.csv", Some((&bad_meter, "meters.csv")))
        .expect_err("bad meter line");
    assert!(
        e.to_string().contains("meters.csv:3: column `total_wh`"),
        "{e}"
    );
    let e = ReplayBoard::from_text("", "empty.csv", None).expect_err("empty");
    assert!(e.to_string().contains("empty.csv:1"), "{e}");
}

#[tokio::test]
async fn opens_recordings_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grid = dir.path().join("grid.csv");
    let meters = dir.path().join("meters.csv");
    std::fs::File::create(&grid)
        .and_then(|mut f| f.write_all(GRID.as_bytes()))
        .expect("write grid");
    std::fs::write(&meters, METERS).expect("write meters");
    let mut b = ReplayBoard::open(&grid, Some(&meters)).expect("open");
    assert_eq!(b.read_grid().await.map(|g| g.voltage_dv), Ok(2_301));

    std::fs::write(&grid, GRID.replacen("2290", "2x90", 1)).expect("write");
    let e = ReplayBoard::open(&grid, None).expect_err("malformed");
    let path_line = format!("{}:6", grid.display());
    assert!(e.to_string().contains(&path_line), "{e}");

    let missing = dir.path().join("nope.csv");
    let e = ReplayBoard::open(&missing, None).expect_err("missing");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.to_string().contains("nope.csv"));
}
