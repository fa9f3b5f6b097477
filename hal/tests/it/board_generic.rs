//! The field loop's view: one generic function over `B: Board` runs on every backend, and
//! its future is `Send`, so it can be spawned on a multi-threaded runtime.

use ghatta_hal::{
    Board, ErrorKind, HalError, LinuxBoard, RelayLine, ReplayBoard, SimBoard, SimBoardState,
};

/// A miniature field loop: sample, read every meter and analog channel, shed feeder 1 below
/// 49.0 Hz (the first UFLS stage). Returns how many meters were read.
async fn field_pass<B: Board>(board: &mut B) -> Result<usize, HalError> {
    let sample = board.read_grid().await?;
    let mut read = 0;
    for customer in board.customers() {
        board.read_energy(customer).await?;
        read += 1;
    }
    for info in board.analog_channels() {
        board.read_analog(info.channel).await?;
    }
    if sample.frequency_mhz < 49_000 && board.relay_lines().contains(&RelayLine::Feeder(1)) {
        board.set_relay(RelayLine::Feeder(1), false)?;
    }
    Ok(read)
}

fn assert_board<B: Board + 'static>() {}

#[test]
fn every_backend_is_a_board() {
    assert_board::<LinuxBoard>();
    assert_board::<SimBoard>();
    assert_board::<ReplayBoard>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_loop_spawns_on_sim_and_sheds_on_low_frequency() {
    let board = SimBoard::new(SimBoardState::demo(12, 3));
    board.with_state(|s| s.frequency_mhz = 48_900);
    let mut spawned = board.clone();
    let read = tokio::spawn(async move { field_pass(&mut spawned).await })
        .await
        .expect("task ran")
        .expect("pass ok");
    assert_eq!(read, 12);
    assert!(!board.lock().is_closed(RelayLine::Feeder(1)));
}

#[tokio::test]
async fn generic_loop_runs_on_replay_and_reports_the_end() {
    let grid = "t_ms,frequency_mhz,voltage_dv,generation_w,ballast_w,ballast_capacity_w,feeder1_w\n\
                0,50000,2300,1000,500,1000,500\n";
    let mut board = ReplayBoard::from_text(grid, "g.csv", None).expect("valid");
    assert_eq!(field_pass(&mut board).await, Ok(0));
    let e = field_pass(&mut board).await.expect_err("end of recording");
    assert_eq!(e.kind, ErrorKind::NotFound);
}
